"""Envelope encryption (cajex.crypto): each property as a test, each allow beside a deny."""

from __future__ import annotations

import os
import subprocess
import uuid

import psycopg
import pytest

from cajex import crypto

T, C = "cajex.ai_settings", "api_key"


@pytest.fixture
def master():
    return crypto.Keyring(crypto.LocalMasterKey(os.urandom(32)))


@pytest.fixture
def two(world):
    return world.workspace(plan="pro"), world.workspace(plan="pro")


def enc(world, ws, master, plaintext, table=T, column=C, row=None):
    with world.as_user(ws.owner, ws) as (conn, _):
        return crypto.encrypt(
            conn, master, ws.id, table, column, row or str(ws.id), plaintext
        )


def dec(world, ws, master, blob, table=T, column=C, row=None, user=None):
    with world.as_user(user or ws.owner, ws) as (conn, _):
        return crypto.decrypt(
            conn, master, ws.id, table, column, row or str(ws.id), blob
        )


def test_round_trip_creates_one_data_key_on_demand(world, two, master):
    a, _ = two
    blob = enc(world, a, master, "sk-live-123456")
    assert dec(world, a, master, blob) == b"sk-live-123456"
    assert b"sk-live" not in blob
    rows = world.admin.execute(
        "select version, state from cajex.workspace_keys where workspace_id = %s",
        (a.id,),
    ).fetchall()
    assert rows == [{"version": 1, "state": "active"}]
    enc(world, a, master, "again")
    assert (
        world.admin.execute(
            "select count(*) as n from cajex.workspace_keys where workspace_id = %s",
            (a.id,),
        ).fetchone()["n"]
        == 1
    )


def test_each_workspace_has_its_own_data_key(world, two, master):
    a, b = two
    enc(world, a, master, "x")
    enc(world, b, master, "y")
    keys = world.admin.execute(
        "select workspace_id, wrapped_key from cajex.workspace_keys"
    ).fetchall()
    unwrapped = {master.unwrap(bytes(k["wrapped_key"])) for k in keys}
    assert len(keys) == 2 and len(unwrapped) == 2


def test_cross_workspace_copy_fails(world, two, master):
    a, b = two
    enc(world, b, master, "b's own")  # b has a data key too
    blob = enc(world, a, master, "a's secret")
    # Opened in b's context as if it were b's cell: an error, never a plaintext.
    with pytest.raises(crypto.CryptoError):
        with world.as_user(b.owner, b) as (conn, _):
            crypto.decrypt(conn, master, b.id, T, C, str(a.id), blob)
    with pytest.raises(crypto.CryptoError):
        with world.as_user(b.owner, b) as (conn, _):
            crypto.decrypt(conn, master, b.id, T, C, str(b.id), blob)


def test_reading_another_workspaces_key_through_a_foreign_context_fails(
    world, two, master
):
    a, b = two
    blob = enc(world, a, master, "a's secret")
    # b's owner names a's workspace id: RLS hides a's data key.
    with pytest.raises(crypto.KeyUnavailable):
        with world.as_user(b.owner, b) as (conn, _):
            crypto.decrypt(conn, master, a.id, T, C, str(a.id), blob)


def test_cross_column_and_cross_row_copies_fail(world, two, master):
    a, _ = two
    blob = enc(world, a, master, "secret", row="row-1")
    assert dec(world, a, master, blob, row="row-1") == b"secret"
    with pytest.raises(crypto.DecryptionError):
        dec(world, a, master, blob, column="client_secret", row="row-1")
    with pytest.raises(crypto.DecryptionError):
        dec(world, a, master, blob, table="cajex.sso_connections", row="row-1")
    with pytest.raises(crypto.DecryptionError):
        dec(world, a, master, blob, row="row-2")


