"""Sign-in email through a real SMTP server on loopback (aiosmtpd).

The link is asked for over HTTP, the outbox job runs the way the RQ worker
runs it, and the message must arrive exactly once with a link that signs in,
even when the first delivery attempt fails.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import os
import re
import threading
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from cajex.jobs import registry, runner

from cajex import db
from cajex.localservices import free_port


class Inbox:
    """An aiosmtpd handler that keeps messages; `fail_next` refuses that many."""

    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []
        self.fail_next = 0
        self.attempts = 0
        self._lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        with self._lock:
            self.attempts += 1
            if self.fail_next > 0:
                self.fail_next -= 1
                return "451 4.3.0 try again later"
            self.messages.append(
                email.message_from_bytes(envelope.content, policy=email.policy.default)
            )
        return "250 OK"


@pytest.fixture
def smtp():
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    inbox.url = f"smtp://127.0.0.1:{port}"
    yield inbox
    controller.stop()


@pytest.fixture
def jobs(settings):
    """Run due outbox jobs as the worker does, with the given SMTP URL."""
    registry.load_all()
    pool = db.make_pool(settings.worker_url, 1, 2, name="test-mail-worker")
    saved = dict(runner._state)

    def run(smtp_url: str) -> list[str]:
        runner._state.update(
            pool=pool, settings=dataclasses.replace(settings, smtp_url=smtp_url)
        )
        with pool.connection() as conn:
            ids = [
                r["id"]
                for r in conn.execute(
                    "select id from cajex_private.claim_outbox(100, '1 hour'::interval)"
                ).fetchall()
            ]
        outcomes = []
        for outbox_id in ids:
            try:
                outcomes.append(runner.run_outbox_job(outbox_id))
            except Exception as exc:  # the worker lets RQ record it; the outbox retries
                outcomes.append(type(exc).__name__)
        return outcomes

    yield run
    runner._state.clear()
    runner._state.update(saved)
    pool.close()


def ask(client, address: str):
    with client.session_transaction() as sess:
        csrf = sess.setdefault("csrf", "e" * 32)
    response = client.post("/login/email", data={"email": address, "csrf_token": csrf})
    assert response.status_code == 200
    return response


def make_due(world):
    """Let the backoff pass: a failed job is due again."""
    world.admin.execute(
        "update cajex.outbox set run_after = now() where done_at is null"
    )


def link_in(message) -> str:
    text = message.get_body(preferencelist=("plain",)).get_content()
    return re.search(r"http://cajex\.test/login/magic/[A-Za-z0-9_-]+", text).group(0)


def test_link_arrives_once_even_when_the_first_attempt_fails(
    world, app, client, smtp, jobs
):
    ask(client, "mail@example.com")
    smtp.fail_next = 1
    assert jobs(smtp.url) == ["SMTPDataError"]
    assert smtp.messages == []
    error = world.admin.execute(
        "select last_error, done_at from cajex.outbox"
    ).fetchone()
    assert error["done_at"] is None and "SMTPDataError" in error["last_error"]
    # Not due before its backoff.
    assert jobs(smtp.url) == []
    make_due(world)
    assert jobs(smtp.url) == ["done"]
    # A duplicate delivery of the job (the relay handing it over twice) sends nothing.
    [row] = world.admin.execute("select id from cajex.outbox").fetchall()
    assert runner.run_outbox_job(row["id"]) == "skipped"
    make_due(world)
    assert jobs(smtp.url) == []
    assert smtp.attempts == 2 and len(smtp.messages) == 1

    [message] = smtp.messages
    assert message["To"] == "mail@example.com"
    assert message["Message-ID"].startswith(f"<outbox-{row['id']}.")
    link = link_in(message)
    html = message.get_body(preferencelist=("html",)).get_content()
    assert link in html
    # The link signs the person in, once.
    path = link.split("cajex.test", 1)[1]
    browser = app.test_client()
    assert browser.get(path).status_code == 200
    with browser.session_transaction() as sess:
        sess["csrf"] = "f" * 32
    assert browser.post(path, data={"csrf_token": "f" * 32}).status_code == 302
    signed = world.admin.execute(
        "select u.email from cajex.sessions s join cajex.users u on u.id = s.user_id"
        " where s.auth_method = 'magic_link'"
    ).fetchall()
    assert [r["email"] for r in signed] == ["mail@example.com"]


def test_link_arrives_once_when_the_server_was_down(world, client, jobs):
    ask(client, "down@example.com")
    port = free_port()
    assert jobs(f"smtp://127.0.0.1:{port}") == ["ConnectionRefusedError"]
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        make_due(world)
        assert jobs(f"smtp://127.0.0.1:{port}") == ["done"]
        make_due(world)
        assert jobs(f"smtp://127.0.0.1:{port}") == []
        assert (
            len(inbox.messages) == 1 and inbox.messages[0]["To"] == "down@example.com"
        )
    finally:
        controller.stop()


def test_each_request_is_its_own_message_with_its_own_link(world, client, smtp, jobs):
    ask(client, "twice@example.com")
    ask(client, "twice@example.com")
    assert jobs(smtp.url) == ["done", "done"]
    assert len(smtp.messages) == 2
    assert link_in(smtp.messages[0]) != link_in(smtp.messages[1])


def test_the_log_names_the_job_not_the_address(world, client, smtp, jobs):
    path = Path(os.environ["CAJEX_LOG_FILE"])
    start = path.stat().st_size if path.exists() else 0
    ask(client, "private.person@example.com")
    jobs(smtp.url)
    with path.open("rb") as f:
        f.seek(start)
        written = f.read().decode()
    assert '"email.sent"' in written
    assert "private.person" not in written and "/login/magic/" not in written
