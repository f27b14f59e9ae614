"""AI over HTTP: the settings page and API, the project drafts through the
gateway against a loopback provider, and every allow beside a deny from
another workspace."""

from __future__ import annotations

import pytest

from cajex import crypto
from cajex.ai import drafts
from cajex.ai import gateway as gw
from cajex.ai.fakeprovider import FakeProvider

KEY = "sk-http-" + "y" * 24 + "TAIL"
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def settings(settings):
    """The fake provider listens on loopback: allow it, as a self-hosted model."""
    import dataclasses

    return dataclasses.replace(settings, ai_allow_private_hosts=True)


@pytest.fixture
def fake():
    with FakeProvider(api_key=KEY) as server:
        yield server


@pytest.fixture
def two(world):
    a, b = world.workspace(plan="pro"), world.workspace(plan="pro")
    return a, b


def configure(client, ws, fake, **changes):
    body = {
        "enabled": True,
        "provider": "anthropic",
        "model": "claude-test",
        "base_url": fake.url,
        "budget_tokens": 100000,
        "max_output_tokens": 100,
        "timeout_seconds": 5,
        "api_key": KEY,
        **changes,
    }
    resp = client.patch(f"/w/{ws.slug}/api/v1/ai/settings", json=body)
    assert resp.status_code == 200, resp.get_json()
    return resp


def project(world, ws, name="Payments platform"):
    with world.as_user(ws.owner, ws) as (conn, _):
        return conn.execute(
            "select id from cajex.create_project(%s, %s, %s, 'active')",
            (name, "Move card payments to the new ledger.", ["payments", "ledger"]),
        ).fetchone()["id"]


def draft(client, ws, pid, kind="summary"):
    return client.post(
        f"/w/{ws.slug}/api/v1/projects/{pid}/ai-drafts", json={"kind": kind}
    )


# -- settings ------------------------------------------------------------------


def test_admin_can_set_up_ai_and_sees_only_the_last_four(
    world, two, signed_in, fake, csrf_headers
):
    a, _ = two
    admin = world.member(a, role="admin")
    client = signed_in(admin)
    saved = configure(client, a, fake).get_json()
    assert (
        saved["settings"]["api_key_last4"] == "…TAIL"
        and saved["settings"]["api_key_set"]
    )
    assert KEY not in configure(client, a, fake).get_data(as_text=True)
    page = client.get(f"/w/{a.slug}/settings/ai")
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert "…TAIL" in body and KEY not in body and "claude-test" in body
    # The form saves too; an empty key field keeps the key.
    form = {
        "csrf_token": "test-csrf-token",
        "enabled": "on",
        "provider": "openai_compatible",
        "model": "local-llm",
        "base_url": fake.url + "/v1",
        "budget_tokens": "5000",
        "budget_period": "day",
        "max_output_tokens": "200",
        "timeout_seconds": "10",
        "task_budget_decision_record": "900",
        "api_key": "",
    }
    saved_page = client.post(f"/w/{a.slug}/settings/ai", data=form)
    assert saved_page.status_code == 200 and "Saved." in saved_page.get_data(
        as_text=True
    )
    settings = client.get(f"/w/{a.slug}/api/v1/ai/settings").get_json()["settings"]
    assert (settings["provider"], settings["model"], settings["budget_period"]) == (
        "openai_compatible",
        "local-llm",
        "day",
    )
    assert (
        settings["task_budgets"] == {"decision_record": 900} and settings["api_key_set"]
    )


def test_another_workspaces_admin_cannot_reach_or_see_ai_settings(
    world, two, signed_in, fake
):
    a, b = two
    configure(signed_in(a.owner), a, fake)
    other = signed_in(b.owner)
    for path in (
        "/settings/ai",
        "/api/v1/ai/settings",
        "/api/v1/ai/status",
        "/api/v1/ai/usage",
    ):
        assert other.get(f"/w/{a.slug}{path}").status_code == 404, path
    assert (
        other.patch(
            f"/w/{a.slug}/api/v1/ai/settings", json={"enabled": False}
        ).status_code
        == 404
    )
    own = other.get(f"/w/{b.slug}/api/v1/ai/settings").get_json()
    assert (
        own["settings"]["api_key_set"] is False
        and own["settings"]["api_key_last4"] is None
    )
    assert own["status"]["enabled"] is False
    with world.as_user(a.owner, a) as (conn, _):
        assert (
            conn.execute("select enabled from cajex.ai_settings").fetchone()["enabled"]
            is True
        )


