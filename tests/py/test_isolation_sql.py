"""The isolation battery, in SQL: random actors and random forged contexts over
every workspace-owned table, through the app's context and through an exact
replay of PostgREST's per-request transaction.

Hypothesis draws who acts, how they open their context, which workspace they
aim at and how they try to cheat; the checks are the same every time: nothing
of another workspace is returned, and nothing of another workspace changes.
"""

from __future__ import annotations

import json
import secrets

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row
from test_isolation_support import (
    DENIED,
    attempt_writes,
    build,
    changed_outside,
    fill_tenant,
    fingerprint,
    global_leaks,
    leaks,
    savepointed,
    scoped_tables,
)

from cajex import context, db, jwt
from cajex.testing import postgrest

BATTERY = settings(
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=False,
)


@pytest.fixture
def dataset(world):
    return build(world, workspaces=3)


@pytest.fixture
def tables(world):
    return scoped_tables(world.admin)


def test_can_discover_the_workspace_owned_tables(tables):
    """The catalog names at least the core workspace-owned tables the battery covers."""
    names = {f"{s}.{t}" for s, t in tables}
    assert {
        "cajex.projects",
        "cajex.memberships",
        "cajex.audit_log",
        "cajex.outbox",
    } <= names


def test_can_fill_every_tenant_with_canaries(world, dataset):
    """Each workspace holds projects, memberships, audit events and jobs of its own."""
    for tenant in dataset.tenants:
        for table in ("projects", "memberships", "audit_log", "outbox"):
            n = world.admin.execute(
                f"select count(*) as n from cajex.{table} where workspace_id = %s",  # noqa: S608
                (tenant.ws.id,),
            ).fetchone()["n"]
            assert n > 0, table


# -- actors through the app's own context ------------------------------------------

ACTORS = st.one_of(
    st.tuples(
        st.just("member"), st.sampled_from(["owner", "admin", "member", "viewer"])
    ),
    st.tuples(
        st.sampled_from(
            [
                "member_of_b",
                "multi",
                "stranger",
                "removed",
                "deactivated",
                "revoked",
                "expired",
                "deleted_member",
                "deleted_owner",
            ]
        ),
        st.just(None),
    ),
)


def resolve(dataset, kind: str, role: str | None):
    """(user, workspace the actor aims at, workspace that must open or None)."""
    a, b = dataset.tenants[0], dataset.tenants[1]
    if kind == "member":
        return a.members[role], a.ws, a.ws.id
    if kind == "member_of_b":
        return b.members["member"], a.ws, None
    if kind == "multi":
        return dataset.multi, a.ws, a.ws.id
    if kind == "stranger":
        return dataset.stranger, a.ws, None
    if kind in dataset.lost:
        return dataset.lost[kind], a.ws, None
    d = dataset.deleted
    user = d.members["member"] if kind == "deleted_member" else d.members["owner"]
    return user, d.ws, None


@BATTERY
@given(actor=ACTORS, signed=st.booleans(), by_id=st.booleans())
def test_cannot_reach_another_workspace_as_any_actor(
    world, dataset, tables, actor, signed, by_id
):
    """Whoever acts and however they open a context, only their open workspace's rows are seen or changed."""
    user, aim, expected = resolve(dataset, *actor)
    ref = str(aim.id) if (signed and by_id) else aim.slug
    token = user.signed_token() if signed else user.token()
    before = fingerprint(world.admin, tables)
    with world.app_connection() as conn, db.in_context(conn, token, ref) as opened:
        assert opened.workspace_id == expected
        assert leaks(conn, tables, {}, user.id, expected) == []
        assert global_leaks(conn, world, dataset, user.id, expected) == []
        for victim in dataset.all_tenants():
            if victim.ws.id != expected:
                assert attempt_writes(conn, tables, victim) == []
    allowed = {str(expected)} if expected else set()
    assert changed_outside(before, fingerprint(world.admin, tables), allowed) == []


# -- forged contexts -----------------------------------------------------------------

FORGERIES = [
    "tampered_credential",
    "other_session_credential",
    "wrong_secret_token",
    "expired_token",
    "tampered_token",
    "mismatched_session_token",
    "tampered_job_token",
    "made_up_settings",
    "made_up_seal",
    "swapped_seal",
    "replayed_seal",
    "write_context_key",
    "read_context_key",
    "read_or_write_seal_key",
    "call_install_context",
    "call_seal_context",
    "call_open_api_context",
    "set_role_api",
    "credential_for_wrong_slug",
]