def test_a_flipped_bit_anywhere_fails(world, two, master):
    a, _ = two
    blob = enc(world, a, master, "flip me")
    with world.as_user(a.owner, a) as (conn, _):
        for i in range(len(blob) * 8):
            bad = bytearray(blob)
            bad[i // 8] ^= 1 << (i % 8)
            with pytest.raises(crypto.CryptoError):
                crypto.decrypt(conn, master, a.id, T, C, str(a.id), bytes(bad))
        # Truncated and extended copies fail too.
        for bad in (blob[:-1], blob + b"\0", blob[:10]):
            with pytest.raises(crypto.CryptoError):
                crypto.decrypt(conn, master, a.id, T, C, str(a.id), bad)


def test_a_tampered_wrapped_key_fails(world, two, master):
    a, _ = two
    blob = enc(world, a, master, "s")
    world.admin.execute(
        "update cajex.workspace_keys set wrapped_key = set_byte(wrapped_key, 20,"
        " get_byte(wrapped_key, 20) # 1) where workspace_id = %s",
        (a.id,),
    )
    with pytest.raises(crypto.DecryptionError):
        dec(world, a, master, blob)


def test_100000_encryptions_never_repeat_a_nonce():
    key = os.urandom(32)
    ws = uuid.uuid4()
    nonces = set()
    for _ in range(100_000):
        blob = crypto.seal(key, 1, ws, T, C, "r", b"same plaintext")
        nonces.add(blob[5:17])
    assert len(nonces) == 100_000


def test_a_viewer_cannot_create_the_workspaces_data_key(world, two, master):
    a, _ = two
    viewer = world.member(a, role="viewer")
    with pytest.raises(psycopg.Error) as err:
        with world.as_user(viewer, a) as (conn, _):
            crypto.encrypt(conn, master, a.id, T, C, str(a.id), "x")
    assert err.value.sqlstate == "CXFBD"


def test_plain_sql_cannot_write_data_keys(world, two, master):
    a, b = two
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        with world.as_user(a.owner, a) as (conn, _):
            conn.execute(
                "insert into cajex.workspace_keys (workspace_id, version, wrapped_key, master_key_id)"
                " values (%s, 9, '\\x00', 'x')",
                (b.id,),
            )


def test_master_rotation_rewraps_keys_and_keeps_secrets_readable(world, two, master):
    a, b = two
    blob_a, blob_b = enc(world, a, master, "alpha"), enc(world, b, master, "bravo")
    before = world.admin.execute(
        "select workspace_id, wrapped_key from cajex.workspace_keys"
    ).fetchall()
    new = crypto.Keyring(crypto.LocalMasterKey(os.urandom(32)), (master.current,))
    assert crypto.rotate_master(world.admin, new) == 2
    assert crypto.rotate_master(world.admin, new) == 0  # safe to run twice
    after = world.admin.execute(
        "select master_key_id, wrapped_key from cajex.workspace_keys"
    ).fetchall()
    assert {r["master_key_id"] for r in after} == {new.key_id}
    assert not {bytes(r["wrapped_key"]) for r in before} & {
        bytes(r["wrapped_key"]) for r in after
    }
    # Secrets untouched, readable with the new master alone.
    only_new = crypto.Keyring(new.current)
    assert dec(world, a, only_new, blob_a) == b"alpha"
    assert dec(world, b, only_new, blob_b) == b"bravo"
    with pytest.raises(crypto.CryptoError):
        dec(world, a, master, blob_a)


def test_master_rotation_interrupted_resumes(world, two, master, monkeypatch):
    a, b = two
    blob_a, blob_b = enc(world, a, master, "alpha"), enc(world, b, master, "bravo")
    new = crypto.Keyring(crypto.LocalMasterKey(os.urandom(32)), (master.current,))
    real_wrap, calls = new.wrap, []

    def failing_wrap(key):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("interrupted")
        return real_wrap(key)

    monkeypatch.setattr(new, "wrap", failing_wrap)
    with pytest.raises(RuntimeError):
        crypto.rotate_master(world.admin, new)
    monkeypatch.setattr(new, "wrap", real_wrap)
    ids = [
        r["master_key_id"]
        for r in world.admin.execute("select master_key_id from cajex.workspace_keys")
    ]
    assert sorted(ids) == sorted([new.key_id, master.key_id])
    # Both secrets open mid-way, and the rerun finishes the one left.
    assert (
        dec(world, a, new, blob_a) == b"alpha"
        and dec(world, b, new, blob_b) == b"bravo"
    )
    assert crypto.rotate_master(world.admin, new) == 1
    assert dec(world, a, crypto.Keyring(new.current), blob_a) == b"alpha"


@pytest.fixture
def stored_secrets(world, two, master):
    """Two workspaces each with a secret stored in a registered column."""
    world.admin.execute(
        "create table cajex.crypto_test_secrets (workspace_id uuid not null"
        " references cajex.workspaces (id), id text not null, secret bytea,"
        " primary key (workspace_id, id))"
    )
    world.admin.execute("alter table cajex.crypto_test_secrets owner to cajex_owner")
    world.admin.execute(
        "alter table cajex.crypto_test_secrets enable row level security"
    )
    world.admin.execute(
        "alter table cajex.crypto_test_secrets force row level security"
    )
    for cmd in ("select", "insert", "update"):
        world.admin.execute(
            f"create policy p_{cmd} on cajex.crypto_test_secrets for {cmd} "
            + ("with check" if cmd == "insert" else "using")
            + " (workspace_id = (select cajex.current_workspace_id()))"
        )
    world.admin.execute("grant select on cajex.crypto_test_secrets to cajex_app")
    world.admin.execute(
        "select cajex_private.register_encrypted_column("
        "'cajex.crypto_test_secrets', 'secret', '{id}')"
    )
    table = "cajex.crypto_test_secrets"
    out = {}
    for ws in two:
        for i in range(5):
            plain = f"{ws.slug}-secret-{i}"
            blob = enc(
                world, ws, master, plain, table=table, column="secret", row=f"r{i}"
            )
            world.admin.execute(
                "insert into cajex.crypto_test_secrets values (%s, %s, %s)",
                (ws.id, f"r{i}", blob),
            )
            out[(ws.slug, f"r{i}")] = plain
    return table, out


def read_all(world, ws, master, table):
    with world.as_job(ws) as (conn, _):
        rows = conn.execute(f"select id, secret from {table}").fetchall()
        return {
            r["id"]: crypto.decrypt(
                conn, master, ws.id, table, "secret", r["id"], bytes(r["secret"])
            ).decode()
            for r in rows
        }


def versions(world, ws, table):
    rows = world.admin.execute(
        f"select secret from {table} where workspace_id = %s", (ws.id,)
    )
    return sorted(crypto.key_version_of(bytes(r["secret"])) for r in rows)


def test_data_key_rotation_reencrypts_one_workspaces_secrets(
    world, two, master, stored_secrets
):
    a, b = two
    table, plain = stored_secrets
    b_before = world.admin.execute(
        f"select secret from {table} where workspace_id = %s", (b.id,)
    ).fetchall()
    result = crypto.rotate_workspace_key(
        lambda: world.as_job(a, "keys"), master, a.id, batch=2
    )
    assert result == {"version": 2, "reencrypted": 5, "resumed": False}
    assert versions(world, a, table) == [2] * 5
    assert read_all(world, a, master, table) == {
        k[1]: v for k, v in plain.items() if k[0] == a.slug
    }
    # The other workspace is untouched.
    assert (
        world.admin.execute(
            f"select secret from {table} where workspace_id = %s", (b.id,)
        ).fetchall()
        == b_before
    )
    assert read_all(world, b, master, table) == {
        k[1]: v for k, v in plain.items() if k[0] == b.slug
    }
    # Running again rotates again, and everything still opens.
    again = crypto.rotate_workspace_key(lambda: world.as_job(a, "keys"), master, a.id)
    assert again["version"] == 3 and versions(world, a, table) == [3] * 5
    assert len(read_all(world, a, master, table)) == 5


def test_data_key_rotation_interrupted_resumes_without_a_new_key(
    world, two, master, stored_secrets
):
    a, _ = two
    table, plain = stored_secrets

    def stop(count):
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        crypto.rotate_workspace_key(
            lambda: world.as_job(a, "keys"), master, a.id, batch=2, _after_batch=stop
        )
    assert versions(world, a, table) == [1, 1, 1, 2, 2]
    assert len(read_all(world, a, master, table)) == 5  # readable mid-way
    result = crypto.rotate_workspace_key(lambda: world.as_job(a, "keys"), master, a.id)
    assert result == {"version": 2, "reencrypted": 3, "resumed": True}
    assert versions(world, a, table) == [2] * 5
    assert read_all(world, a, master, table) == {
        k[1]: v for k, v in plain.items() if k[0] == a.slug
    }


def test_only_a_job_may_rotate_a_data_key(world, two, master, stored_secrets):
    a, _ = two
    with pytest.raises(psycopg.Error) as err:
        crypto.rotate_workspace_key(lambda: world.as_user(a.owner, a), master, a.id)
    assert err.value.sqlstate == "CXFBD"


def test_rewrite_secret_cannot_reach_another_workspace(
    world, two, master, stored_secrets
):
    a, b = two
    table, _ = stored_secrets
    theirs = world.admin.execute(
        f"select id, secret from {table} where workspace_id = %s limit 1", (b.id,)
    ).fetchone()
    with world.as_job(a) as (conn, _):
        ok = conn.execute(
            "select cajex_private.rewrite_secret(%s, 'secret', %s::jsonb, %s, '\\x00')"
            " as ok",
            (table, f'{{"id": "{theirs["id"]}"}}', theirs["secret"]),
        ).fetchone()
    assert ok["ok"] is False
    assert (
        world.admin.execute(
            f"select secret from {table} where workspace_id = %s and id = %s",
            (b.id, theirs["id"]),
        ).fetchone()["secret"]
        == theirs["secret"]
    )


def test_purge_destroys_keys_and_secrets_become_unreadable(world, two, master):
    a, b = two
    blob_a, blob_b = enc(world, a, master, "alpha"), enc(world, b, master, "bravo")
    # A live workspace keeps its keys.
    with pytest.raises(psycopg.Error) as err:
        with world.as_user(b.owner, b) as (conn, _):
            crypto.destroy_workspace_keys(conn, a.id)
    assert err.value.sqlstate == "CXINV"
    world.admin.execute(
        "update cajex.workspaces set status = 'deleted', deleted_at = now(),"
        " purge_after = now() - interval '1 day' where id = %s",
        (a.id,),
    )
    with world.app_connection() as conn:
        assert crypto.destroy_workspace_keys(conn, a.id) == 1
        conn.commit()
    assert (
        world.admin.execute(
            "select count(*) as n from cajex.workspace_keys where workspace_id = %s",
            (a.id,),
        ).fetchone()["n"]
        == 0
    )
    # Even with every privilege, the ciphertext no longer opens.
    world.admin.execute(
        "update cajex.workspaces set status = 'active', deleted_at = null,"
        " purge_after = null where id = %s",
        (a.id,),
    )
    with pytest.raises(crypto.KeyUnavailable):
        dec(world, a, master, blob_a)
    assert dec(world, b, master, blob_b) == b"bravo"


def test_a_database_dump_holds_no_plaintext_key(world, two, db_urls):
    """The real pg_dump of the whole database (schema and data) holds no API key, data key or master key."""
    from cajex.ai import settings as ai_settings

    a, _ = two
    master_bytes = os.urandom(32)
    master = crypto.Keyring(crypto.LocalMasterKey(master_bytes))
    secret = "sk-ant-PLAINTEXT-never-in-a-dump-" + os.urandom(8).hex()
    with world.as_user(a.owner, a) as (conn, _):
        ai_settings.save(conn, master, a.id, {"budget_tokens": 1000}, api_key=secret)
    stored = world.admin.execute(
        "select api_key, api_key_last4 from cajex.ai_settings where workspace_id = %s",
        (a.id,),
    ).fetchone()
    assert (
        stored["api_key"] is not None and stored["api_key_last4"] == "…" + secret[-4:]
    )
    dump = subprocess.run(
        ["pg_dump", "--no-owner", db_urls["admin"]], capture_output=True, check=True
    ).stdout
    assert b"cajex.ai_settings" in dump and b"cajex.workspace_keys" in dump
    assert secret.encode() not in dump and secret[:-4].encode() not in dump
    # Nor anything that would open it: the data key (raw, hex or base64) or the master key.
    data_key = master.unwrap(
        bytes(
            world.admin.execute(
                "select wrapped_key from cajex.workspace_keys where workspace_id = %s",
                (a.id,),
            ).fetchone()["wrapped_key"]
        )
    )
    import base64

    for key in (data_key, master_bytes):
        for form in (key, key.hex().encode(), base64.b64encode(key)):
            assert form not in dump


def test_master_key_forms(tmp_path):
    hexkey = os.urandom(32).hex()
    path = tmp_path / "master.key"
    path.write_text(hexkey + "\n")

    class S:
        master_key = hexkey
        extra = {}

    a = crypto.master_key_from_settings(S)
    S.master_key = str(path)
    b = crypto.master_key_from_settings(S)
    assert a.key_id == b.key_id
    S.master_key = "m" * 64
    c = crypto.master_key_from_settings(S)
    assert c.key_id != a.key_id
    S.master_key = "short"
    with pytest.raises(crypto.CryptoError) as err:
        crypto.master_key_from_settings(S)
    assert "short" not in str(err.value)
    assert hexkey not in repr(a)