def test_members_cannot_open_the_settings_but_read_the_status(
    world, two, signed_in, fake
):
    a, _ = two
    configure(signed_in(a.owner), a, fake)
    member = signed_in(world.member(a, role="member"))
    assert member.get(f"/w/{a.slug}/settings/ai").status_code == 403
    refused = member.patch(
        f"/w/{a.slug}/api/v1/ai/settings", json={"budget_tokens": 10**9}
    )
    assert (refused.status_code, refused.get_json()["error"]["code"]) == (
        403,
        "forbidden",
    )
    assert member.get(f"/w/{a.slug}/api/v1/ai/usage").status_code == 403
    status = member.get(f"/w/{a.slug}/api/v1/ai/status").get_json()["status"]
    assert status["enabled"] is True and "api_key" not in status


def test_bad_settings_answer_422_and_never_echo_the_key(world, two, signed_in, fake):
    a, _ = two
    client = signed_in(a.owner)
    configure(client, a, fake)
    bad = client.patch(
        f"/w/{a.slug}/api/v1/ai/settings", json={"api_key": "has space " + KEY}
    )
    assert (bad.status_code, bad.get_json()["error"]["field"]) == (422, "api_key")
    assert KEY not in bad.get_data(as_text=True)
    wrong = client.patch(f"/w/{a.slug}/api/v1/ai/settings", json={"provider": "skynet"})
    assert (wrong.status_code, wrong.get_json()["error"]["code"]) == (422, "invalid")
    unknown = client.patch(f"/w/{a.slug}/api/v1/ai/settings", json={"colour": "red"})
    assert (unknown.status_code, unknown.get_json()["error"]["code"]) == (
        400,
        "unknown_field",
    )
    form = client.post(
        f"/w/{a.slug}/settings/ai",
        data={
            "csrf_token": "test-csrf-token",
            "provider": "anthropic",
            "model": "m",
            "budget_tokens": "lots",
            "budget_period": "month",
            "max_output_tokens": "100",
            "timeout_seconds": "5",
        },
    )
    assert (
        form.status_code == 422
        and "budget tokens is a whole number" in form.get_data(as_text=True)
    )


def test_malformed_numbers_kinds_and_budgets_are_4xx_not_500(
    world, two, signed_in, fake
):
    a, _ = two
    client = signed_in(a.owner)
    configure(client, a, fake)
    # Digits that are not ASCII pass str.isdigit() but not int().
    for days in ("\u00b2", "\u0661", "9" * 5000, "0"):
        resp = client.get(f"/w/{a.slug}/api/v1/ai/usage", query_string={"days": days})
        assert (resp.status_code, resp.get_json()["error"]["code"]) == (
            400,
            "invalid_days",
        ), days
    for budget in ("\u00b2", "9" * 5000):
        form = client.post(
            f"/w/{a.slug}/settings/ai",
            data={
                "csrf_token": "test-csrf-token",
                "provider": "anthropic",
                "model": "m",
                "budget_tokens": budget,
                "budget_period": "month",
                "max_output_tokens": "100",
                "timeout_seconds": "5",
            },
        )
        assert form.status_code == 422 and "budget tokens is a whole number" in (
            form.get_data(as_text=True)
        )
    pid = project(world, a)
    for kind in ([], {}, ["summary"], 1, None):
        resp = client.post(
            f"/w/{a.slug}/api/v1/projects/{pid}/ai-drafts", json={"kind": kind}
        )
        error = resp.get_json()["error"]
        assert (resp.status_code, error["code"], error["field"]) == (
            422,
            "invalid",
            "kind",
        ), kind
    # A task budget past bigint is refused when saved, and drafts still work.
    for budget in (10**20, 10**12 + 1, -1):
        resp = client.patch(
            f"/w/{a.slug}/api/v1/ai/settings",
            json={"task_budgets": {"project_summary": budget}},
        )
        error = resp.get_json()["error"]
        assert (resp.status_code, error["code"], error["field"]) == (
            422,
            "invalid",
            "task_budgets",
        ), budget
    ok = client.patch(
        f"/w/{a.slug}/api/v1/ai/settings",
        json={"task_budgets": {"project_summary": 10**12}},
    )
    assert ok.status_code == 200
    assert draft(client, a, pid).status_code == 201
    assert fake.requests and all(r["model"] == "claude-test" for r in fake.requests)