def forge(
    conn, kind: str, world, attacker, victim_ws, victim_user, attacker_ws
) -> None:
    """Apply one forgery on `conn` (inside a transaction); refusals are expected."""
    secret = world.secret

    def open_(token, ref):
        savepointed(
            conn, "select * from cajex_private.open_context(%s, %s)", (token, ref)
        )

    def seal(value):
        conn.execute("select set_config('cajex.context', %s, true)", (value,))

    if kind == "tampered_credential":
        good = victim_user.token()
        open_(good[:-1] + ("A" if good[-1] != "A" else "B"), victim_ws.slug)
    elif kind == "other_session_credential":
        open_(
            context.session_credential(victim_user.session_id, attacker.session_secret),
            victim_ws.slug,
        )
    elif kind == "wrong_secret_token":
        open_(
            context.user_token(
                secrets.token_hex(32), victim_user.id, victim_user.session_id
            ),
            victim_ws.slug,
        )
    elif kind == "expired_token":
        open_(
            context.user_token(secret, victim_user.id, victim_user.session_id, ttl=-5),
            victim_ws.slug,
        )
    elif kind == "tampered_token":
        token = attacker.signed_token()
        open_(token.replace(str(attacker.id), str(victim_user.id)), victim_ws.slug)
    elif kind == "mismatched_session_token":
        open_(
            context.user_token(secret, attacker.id, victim_user.session_id),
            victim_ws.slug,
        )
    elif kind == "tampered_job_token":
        if attacker_ws is not None:
            token = context.service_token(secret, attacker_ws.id, "isolation")
            open_(
                token.replace(str(attacker_ws.id), str(victim_ws.id)), str(victim_ws.id)
            )
        good = context.service_token(secret, victim_ws.id, "isolation")
        # Always a different signature: a fixed "00" would be the genuine one
        # whenever the real HMAC happened to end in it.
        open_(good[:-1] + ("0" if good[-1] != "0" else "1"), str(victim_ws.id))
    elif kind == "made_up_settings":
        claims = json.dumps(
            {
                "role": "cajex_api",
                "sub": str(victim_user.id),
                "sid": str(victim_user.session_id),
                "workspace_id": str(victim_ws.id),
            }
        )
        for name, value in [
            ("cajex.workspace_id", str(victim_ws.id)),
            ("cajex.user_id", str(victim_user.id)),
            ("cajex.workspace", victim_ws.slug),
            ("cajex.role", "owner"),
            ("cajex.context", victim_user.token()[:-1]),
            ("request.jwt.claims", claims),
            ("request.jwt.claim.workspace_id", str(victim_ws.id)),
        ]:
            conn.execute("select set_config(%s, %s, true)", (name, value))
    elif kind == "made_up_seal":
        fields = (
            f"v3|{victim_ws.id}|{victim_user.id}|{victim_user.session_id}"
            f"|owner|user|{victim_ws.slug}"
        )
        seal(f"{fields}|{secrets.token_hex(32)}")
    elif kind == "swapped_seal":
        # The attacker's own, genuine seal, with the victim's workspace, role
        # and slug put in its place.
        open_(attacker.token(), attacker_ws.slug if attacker_ws is not None else None)
        mine = conn.execute(
            "select current_setting('cajex.context', true) as c"
        ).fetchone()["c"]
        if mine:
            fields, _, mac = mine.rpartition("|")
            parts = fields.split("|")
            parts[1], parts[4], parts[6] = str(victim_ws.id), "owner", victim_ws.slug
            seal("|".join(parts) + "|" + mac)
    elif kind == "replayed_seal":
        # The victim's genuine seal from an earlier transaction of another
        # connection (a pooled connection the victim's request used).
        with world.app_connection() as other:
            with db.in_context(other, victim_user.token(), victim_ws.slug):
                earlier = other.execute(
                    "select current_setting('cajex.context') as c"
                ).fetchone()["c"]
        seal(earlier)
    elif kind == "write_context_key":
        mine = secrets.token_hex(32)
        assert (
            savepointed(
                conn,
                "insert into cajex_private.context_keys (key_id, secret) values ('k1', decode(%s, 'hex'))"
                " on conflict (key_id) do update set secret = excluded.secret",
                (mine,),
            )
            is None
        )
        assert (
            savepointed(
                conn,
                "update cajex_private.context_keys set secret = decode(%s, 'hex')",
                (mine,),
            )
            is None
        )
        open_(
            context.user_token(mine, victim_user.id, victim_user.session_id),
            victim_ws.slug,
        )
    elif kind == "read_context_key":
        assert (
            savepointed(conn, "select secret from cajex_private.context_keys") is None
        )
    elif kind == "read_or_write_seal_key":
        assert savepointed(conn, "select * from cajex_private.seal_key") is None
        assert (
            savepointed(
                conn,
                "update cajex_private.seal_key set inner_pad = %s, outer_pad = %s",
                (b"6" * 64, b"\\" * 32),
            )
            is None
        )
        assert savepointed(conn, "select cajex_private.ensure_seal_key(true)") is None
    elif kind == "call_install_context":
        assert (
            savepointed(
                conn,
                "select * from cajex_private.install_context(%s, %s, %s, 'user', false)",
                (victim_user.session_id, victim_user.id, victim_ws.slug),
            )
            is None
        )
    elif kind == "call_seal_context":
        assert (
            savepointed(
                conn,
                "select cajex_private.seal_context(%s, %s, %s, 'owner', 'user', %s)",
                (victim_ws.id, victim_user.id, victim_user.session_id, victim_ws.slug),
            )
            is None
        )
    elif kind == "call_open_api_context":
        conn.execute(
            "select set_config('request.jwt.claims', %s, true)",
            (
                json.dumps(
                    {
                        "role": "cajex_api",
                        "sub": str(victim_user.id),
                        "sid": str(victim_user.session_id),
                        "workspace_id": str(victim_ws.id),
                    }
                ),
            ),
        )
        assert savepointed(conn, "select cajex_private.open_api_context()") is None
        assert savepointed(conn, "select api.pre_request()") is None
    elif kind == "set_role_api":
        assert savepointed(conn, "select set_config('role', 'cajex_api', true)") is None
        assert savepointed(conn, "set local role cajex_api") is None
        assert (
            savepointed(conn, "set local session authorization cajex_authenticator")
            is None
        )
    elif kind == "credential_for_wrong_slug":
        open_(attacker.token(), victim_ws.slug)
    else:  # pragma: no cover - the list above is the strategy
        raise AssertionError(kind)


