"""Logs are structured and never hold an email address, token or secret."""

import json
import os
from pathlib import Path

import pytest

from cajex import log


def test_scrubber_masks_addresses_tokens_and_secrets():
    """A value that slips into a log event is masked before it is written."""
    event = log.scrub(
        None,
        None,
        {
            "event": "x",
            "note": "sent to ann@example.com with v1.u.00000000-0000-4000-8000-000000000001.x.1.y",
            "token": "anything",
        },
    )
    assert "ann@example.com" not in event["note"]
    assert event["token"] == "[redacted]"


def test_scrubber_masks_the_user_and_password_of_a_url():
    event = log.scrub(
        None,
        None,
        {"event": "x", "url": "POST http://gwuser:Passw0rdXYZ@10.1.2.3:8080/v1 done"},
    )
    assert "gwuser" not in event["url"] and "Passw0rdXYZ" not in event["url"]
    assert "http://[userinfo]@10.1.2.3:8080/v1" in event["url"]


def test_http_client_libraries_log_no_request_lines():
    """httpx and the AI clients log each request's full URL at INFO: kept at WARNING."""
    import logging

    log.configure()
    for name in ("httpx", "httpcore", "httpx2", "httpcore2", "openai", "anthropic"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name


def test_request_log_line_has_the_fields_operators_need(world, signed_in):
    """A request logs request id, workspace id, user id, route, status and duration."""
    ws = world.workspace()
    signed_in(ws.owner).get(
        f"/w/{ws.slug}/api/v1/projects", headers={"X-Request-Id": "req-" + ws.slug}
    )
    path = Path(os.environ["CAJEX_LOG_FILE"])
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.startswith("{")]
    request = [
        x
        for x in lines
        if x.get("request_id") == "req-" + ws.slug and x.get("event") == "request"
    ][-1]
    assert request["workspace_id"] == str(ws.id)
    assert request["user_id"] == str(ws.owner.id)
    assert request["route"] == "/w/<slug>/api/v1/projects"
    assert request["status"] == 200
    assert {"request_id", "duration_ms", "timestamp"} <= set(request)


@pytest.mark.run_last
def test_no_log_line_of_the_whole_run_holds_an_address_token_or_secret():
    """Grep every log line the test run wrote (all processes) for forbidden values."""
    path = Path(os.environ["CAJEX_LOG_FILE"])
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    assert lines, "the run wrote no log lines at all"
    assert all(line.startswith("{") for line in lines[:100]), (
        "log lines are JSON objects"
    )
    assert log.find_leaks(lines) == []


def test_a_line_from_another_thread_between_a_line_and_its_newline_stays_apart(
    tmp_path,
):
    """print() writes a line and its newline in two calls; another thread's line
    written in between (a pool thread's warning) must not merge with it."""
    import io
    import threading

    path = tmp_path / "tee.jsonl"
    tee = log._Tee(io.StringIO(), str(path))
    tee.write(json.dumps({"from": "request"}))
    other = threading.Thread(
        target=tee.write, args=(json.dumps({"from": "pool"}) + "\n",)
    )
    other.start()
    other.join()
    tee.write("\n")
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert sorted(x["from"] for x in lines) == ["pool", "request"]


def test_an_unhandled_error_logs_the_route_not_a_token_in_the_path(app):
    """A crash on a route whose path holds a token (a sign-in or invitation
    link) is logged with the route's rule and the error's class; the token
    never reaches the log."""
    from structlog.testing import capture_logs

    token = "tok_" + "Q" * 40

    @app.get("/boom/<token>")
    def boom(token):
        raise RuntimeError("broken")

    app.config["PROPAGATE_EXCEPTIONS"] = False
    with capture_logs() as logs:
        answer = app.test_client().get(f"/boom/{token}")
    assert answer.status_code == 500
    crashed = [e for e in logs if e.get("event") == "request.crashed"]
    assert crashed and crashed[0]["route"] == "/boom/<token>"
    assert crashed[0]["error_class"] == "RuntimeError"
    assert token not in repr(logs)