# -- drafts ------------------------------------------------------------------------


def test_member_drafts_a_summary_and_sees_its_token_cost(world, two, signed_in, fake):
    a, _ = two
    configure(signed_in(a.owner), a, fake)
    pid = project(world, a)
    member = signed_in(world.member(a, role="member"))
    made = draft(member, a, pid)
    assert made.status_code == 201
    body = made.get_json()["draft"]
    assert body["text"] == "A short drafted summary." and body["total_tokens"] == 65
    sent = fake.requests[-1]
    assert sent["key"] == KEY and sent["max_tokens"] == 100
    page = member.post(
        f"/w/{a.slug}/projects/{pid}/ai",
        data={"csrf_token": "test-csrf-token", "kind": "decision_record"},
    )
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "Token cost: 65 tokens (40 in, 25 out)" in html
    assert (
        member.get(f"/w/{a.slug}/projects")
        .get_data(as_text=True)
        .count("Draft summary")
        == 1
    )
    usage = signed_in(a.owner).get(f"/w/{a.slug}/api/v1/ai/usage").get_json()["usage"]
    assert sorted((u["task"], u["requests"]) for u in usage) == [
        ("decision_record", 1),
        ("project_summary", 1),
    ]


def test_cannot_draft_another_workspaces_project(world, two, signed_in, fake):
    a, b = two
    configure(signed_in(a.owner), a, fake)
    configure(signed_in(b.owner), b, fake)
    theirs = project(world, a, name="Secret merger plan")
    other = signed_in(b.owner)
    # Their project id in my workspace: not found, nothing sent, nothing charged.
    mine = draft(other, b, theirs)
    assert (mine.status_code, mine.get_json()["error"]["code"]) == (404, "not_found")
    # Their workspace's address: answered like one that does not exist.
    assert draft(other, a, theirs).status_code == 404
    assert other.get(f"/w/{a.slug}/projects/{theirs}/ai").status_code == 404
    assert fake.requests == []
    assert (
        world.admin.execute("select count(*) as n from cajex.ai_usage").fetchone()["n"]
        == 0
    )


def test_viewer_cannot_draft(world, two, signed_in, fake):
    a, _ = two
    configure(signed_in(a.owner), a, fake)
    pid = project(world, a)
    viewer = signed_in(world.member(a, role="viewer"))
    assert viewer.get(f"/w/{a.slug}/projects/{pid}/ai").status_code == 403
    refused = draft(viewer, a, pid)
    assert (refused.status_code, refused.get_json()["error"]["code"]) == (
        403,
        "forbidden",
    )
    assert fake.requests == []