@BATTERY
@given(
    steps=st.lists(st.sampled_from(FORGERIES), min_size=1, max_size=3),
    attacker_kind=st.sampled_from(["member_of_b", "stranger", "removed"]),
    victim_role=st.sampled_from(["owner", "admin", "member", "viewer"]),
)
def test_cannot_open_a_context_by_forgery(
    world, dataset, tables, steps, attacker_kind, victim_role
):
    """No forged, tampered, expired or borrowed context opens a workspace or changes a row."""
    a, b = dataset.tenants[0], dataset.tenants[1]
    attacker, _, _ = resolve(dataset, attacker_kind, None)
    attacker_ws = b.ws if attacker_kind == "member_of_b" else None
    victim_user = a.members[victim_role]
    before = fingerprint(world.admin, tables)
    with world.app_connection() as conn:
        with conn.transaction():
            for kind in steps:
                forge(conn, kind, world, attacker, a.ws, victim_user, attacker_ws)
            assert (
                conn.execute("select cajex.current_workspace_id() as w").fetchone()["w"]
                is None
            )
            assert leaks(conn, tables, {}, attacker.id, None) == []
            assert global_leaks(conn, world, dataset, attacker.id, None) == []
            for victim in dataset.all_tenants():
                assert attempt_writes(conn, tables, victim) == []
            create = savepointed(
                conn,
                "select cajex.create_project('forged')",
                expected=(psycopg.DatabaseError,),
            )
            assert create is None
    assert changed_outside(before, fingerprint(world.admin, tables), set()) == []


# -- PostgREST's per-request transaction, replayed -------------------------------------

JWT_SECRET = "j" * 48


def api_relations(admin) -> list[str]:
    rows = admin.execute(
        "select format('%I.%I', n.nspname, c.relname) as name from pg_class c"
        " join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = 'api' and c.relkind in ('r', 'v', 'm') order by 1"
    ).fetchall()
    return [r["name"] for r in rows]


def replay(
    auth_url: str, role: str, claims: str | None, relations: list[str], tables, user_id
):
    """PostgREST's transaction for GET /<relation> (READ ONLY): role, claims,
    pre-request, query.

    Returns (workspace ids seen through the api relations, leaks in the
    workspace-owned tables, the context's workspace).
    """
    seen: set = set()
    with postgrest.request(auth_url, role, claims, "GET", "/projects") as conn:
        opened = (
            conn.execute("select cajex.current_workspace_id() as w").fetchone()["w"]
            if role == "cajex_api"
            else None
        )
        for relation in relations:
            rows = savepointed(conn, f"select to_jsonb(t) as row from {relation} t")  # noqa: S608
            for r in rows or []:
                row = r["row"]
                seen.add(row.get("workspace_id") or row.get("id"))
        found = leaks(conn, tables, {}, user_id, opened) if role == "cajex_api" else []
    return seen, found, opened


CLAIMS = st.sampled_from(
    [
        "valid",
        "other_workspace",
        "other_session",
        "wrong_role_claim",
        "anon",
        "malformed",
        "slug_not_id",
        "sub_of_victim",
        "no_workspace",
    ]
)
REPLAY_ACTORS = st.sampled_from(
    [
        "owner",
        "admin",
        "member",
        "viewer",
        "multi",
        "removed",
        "deactivated",
        "revoked",
        "expired",
        "deleted_member",
    ]
)


@BATTERY
@given(variant=CLAIMS, who=REPLAY_ACTORS)
def test_cannot_reach_another_workspace_through_postgrest(
    world, dataset, tables, db_urls, variant, who
):
    """A replayed PostgREST request sees only the workspace its verified claims name, if any."""
    a, b = dataset.tenants[0], dataset.tenants[1]
    if who in ("owner", "admin", "member", "viewer"):
        user, ws, live = a.members[who], a.ws, True
    elif who == "multi":
        user, ws, live = dataset.multi, a.ws, True
    elif who == "deleted_member":
        user, ws, live = dataset.deleted.members["member"], dataset.deleted.ws, False
    else:
        user, ws, live = dataset.lost[who], a.ws, False
    stranger_ws = dataset.tenants[2].ws
    minted = jwt.verify(
        jwt.postgrest_token(JWT_SECRET, user.id, user.session_id, ws.id), JWT_SECRET
    )
    role, expected = "cajex_api", (ws.id if live else None)
    claims = dict(minted)
    if variant == "other_workspace":
        claims["workspace_id"], expected = str(stranger_ws.id), None
    elif variant == "other_session":
        claims["sid"], expected = str(b.members["owner"].session_id), None
    elif variant == "wrong_role_claim":
        claims["role"], expected = "cajex_app", None
    elif variant == "anon":
        role, claims, expected = "cajex_anon", None, None
    elif variant == "slug_not_id":
        claims["workspace_id"], expected = ws.slug, None
    elif variant == "sub_of_victim":
        claims["sub"], expected = str(b.members["owner"].id), None
    elif variant == "no_workspace":
        claims.pop("workspace_id")
        expected = None
    text = (
        '{"role": "cajex_api", "sub": '
        if variant == "malformed"
        else (json.dumps(claims) if claims is not None else None)
    )
    if variant == "malformed":
        expected = None
    before = fingerprint(world.admin, tables)
    relations = api_relations(world.admin)
    seen, found, opened = replay(
        db_urls["authenticator"], role, text, relations, tables, user.id
    )
    assert opened == expected
    assert found == []
    assert seen <= ({str(expected)} if expected else set())
    assert changed_outside(before, fingerprint(world.admin, tables), set()) == []


