"""Magic links end to end: request, email through the outbox job, use once."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets

import pytest
from cajex.jobs import registry, runner
from cajex.web.middleware import close_pools

from cajex import db


@pytest.fixture
def worker(settings):
    """Runs outbox jobs the way the RQ worker does, with development mail."""
    registry.load_all()
    job_settings = dataclasses.replace(settings, env="development")
    pool = db.make_pool(settings.worker_url, 1, 2, name="test-worker")
    saved = dict(runner._state)
    runner._state.update(pool=pool, settings=job_settings)

    def run_all() -> list[str]:
        with pool.connection() as conn:
            ids = [r["id"] for r in conn.execute(
                "select id from cajex_private.claim_outbox(100, '1 hour'::interval)"
            ).fetchall()]
        return [runner.run_outbox_job(i) for i in ids]

    yield run_all
    runner._state.clear()
    runner._state.update(saved)
    pool.close()


def _csrf(client) -> str:
    with client.session_transaction() as sess:
        sess["csrf"] = "t" * 32
    return "t" * 32


def ask(client, email, remote="10.0.0.1", **headers):
    return client.post("/login/email", data={"email": email, "csrf_token": _csrf(client)},
                       environ_base={"REMOTE_ADDR": remote}, headers=headers)


def mailbox(world) -> list[dict]:
    return world.admin.execute(
        "select outbox_id, recipient, subject, text_body from cajex.email_deliveries"
        " order by outbox_id"
    ).fetchall()


def link_of(message) -> str:
    return re.search(r"(http\S+/login/magic/\S+)", message["text_body"]).group(1)


def use(client, link: str):
    path = link.split("cajex.test", 1)[1]
    page = client.get(path)
    assert page.status_code == 200, page.get_data(as_text=True)
    return client.post(path, data={"csrf_token": _csrf(client)})


def test_link_signs_in_once(world, client, worker):
    user = world.user()
    assert ask(client, user.email).status_code == 200
    worker()
    [message] = mailbox(world)
    assert message["recipient"] == user.email
    link = link_of(message)
    # Built from the configured public address.
    assert link.startswith("http://cajex.test/login/magic/")
    signed = use(client, link)
    assert signed.status_code == 302
    with client.session_transaction() as sess:
        assert sess["_user_id"] == str(user.id)
    again = client.application.test_client()
    reused = use_status(again, link)
    assert reused == 410


def use_status(client, link):
    path = link.split("cajex.test", 1)[1]
    return client.post(path, data={"csrf_token": _csrf(client)}).status_code


def test_link_stores_only_a_hash(world, client, worker):
    ask(client, "hash@example.com")
    worker()
    token = link_of(mailbox(world)[0]).rsplit("/", 1)[1]
    rows = world.admin.execute("select token_hash, email from cajex.magic_links").fetchall()
    assert len(rows) == 1 and token.encode() not in bytes(rows[0]["token_hash"])
    assert len(bytes(rows[0]["token_hash"])) == 32


def test_expired_link_is_refused(world, client, worker):
    ask(client, "late@example.com")
    worker()
    link = link_of(mailbox(world)[0])
    world.admin.execute("update cajex.magic_links set expires_at = now() - interval '1 second'")
    path = link.split("cajex.test", 1)[1]
    page = client.get(path, headers={"Accept": "application/json"})
    assert page.status_code == 410 and page.json["error"]["code"] == "expired"
    assert use_status(client, link) == 410
    assert world.admin.execute(
        "select count(*) as n from cajex.users where email = 'late@example.com'"
    ).fetchone()["n"] == 0


def test_link_is_bound_to_its_address(world, client, worker):
    a = world.user()
    b = world.user()
    ask(client, a.email)
    worker()
    use(client, link_of(mailbox(world)[0]))
    with client.session_transaction() as sess:
        assert sess["_user_id"] == str(a.id) != str(b.id)


def test_unknown_token_is_a_clear_404(client):
    response = client.get("/login/magic/" + "x" * 43, headers={"Accept": "application/json"})
    assert response.status_code == 404
    assert client.get("/login/magic/" + "x" * 500).status_code == 404


def test_host_header_cannot_poison_the_link(world, client, worker):
    ask(client, "poison@example.com", headers={"Host": "evil.example",
                                             "X-Forwarded-Host": "evil.example"})
    worker()
    message = mailbox(world)[0]
    assert "evil.example" not in message["text_body"]
    assert link_of(message).startswith("http://cajex.test/")


def test_known_and_unknown_addresses_get_the_same_answer(world, client, worker):
    known = world.user()
    a = ask(client, known.email, remote="10.0.0.2")
    b = ask(client, "nobody-here@example.com", remote="10.0.0.3")
    assert a.status_code == b.status_code == 200
    assert a.get_data() == b.get_data()
    worker()
    # Both got a link (the unknown address signs up when it uses it): the
    # same work happened on both paths.
    assert sorted(m["recipient"] for m in mailbox(world)) == sorted(
        [known.email, "nobody-here@example.com"])


def test_rate_limited_per_address(world, client, worker):
    for _ in range(5):
        assert ask(client, "busy@example.com", remote="10.1.0.1").status_code == 200
    refused = ask(client, "busy@example.com", remote="10.1.0.2")
    assert refused.status_code == 429
    assert "Too many sign-in links" in refused.get_data(as_text=True)
    # Another address is not affected.
    assert ask(client, "calm@example.com", remote="10.1.0.3").status_code == 200
    worker()
    assert [m["recipient"] for m in mailbox(world)].count("busy@example.com") == 5


def test_rate_limited_per_client_address(client):
    statuses = [ask(client, f"u{i}@example.com", remote="10.2.0.1").status_code
                for i in range(21)]
    assert statuses[:20] == [200] * 20 and statuses[20] == 429
    assert ask(client, "u0@example.com", remote="10.2.0.2").status_code == 200


def test_bad_address_is_refused_and_writes_nothing(world, client):
    for bad in ("", "no-at-sign", "a@b", "x" * 400 + "@example.com"):
        response = ask(client, bad)
        assert response.status_code == 422, bad
    assert world.admin.execute("select count(*) as n from cajex.magic_links").fetchone()["n"] == 0


def test_request_without_csrf_is_refused(client):
    response = client.post("/login/email", data={"email": "a@example.com"})
    assert response.status_code == 400


def test_dev_mailbox_shows_the_link_in_development(world, settings, worker):
    from cajex.web import create_app

    dev = create_app(dataclasses.replace(settings, env="development"), {"TESTING": True})
    try:
        client = dev.test_client()
        ask(client, "dev@example.com")
        worker()
        page = client.get("/dev/mailbox").get_data(as_text=True)
        assert "Development mailbox" in page and "development mailbox" in page
        link = re.search(r"http://cajex.test/login/magic/[A-Za-z0-9_-]+", page).group(0)
        assert use(client, link).status_code == 302
    finally:
        close_pools(dev)


def test_dev_mailbox_is_absent_in_production(client):
    assert client.get("/dev/mailbox").status_code == 404


@pytest.mark.parametrize(
    "hostile",
    [
        "//evil.example",
        "/\t/evil.example",
        "/\n/evil.example",
        "/\\evil.example",
        "/ /evil.example",
        "https://evil.example/",
        "evil.example",
        "/\x00/evil.example",
    ],
)
def test_next_never_leaves_the_site(world, client, hostile):
    """After signing in, `next` is followed only to a path on this site:
    whitespace and control characters, which browsers and Werkzeug drop,
    cannot turn it into another site's address."""
    user = world.user()
    token = secrets.token_urlsafe(32)
    world.admin.execute(
        "insert into cajex.magic_links (token_hash, email, expires_at)"
        " values (%s, %s, now() + interval '10 minutes')",
        (hashlib.sha256(token.encode()).digest(), user.email),
    )
    with client.session_transaction() as sess:
        sess["csrf"] = "t"
    answer = client.post(
        f"/login/magic/{token}",
        query_string={"next": hostile},
        headers={"X-CSRF-Token": "t"},
    )
    assert answer.status_code == 302
    location = answer.headers["Location"]
    assert location.startswith("/") and not location.startswith(("//", "/\\"))
    assert "evil.example" not in location


def test_next_is_followed_to_a_path_on_the_site(world, client):
    user = world.user()
    token = secrets.token_urlsafe(32)
    world.admin.execute(
        "insert into cajex.magic_links (token_hash, email, expires_at)"
        " values (%s, %s, now() + interval '10 minutes')",
        (hashlib.sha256(token.encode()).digest(), user.email),
    )
    with client.session_transaction() as sess:
        sess["csrf"] = "t"
    answer = client.post(
        f"/login/magic/{token}",
        query_string={"next": "/w/acme/projects?page=2"},
        headers={"X-CSRF-Token": "t"},
    )
    assert answer.headers["Location"] == "/w/acme/projects?page=2"