def test_with_ai_off_drafts_refuse_no_key_is_read_and_the_rest_works(
    world, two, signed_in, fake, monkeypatch, csrf_headers
):
    a, _ = two
    owner = signed_in(a.owner)
    configure(owner, a, fake)
    assert (
        owner.patch(
            f"/w/{a.slug}/api/v1/ai/settings", json={"enabled": False}
        ).status_code
        == 200
    )
    pid = project(world, a)

    def no_decrypt(*args, **kwargs):
        raise AssertionError("a key was decrypted")

    # Every way to a plaintext goes through these two.
    monkeypatch.setattr(crypto, "open_sealed", no_decrypt)
    monkeypatch.setattr(crypto.Keyring, "unwrap", no_decrypt)
    refused = draft(owner, a, pid)
    assert (refused.status_code, refused.get_json()["error"]["code"]) == (409, "ai_off")
    page = owner.post(
        f"/w/{a.slug}/projects/{pid}/ai",
        data={"csrf_token": "test-csrf-token", "kind": "summary"},
    )
    assert page.status_code == 409 and "switched off" in page.get_data(as_text=True)
    # Everything else goes on: projects, their API, the settings page.
    assert owner.get(f"/w/{a.slug}/projects").status_code == 200
    created = owner.post(f"/w/{a.slug}/api/v1/projects", json={"name": "Still works"})
    assert created.status_code == 201
    assert owner.get(f"/w/{a.slug}/settings/ai").status_code == 200
    assert fake.requests == []


def test_a_spent_budget_pauses_with_a_clear_message_and_others_continue(
    world, two, signed_in, fake
):
    a, b = two
    pa, pb = project(world, a), project(world, b)
    with world.as_user(a.owner, a) as (conn, _):
        facts = conn.execute(
            "select name, description, tags, status from cajex.projects"
        ).fetchone()
    # One draft reserves its estimated input plus the 100-token answer limit
    # and uses 65 (the provider's usage), so this budget holds exactly one.
    reserve = gw.estimate_input_tokens(*drafts.prompt_for("summary", facts)) + 100
    configure(signed_in(a.owner), a, fake, budget_tokens=reserve + 64)
    configure(signed_in(b.owner), b, fake, budget_tokens=reserve + 64)
    client = signed_in(a.owner)
    answers = [draft(client, a, pa) for _ in range(3)]
    assert [r.status_code for r in answers] == [201, 429, 429]
    paused = answers[1:]
    assert paused[0].get_json()["error"]["code"] == "quota_exceeded"
    assert "paused" in paused[0].get_json()["error"]["message"]
    page = client.get(f"/w/{a.slug}/projects/{pa}/ai").get_data(as_text=True)
    assert "AI is paused in this workspace" in page
    assert draft(signed_in(b.owner), b, pb).status_code == 201
    # Raising the budget resumes at once.
    assert (
        client.patch(
            f"/w/{a.slug}/api/v1/ai/settings", json={"budget_tokens": 100000}
        ).status_code
        == 200
    )
    assert draft(client, a, pa).status_code == 201


@pytest.mark.parametrize(
    "model, status, code",
    [("fail-500", 502, "ai_provider_error"), ("slow-3", 504, "ai_timeout")],
)
def test_provider_failures_are_clear_errors_over_http(
    world, two, signed_in, fake, model, status, code
):
    a, _ = two
    client = signed_in(a.owner)
    configure(client, a, fake, model=model, timeout_seconds=1)
    resp = draft(client, a, project(world, a))
    assert (resp.status_code, resp.get_json()["error"]["code"]) == (status, code)
    assert KEY not in resp.get_data(as_text=True)
    status_now = client.get(f"/w/{a.slug}/api/v1/ai/status").get_json()["status"]
    assert status_now["used_tokens"] == 0 and status_now["reserved_tokens"] == 0


def test_the_key_never_reaches_a_log_line(world, two, signed_in, fake):
    """Set up, draft, fail and pause: no log line of the run holds the key or a piece of it."""
    import os
    from pathlib import Path

    a, _ = two
    client = signed_in(a.owner)
    configure(client, a, fake)
    pid = project(world, a)
    assert draft(client, a, pid).status_code == 201
    configure(client, a, fake, model="fail-401")
    assert draft(client, a, pid).status_code == 502
    path = Path(os.environ["CAJEX_LOG_FILE"])
    text = path.read_text(errors="replace")
    assert str(a.id) in text  # the run's lines are there
    assert KEY not in text and KEY[:-4] not in text and "y" * 24 not in text