def test_can_read_own_projects_through_the_postgrest_replay(
    world, dataset, tables, db_urls
):
    """A member's verified claims show exactly their workspace's projects through api.projects."""
    a = dataset.tenants[0]
    user = a.members["viewer"]
    claims = jwt.verify(
        jwt.postgrest_token(JWT_SECRET, user.id, user.session_id, a.ws.id), JWT_SECRET
    )
    seen, found, opened = replay(
        db_urls["authenticator"],
        "cajex_api",
        json.dumps(claims),
        ["api.projects"],
        tables,
        user.id,
    )
    assert opened == a.ws.id and seen == {str(a.ws.id)} and found == []


def test_cannot_pass_postgrest_with_a_forged_or_expired_jwt():
    """Tokens signed with another secret, tampered, expired, without an expiry
    or for another audience fail the check PostgREST runs."""
    token = jwt.postgrest_token(JWT_SECRET, "u", "s", "w")
    header, body, sig = token.split(".")
    for bad, secret in [
        (token, "x" * 48),
        (f"{header}.{body}x.{sig}", JWT_SECRET),
        (jwt.postgrest_token(JWT_SECRET, "u", "s", "w", ttl=-10), JWT_SECRET),
        (
            jwt.sign({"role": "cajex_api"}, JWT_SECRET).rsplit(".", 1)[0] + ".",
            JWT_SECRET,
        ),
        # Signed, but with no expiry, or for another audience.
        (jwt.sign({"role": "cajex_api", "aud": jwt.AUDIENCE}, JWT_SECRET), JWT_SECRET),
        (
            jwt.sign(
                {"role": "cajex_api", "exp": 2**40, "aud": "another-api"}, JWT_SECRET
            ),
            JWT_SECRET,
        ),
        (jwt.sign({"role": "cajex_api", "exp": 2**40}, JWT_SECRET), JWT_SECRET),
    ]:
        with pytest.raises(jwt.InvalidToken):
            jwt.verify(bad, secret)


def test_postgrest_reads_run_read_only_and_writes_slide_the_session(world, db_urls):
    """PostgREST runs GET and HEAD READ ONLY: the context opens there with no
    write (the session is left as it is); a POST slides the session's idle
    window as a browser request does. An anonymous request's pre-request
    runs and opens nothing."""
    a = world.workspace(plan="team")
    world.project(a, name="Ours")
    owner = a.owner
    world.admin.execute(
        "update cajex.sessions set last_seen_at = now() - interval '10 minutes' where id = %s",
        (owner.session_id,),
    )

    def last_seen():
        return world.admin.execute(
            "select last_seen_at from cajex.sessions where id = %s", (owner.session_id,)
        ).fetchone()["last_seen_at"]

    claims = jwt.verify(
        jwt.postgrest_token(JWT_SECRET, owner.id, owner.session_id, a.id),
        JWT_SECRET,
    )
    stale = last_seen()
    for method in ("GET", "HEAD"):
        with postgrest.request(
            db_urls["authenticator"], "cajex_api", claims, method, "/projects"
        ) as conn:
            assert conn.execute("show transaction_read_only").fetchone() == {
                "transaction_read_only": "on"
            }
            assert (
                conn.execute("select cajex.current_actor() as a").fetchone()["a"]
                == "api"
            )
            names = [r["name"] for r in conn.execute("select name from api.projects")]
            assert names == ["Ours"]
    assert last_seen() == stale
    with postgrest.request(
        db_urls["authenticator"], "cajex_api", claims, "POST", "/rpc/create_project"
    ) as conn:
        made = conn.execute("select * from api.create_project('Also ours')").fetchone()
        assert made["workspace_id"] == a.id
    assert last_seen() > stale
    audit = world.admin.execute(
        "select actor from cajex.audit_log where workspace_id = %s and action = 'project.created'"
        " order by id desc limit 1",
        (a.id,),
    ).fetchone()
    assert audit["actor"] == "api"
    with postgrest.request(db_urls["authenticator"], "cajex_anon", None) as conn:
        assert conn.execute("select current_user as u").fetchone()["u"] == "cajex_anon"
        assert savepointed(conn, "select * from api.projects") is None


def test_claims_open_nothing_outside_postgrests_login(world, db_urls):
    """request.jwt.claims count only in a session of cajex_authenticator:
    set by a request as cajex_app, or by any other login, they open nothing."""
    a = world.workspace(plan="team")
    world.project(a)
    claims = json.dumps(
        jwt.verify(
            jwt.postgrest_token(JWT_SECRET, a.owner.id, a.owner.session_id, a.id),
            JWT_SECRET,
        )
    )
    for url in (world.app_url, world.signin_url, world.worker_url):
        with psycopg.connect(url, row_factory=dict_row) as conn:
            conn.execute("select set_config('request.jwt.claims', %s, true)", (claims,))
            row = conn.execute(
                "select cajex.current_workspace_id() as w,"
                " (select count(*) from cajex.projects) as n"
            ).fetchone()
            assert row == {"w": None, "n": 0}, url


def test_cannot_write_another_workspace_through_postgrest_rpc(world, dataset, db_urls):
    """The api schema's write functions, called with valid claims, never touch another workspace."""
    a, b = dataset.tenants[0], dataset.tenants[1]
    user = a.members["owner"]
    claims = json.dumps(
        jwt.verify(
            jwt.postgrest_token(JWT_SECRET, user.id, user.session_id, a.ws.id),
            JWT_SECRET,
        )
    )
    theirs = b.projects[0]["id"]
    with postgrest.request(
        db_urls["authenticator"], "cajex_api", claims, "POST", "/rpc/update_project"
    ) as conn:
        for statement in (
            'select * from api.update_project(%s, \'{"name": "pwned"}\')',
            "select api.delete_project(%s)",
        ):
            assert (
                savepointed(
                    conn, statement, (theirs,), expected=(psycopg.DatabaseError,)
                )
                is None
            )
        made = conn.execute(
            "select * from api.create_project('via postgrest')"
        ).fetchone()
        assert made["workspace_id"] == a.ws.id
    row = world.admin.execute(
        "select name from cajex.projects where id = %s", (theirs,)
    ).fetchone()
    assert row["name"] == b.projects[0]["name"]


# -- datasets of random shape ------------------------------------------------------------


@settings(
    deadline=None,
    max_examples=6,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    shape=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 2)), min_size=2, max_size=4
    ),
    role=st.sampled_from(["owner", "admin", "member", "viewer"]),
)
def test_cannot_see_other_tenants_in_random_datasets(world, tables, shape, role):
    """However many tenants and rows exist, each member sees only their own workspace's rows."""
    tenants = [fill_tenant(world, projects=p, jobs=j) for p, j in shape]
    for tenant in tenants:
        user = tenant.members[role]
        with (
            world.app_connection() as conn,
            db.in_context(conn, user.token(), tenant.ws.slug) as opened,
        ):
            assert opened.workspace_id == tenant.ws.id
            assert leaks(conn, tables, {}, user.id, tenant.ws.id) == []
            names = {
                r["name"]
                for r in conn.execute("select name from cajex.projects").fetchall()
            }
            assert names == {p["name"] for p in tenant.projects}


@pytest.mark.parametrize(
    "mangle",
    [
        lambda token, slug: (token + "'; set role postgres; --", slug),
        lambda token, slug: (token + "\\", slug),
        lambda token, slug: (token.replace(".", ".'", 1), slug),
        lambda token, slug: (token, slug + "'; select 1; --"),
        lambda token, slug: (token, slug + "\\"),
        lambda token, slug: (token, slug.upper()),
    ],
    ids=[
        "quote_in_credential",
        "backslash_in_credential",
        "quote_in_session_id",
        "quote_in_slug",
        "backslash_in_slug",
        "uppercase_slug",
    ],
)
def test_cannot_open_a_context_with_quotes_or_escapes_in_its_parts(
    world, dataset, mangle
):
    """A credential or slug outside the expected alphabet travels quoted and opens nothing."""
    victim = dataset.tenants[0]
    user = victim.members["owner"]
    token, slug = mangle(user.token(), victim.ws.slug)
    with world.app_connection() as conn:
        with db.in_context(conn, token, slug) as opened:
            assert not opened.opened or opened.workspace_id is None
            assert (
                conn.execute("select count(*) as n from cajex.projects").fetchone()["n"]
                == 0
            )
            assert (
                conn.execute("select current_user as u").fetchone()["u"] == "cajex_app"
            )
        # The connection is unharmed: the genuine credential opens next.
        with db.in_context(conn, user.token(), victim.ws.slug) as opened:
            assert opened.workspace_id == victim.ws.id


def test_a_seal_does_not_outlive_its_transaction_or_leave_its_backend(world):
    """A genuine seal, set again in the connection's next transaction or on
    another connection, opens nothing; in its own transaction it holds."""
    ws = world.workspace(plan="team")
    world.project(ws, name="Ours")
    count = "select count(*) as n from cajex.projects"
    with world.app_connection() as conn, world.app_connection() as other:
        with db.in_context(conn, ws.owner.token(), ws.slug) as opened:
            assert opened.workspace_id == ws.id
            sealed = conn.execute(
                "select current_setting('cajex.context') as c"
            ).fetchone()["c"]
            conn.execute("select set_config('cajex.context', %s, true)", (sealed,))
            assert conn.execute(count).fetchone()["n"] == 1
        for again in (conn, other):
            with again.transaction():
                again.execute("select set_config('cajex.context', %s, true)", (sealed,))
                assert again.execute(count).fetchone()["n"] == 0
                assert (
                    again.execute("select cajex.current_user_id() as u").fetchone()["u"]
                    is None
                )
            # Set for the whole session, it fares no better.
            again.execute("select set_config('cajex.context', %s, false)", (sealed,))
            assert again.execute(count).fetchone()["n"] == 0
            again.rollback()


def test_a_new_seal_key_closes_open_contexts_and_new_ones_open(world, db_urls):
    """`cajex keys rotate-seal`: a transaction opened before it sees nothing
    after it; the next opening works as before, and a second run rotates
    again."""
    import json

    from click.testing import CliRunner

    from cajex import cli as cli_module

    if "keys" not in cli_module.cli.commands:
        cli_module._register_areas()
    ws = world.workspace(plan="team")
    world.project(ws, name="Ours")
    count = "select count(*) as n from cajex.projects"
    runs = []
    with world.app_connection() as conn:
        with db.in_context(conn, ws.owner.token(), ws.slug):
            assert conn.execute(count).fetchone()["n"] == 1
            for _ in range(2):
                done = CliRunner().invoke(
                    cli_module.cli,
                    ["keys", "rotate-seal", "--database-admin-url", db_urls["admin"]],
                )
                assert done.exit_code == 0, done.output
                runs.append(json.loads(done.output.strip().splitlines()[-1]))
            assert conn.execute(count).fetchone()["n"] == 0
            assert (
                conn.execute("select cajex.current_user_id() as u").fetchone()["u"]
                is None
            )
        with db.in_context(conn, ws.owner.token(), ws.slug) as opened:
            assert opened.workspace_id == ws.id
            assert conn.execute(count).fetchone()["n"] == 1
    assert (
        all(r["rotated"] for r in runs)
        and runs[0]["created_at"] <= runs[1]["created_at"]
    )
    refused = CliRunner().invoke(
        cli_module.cli, ["keys", "rotate-seal", "--database-admin-url", db_urls["app"]]
    )
    assert refused.exit_code != 0 and "cajex_owner" in refused.output


def test_credentials_never_appear_in_statement_text(world):
    """Another session of the same role reads every backend's current
    statement in pg_stat_activity: a browser's session secret and a signed
    token travel as bind parameters, so they are never there."""
    ws = world.workspace(plan="team")
    user = ws.owner
    job_token = context.service_token(world.secret, ws.id, "text-check")
    with world.app_connection() as conn, world.app_connection() as spy:
        spy.autocommit = True
        pid = conn.info.backend_pid
        for token, ref in ((user.token(), ws.slug), (job_token, str(ws.id))):
            with db.in_context(conn, token, ref) as opened:
                assert opened.workspace_id == ws.id
                text = spy.execute(
                    "select query from pg_stat_activity where pid = %s", (pid,)
                ).fetchone()["query"]
                assert "$1" in text
                assert token not in text
                assert token.rsplit(".", 1)[-1] not in text
        opened, rows = db.commit_with(
            conn, user.token(), ws.slug, "select 1 as one", expect=ws.id
        )
        assert opened.workspace_id == ws.id and rows == [{"one": 1}]
        text = spy.execute(
            "select query from pg_stat_activity where pid = %s", (pid,)
        ).fetchone()["query"]
        assert user.session_secret not in text


def test_a_swallowed_database_error_commits_nothing(world):
    """A body that catches a failed statement and goes on gets an error, not a silent rollback."""
    ws = world.workspace(plan="team")
    with world.app_connection() as conn:
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            with db.in_context(conn, ws.owner.token(), ws.slug):
                conn.execute(
                    "select * from cajex.create_project('kept?', '', '{}', 'active')"
                )
                try:
                    conn.execute("select 1 / 0")
                except psycopg.errors.DivisionByZero:
                    pass
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with db.in_context(conn, ws.owner.token(), ws.slug) as opened:
            assert opened.workspace_id == ws.id
    names = world.admin.execute(
        "select name from cajex.projects where workspace_id = %s", (ws.id,)
    ).fetchall()
    assert names == []


@pytest.mark.parametrize(
    "call",
    [
        "select cajex.seat_count(%(b)s)",
        "select cajex_private.set_member_groups(%(b)s, %(user)s, 'sso', array['eng'])",
        "select cajex_private.recompute_member_role(%(b)s, %(user)s)",
        "select cajex_private.email_branding(%(b)s)",
    ],
    ids=["seat_count", "set_member_groups", "recompute_member_role", "email_branding"],
)
def test_cannot_call_helpers_that_answer_for_any_workspace_id(world, call):
    """Helpers that take a workspace id and bypass RLS are the functions' own."""
    a, b = world.workspace(plan="enterprise"), world.workspace(plan="enterprise")
    with world.app_connection() as conn:
        with pytest.raises(
            (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedFunction)
        ):
            with world.as_user(a.owner, a, conn=conn) as (c, _):
                c.execute(call, {"b": b.id, "user": b.owner.id})
    # What a request may ask instead: its own workspace's seats.
    with world.as_user(a.owner, a) as (conn, _):
        assert (
            conn.execute("select cajex.context_seat_count() as n").fetchone()["n"] == 1
        )
    assert (
        world.admin.execute(
            "select count(*) as n from cajex.member_group_facts where workspace_id = %s",
            (b.id,),
        ).fetchone()["n"]
        == 0
    )


def test_cannot_read_or_cancel_another_workspaces_subscription_without_its_job(world):
    """The deletion follow-up's billing functions are the worker's, and even
    the worker gets nothing without the running job of that workspace."""
    a, b = world.workspace(plan="basic"), world.workspace(plan="basic")
    world.admin.execute(
        "insert into cajex.workspace_billing (workspace_id, stripe_customer_id,"
        " stripe_subscription_id, subscription_status) values (%s, 'cus_b', 'sub_b', 'active')"
        " on conflict (workspace_id) do update set stripe_customer_id = 'cus_b',"
        " stripe_subscription_id = 'sub_b', subscription_status = 'active'",
        (b.id,),
    )
    job = world.admin.execute(
        "insert into cajex.outbox (workspace_id, kind, started_at)"
        " values (%s, 'email.send', now()) returning id",
        (b.id,),
    ).fetchone()["id"]
    with world.app_connection() as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with world.as_user(a.owner, a, conn=conn) as (c, _):
                c.execute(
                    "select * from cajex_private.deletion_billing_state(%s, false, %s)",
                    (b.id, job),
                )
    with world.worker_connection() as conn:
        for deleted in (False, True):
            assert (
                conn.execute(
                    "select * from cajex_private.deletion_billing_state(%s, %s, %s)",
                    (b.id, deleted, job),
                ).fetchall()
                == []
            )
        with pytest.raises(psycopg.Error) as err:
            conn.execute(
                "select cajex_private.record_deletion_cancel(%s, true, %s)", (b.id, job)
            )
        assert err.value.sqlstate == "CXNFD"
    row = world.admin.execute(
        "select cancel_at_period_end, cancel_reason from cajex.workspace_billing"
        " where workspace_id = %s",
        (b.id,),
    ).fetchone()
    assert row == {"cancel_at_period_end": False, "cancel_reason": None}


SIGNIN_ONLY = [
    "cajex_private.create_session(uuid, bytea, text, interval, interval, text, uuid, uuid, text, text)",
    "cajex_private.revoke_sessions(uuid, text, uuid, uuid, text)",
    "cajex_private.ensure_user(text, text)",
    "cajex_private.signin_with_identity(text, text, text, text, boolean, text)",
    "cajex_private.link_identity(uuid, text, text, text, text, boolean, boolean)",
    "cajex_private.dev_mailbox(integer)",
]
WORKER_ONLY = [
    "cajex_private.claim_outbox(integer, interval)",
    "cajex_private.claim_outbox_row(bigint, interval)",
    "cajex_private.release_outbox(bigint[])",
    "cajex_private.finish_outbox_job(bigint, text)",
    "cajex_private.take_outbox_effect(bigint)",
    "cajex_private.record_heartbeat(bigint)",
    "cajex_private.email_delivery_of(bigint)",
    "cajex_private.record_email_delivery(bigint, uuid, text, text, text, text, text, text, text)",
    "cajex_private.due_export_expiries(integer)",
    "cajex_private.expire_export(uuid, uuid)",
    "cajex_private.deletion_billing_state(uuid, boolean, bigint)",
    "cajex_private.record_deletion_cancel(uuid, boolean, bigint)",
]


@pytest.mark.parametrize(
    ("function", "holder"),
    [(f, "cajex_signin") for f in SIGNIN_ONLY]
    + [(f, "cajex_worker") for f in WORKER_ONLY],
)
def test_cannot_vouch_for_identities_or_work_the_job_queue_as_a_request(
    world, function, holder
):
    """Opening sessions, linking identities and provisioning from SSO are the
    sign-in pages' (cajex_signin); the job queue, with every workspace's
    payloads, is the worker's (cajex_worker). The request roles have neither."""

    def may(role: str) -> bool:
        return world.admin.execute(
            "select has_function_privilege(%s, %s, 'execute') as ok", (role, function)
        ).fetchone()["ok"]

    assert may(holder)
    for role in ("cajex_app", "cajex_api", "cajex_anon", "cajex_authenticator"):
        assert not may(role), role
    other = "cajex_worker" if holder == "cajex_signin" else "cajex_signin"
    assert not may(other)


def test_cannot_sign_in_as_another_workspaces_owner_from_a_request(world):
    """From A's transaction, a request can neither open a session for B's
    owner, nor read the queued email that carries B's invitation links,
    nor become the roles that can."""
    a, b = world.workspace(plan="team"), world.workspace(plan="team")
    attempts = [
        (
            "select cajex_private.create_session(%s, %s, 'password')",
            (b.owner.id, b"\x00" * 32),
        ),
        ("select * from cajex_private.claim_outbox(100, '1 hour'::interval)", ()),
        ("set role cajex_signin", ()),
        ("set role cajex_worker", ()),
    ]
    for query, params in attempts:
        with world.app_connection() as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                with world.as_user(a.owner, a, conn=conn) as (c, _):
                    c.execute(query, params)
    sessions = world.admin.execute(
        "select count(*) as n from cajex.sessions where user_id = %s", (b.owner.id,)
    ).fetchone()["n"]
    assert sessions == 1  # the factory's own
    # The sign-in role opens sessions and still reads workspaces only through RLS.
    with psycopg.connect(world.signin_url, row_factory=dict_row) as conn:
        assert conn.execute(
            "select cajex_private.create_session(%s, %s, 'password') as id",
            (a.owner.id, b"\x01" * 32),
        ).fetchone()["id"]
        assert (
            conn.execute("select count(*) as n from cajex.projects").fetchone()["n"]
            == 0
        )


def _subscription(sub: str, plan: str, status: str = "active") -> dict:
    return {
        "subscription_id": sub,
        "item_id": "si_1",
        "status": status,
        "plan": plan,
        "quantity": 3,
        "current_period_end": 1900000000,
        "cancel_at_period_end": False,
    }


def _billing_of(world, workspace) -> dict:
    return world.admin.execute(
        "select w.plan, b.stripe_subscription_id, b.subscription_status, b.seats_paid"
        " from cajex.workspaces w join cajex.workspace_billing b on b.workspace_id = w.id"
        " where w.id = %s",
        (workspace.id,),
    ).fetchone()


def test_stripe_events_are_applied_by_the_webhooks_login_alone(world):
    """Applying a Stripe event acts on whichever workspace has its customer,
    so only cajex_webhook may; that login reads no table and is no request
    role."""
    function = "cajex_private.apply_stripe_event(text, text, bigint, text, jsonb)"

    def may(role: str) -> bool:
        return world.admin.execute(
            "select has_function_privilege(%s, %s, 'execute') as ok", (role, function)
        ).fetchone()["ok"]

    assert may("cajex_webhook")
    for role in (
        "cajex_app",
        "cajex_signin",
        "cajex_worker",
        "cajex_api",
        "cajex_anon",
        "cajex_authenticator",
    ):
        assert not may(role), role
    a = world.workspace(plan="team")
    world.project(a)
    with psycopg.connect(world.webhook_url, row_factory=dict_row) as conn:
        for query in (
            "select count(*) from cajex.projects",
            "select count(*) from cajex.workspace_billing",
            "select count(*) from cajex_private.stripe_events",
            "set role cajex_app",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(query)
            conn.rollback()


def test_cannot_move_another_workspaces_plan_from_a_request(world):
    """From A's transaction, a forged Stripe event naming B's customer is
    refused, and recording a subscription the API returned lands on A's own
    customer whatever the answer says; B's billing is untouched."""
    a, b = world.workspace(plan="free"), world.workspace(plan="team")
    world.admin.execute(
        "update cajex.workspace_billing set stripe_customer_id = 'cus_A1' where workspace_id = %s",
        (a.id,),
    )
    world.admin.execute(
        "update cajex.workspace_billing set stripe_customer_id = 'cus_B1',"
        " stripe_subscription_id = 'sub_B1', subscription_status = 'active'"
        " where workspace_id = %s",
        (b.id,),
    )
    before = _billing_of(world, b)
    forged = json.dumps(_subscription("sub_B1", "free", "canceled"))
    with world.app_connection() as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with world.as_user(a.owner, a, conn=conn) as (c, _):
                c.execute(
                    "select cajex_private.apply_stripe_event('evt_forged',"
                    " 'customer.subscription.deleted', 1, 'cus_B1', %s::jsonb)",
                    (forged,),
                )
        answer = dict(_subscription("sub_A2", "pro"), customer_id="cus_B1")
        with world.as_user(a.owner, a, conn=conn) as (c, _):
            outcome = c.execute(
                "select cajex.record_subscription('customer.subscription.created', 2, %s::jsonb) as o",
                (json.dumps(answer),),
            ).fetchone()["o"]
    assert outcome == "applied"
    assert _billing_of(world, b) == before
    assert _billing_of(world, a) == {
        "plan": "pro",
        "stripe_subscription_id": "sub_A2",
        "subscription_status": "active",
        "seats_paid": 3,
    }


def test_recording_a_subscription_needs_billing_rights_and_a_customer(world):
    a = world.workspace(plan="free")
    admin = world.member(a, role="admin")
    answer = json.dumps(_subscription("sub_A1", "team"))
    record = "select cajex.record_subscription('customer.subscription.created', 1, %s::jsonb)"
    cases = [
        (admin, a, "CXFBD"),  # owners manage billing
        (a.owner, None, "CXNCX"),  # no workspace open
        (a.owner, a, "CXINV"),  # no Stripe customer yet
    ]
    for user, workspace, sqlstate in cases:
        with pytest.raises(psycopg.Error) as info:
            with world.as_user(user, workspace) as (c, _):
                c.execute(record, (answer,))
        assert info.value.sqlstate == sqlstate, (sqlstate, str(info.value))
    world.admin.execute(
        "update cajex.workspace_billing set stripe_customer_id = 'cus_A1' where workspace_id = %s",
        (a.id,),
    )
    for kind, obj in (
        ("invoice.paid", _subscription("sub_A1", "team")),
        ("customer.subscription.created", {"plan": "team"}),
        ("customer.subscription.created", dict(_subscription("x", "team"))),
    ):
        with pytest.raises(psycopg.Error) as info:
            with world.as_user(a.owner, a) as (c, _):
                c.execute(
                    "select cajex.record_subscription(%s, 1, %s::jsonb)",
                    (kind, json.dumps(obj)),
                )
        assert info.value.sqlstate == "CXINV", (kind, obj)
    assert _billing_of(world, a)["plan"] == "free"


def test_cannot_use_request_roles_to_write_tables_directly(world, tables):
    """cajex_app holds no insert, update or delete privilege on any workspace-owned table."""
    for role in ("cajex_app", "cajex_api", "cajex_anon", "cajex_authenticator"):
        for schema, table in tables:
            for privilege in ("INSERT", "UPDATE", "DELETE", "TRUNCATE"):
                granted = world.admin.execute(
                    "select has_table_privilege(%s, %s, %s) as g",
                    (role, f"{schema}.{table}", privilege),
                ).fetchone()["g"]
                assert not granted, (role, schema, table, privilege)


assert DENIED  # the refusals the probes accept are only privilege errors
