"""Envelope encryption for every secret cajex stores.

Contract
--------
Each workspace has its own 256-bit data key, stored in cajex.workspace_keys
only wrapped by a master key that lives outside the database. Secrets are
sealed with AES-GCM-256 under the workspace's data key::

    master = master_key_from_settings(settings)
    blob = encrypt(conn, master, workspace_id, "cajex.ai_settings", "api_key", row_id, "sk-...")
    plain = decrypt(conn, master, workspace_id, "cajex.ai_settings", "api_key", row_id, blob)

`conn` must be inside that workspace's verified context (cajex.db.in_context
or as_service): the data key rows are read through RLS, and `encrypt`
creates the workspace's first data key on demand (permission
`secrets.write`: owners, admins and jobs). `table` is the schema-qualified
table, `column` the bytea column, `row_id` the text values of the columns
registered as the row's key, joined by '/'. Register every encrypted column
once in a versioned migration (functions are applied after those, hence the
plain insert; cajex_private.register_encrypted_column does the same, checked,
from a repeatable file)::

    alter table cajex_private.encrypted_columns no force row level security;
    insert into cajex_private.encrypted_columns (table_name, column_name, key_columns)
    values ('cajex.t', 'secret', '{id}') on conflict do nothing;
    alter table cajex_private.encrypted_columns force row level security;

so that data key rotation can find it (its table needs an update policy for
the context, as every writable table has).

Ciphertext format (bytes)::

    0x01 | key version (4 bytes, big endian) | nonce (12 bytes) | AES-GCM ct+tag

The nonce is 96 random bits, fresh for every call. The associated data binds
workspace, table, column, row id and key version, so a ciphertext copied to
another workspace, column or row, or with any bit flipped, raises
`DecryptionError`: never a wrong plaintext. Errors carry ids, never key
material or plaintext.

Master keys: `MasterKey` is three things (`key_id`, `wrap`, `unwrap`), easy
for a cloud KMS to implement. `LocalMasterKey` takes 32 bytes from
settings.master_key: 64 hex characters, a path to a file holding those (or 32
raw bytes), or failing both a passphrase of 32+ characters stretched with
HKDF-SHA256. Retired master keys (CAJEX_OLD_MASTER_KEYS, comma-separated,
same forms) stay readable so that a master rotation can be resumed.

Rotation (both resumable and safe to run twice; see cajex keys ...):

* `rotate_master(admin_conn, keyring)` re-wraps every data key not wrapped by
  the current master key; secrets are not touched.
* `rotate_workspace_key(open_tx, master)` makes a new data key active and
  re-encrypts the workspace's secrets in every registered column; a run that
  finds ciphertexts still under an old key finishes them instead of starting
  another rotation.

Purge: `destroy_workspace_keys(conn, workspace_id)` deletes the data keys of a
deleted workspace past its purge date; its ciphertexts, in backups too, can
then never be opened. Unwrapped data keys are never cached across calls,
never logged and never leave the process (no Redis, no job arguments).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import struct
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cajex import log

FORMAT_VERSION = 1
_HEADER = struct.Struct(">BI")
NONCE_BYTES = 12
_WRAP_AAD = b"cajex/data-key/v1"

_log = log.get("cajex.crypto")


class CryptoError(Exception):
    """Base class; messages name ids and never key material or plaintext."""


class DecryptionError(CryptoError):
    """The ciphertext is not authentic here (tampered, moved, or its key is gone)."""


class KeyUnavailable(CryptoError):
    """The data key or master key needed is missing (purged, or not configured)."""


class MasterKey(Protocol):
    """What wraps data keys. A cloud KMS implements the same three things."""

    key_id: str

    def wrap(self, data_key: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes) -> bytes: ...


class LocalMasterKey:
    """A master key held in memory: AES-GCM-256 wrapping with a random nonce."""

    def __init__(self, key: bytes):
        if len(key) != 32:
            raise CryptoError("a master key has 32 bytes")
        self._aead = AESGCM(key)
        # A fingerprint, not the key: SHA-256 of a 256-bit key reveals nothing.
        self.key_id = (
            "local:" + hashlib.sha256(b"cajex-master-id" + key).hexdigest()[:16]
        )

    def wrap(self, data_key: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data_key, _WRAP_AAD)

    def unwrap(self, wrapped: bytes) -> bytes:
        try:
            return self._aead.decrypt(
                wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _WRAP_AAD
            )
        except (InvalidTag, ValueError):
            raise DecryptionError(
                f"data key does not open with master key {self.key_id}"
            ) from None

    def __repr__(self) -> str:
        return f"LocalMasterKey({self.key_id})"


class Keyring:
    """The current master key plus retired ones, looked up by key id."""

    def __init__(self, current: MasterKey, retired: tuple[MasterKey, ...] = ()):
        self.current = current
        self.key_id = current.key_id
        self._by_id = {k.key_id: k for k in (*retired, current)}

    def wrap(self, data_key: bytes) -> bytes:
        return self.current.wrap(data_key)

    def unwrap(self, wrapped: bytes, key_id: str | None = None) -> bytes:
        key = self._by_id.get(key_id or self.key_id)
        if key is None:
            raise KeyUnavailable(f"master key {key_id} is not configured")
        return key.unwrap(wrapped)

    def __repr__(self) -> str:
        return f"Keyring({self.key_id}, {len(self._by_id) - 1} retired)"


def _parse_master(value: str) -> bytes:
    value = value.strip()
    if len(value) == 64 and all(c in "0123456789abcdefABCDEF" for c in value):
        return bytes.fromhex(value)
    if value and len(value) < 4096 and Path(value).is_file():
        raw = Path(value).read_bytes()
        text = raw.strip()
        if len(text) == 64:
            try:
                return bytes.fromhex(text.decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                pass
        if len(raw) == 32:
            return raw
        raise CryptoError("a master key file holds 64 hex characters or 32 bytes")
    if len(value) >= 32:
        return HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"cajex master key v1"
        ).derive(value.encode())
    raise CryptoError(
        "the master key is 64 hex characters, a key file, or a 32+ character secret"
    )


def master_key_from_settings(settings) -> Keyring:
    """The keyring from settings.master_key (and CAJEX_OLD_MASTER_KEYS, if set)."""
    if not getattr(settings, "master_key", ""):
        raise KeyUnavailable("no master key is configured (CAJEX_MASTER_KEY)")
    current = LocalMasterKey(_parse_master(settings.master_key))
    old = (getattr(settings, "extra", None) or {}).get(
        "old_master_keys"
    ) or os.environ.get("CAJEX_OLD_MASTER_KEYS", "")
    if isinstance(old, str):
        old = [v for v in old.split(",") if v.strip()]
    retired = tuple(LocalMasterKey(_parse_master(v)) for v in old)
    return Keyring(current, retired)


def _keyring(master) -> Keyring:
    return master if isinstance(master, Keyring) else Keyring(master)


# -- sealing -------------------------------------------------------------------


def _aad(workspace_id, table: str, column: str, row_id, key_version: int) -> bytes:
    # Length-prefixed fields: no two different tuples share an encoding.
    parts = [
        b"cajex/secret/v1",
        str(uuid.UUID(str(workspace_id))).encode(),
        table.encode(),
        column.encode(),
        str(row_id).encode(),
        str(key_version).encode(),
    ]
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def _row_key(conn, workspace_id, version: int | None):
    if version is None:
        sql = (
            "select version, wrapped_key, master_key_id from cajex.workspace_keys"
            " where workspace_id = %s and state = 'active'"
        )
        args = (workspace_id,)
    else:
        sql = (
            "select version, wrapped_key, master_key_id from cajex.workspace_keys"
            " where workspace_id = %s and version = %s"
        )
        args = (workspace_id, version)
    row = conn.execute(sql, args).fetchone()
    if row is None:
        return None
    if isinstance(row, dict):
        return row["version"], bytes(row["wrapped_key"]), row["master_key_id"]
    return row[0], bytes(row[1]), row[2]


def _active_key(conn, master: Keyring, workspace_id) -> tuple[int, bytes]:
    found = _row_key(conn, workspace_id, None)
    if found is None:
        fresh = AESGCM.generate_key(bit_length=256)
        row = conn.execute(
            "select * from cajex_private.ensure_workspace_key(%s, %s)",
            (master.wrap(fresh), master.key_id),
        ).fetchone()
        if row is None:
            raise KeyUnavailable(
                f"no data key could be created for workspace {workspace_id}"
            )
        found = (
            (row["version"], bytes(row["wrapped_key"]), row["master_key_id"])
            if isinstance(row, dict)
            else (row[0], bytes(row[1]), row[2])
        )
        _log.info(
            "crypto.data_key_created", workspace_id=str(workspace_id), version=found[0]
        )
    version, wrapped, master_id = found
    return version, master.unwrap(wrapped, master_id)


def seal(
    data_key: bytes,
    key_version: int,
    workspace_id,
    table: str,
    column: str,
    row_id,
    plaintext: bytes | str,
) -> bytes:
    """Encrypt with a given data key (the database-free half of `encrypt`)."""
    if isinstance(plaintext, str):
        plaintext = plaintext.encode()
    nonce = os.urandom(NONCE_BYTES)
    ct = AESGCM(data_key).encrypt(
        nonce, plaintext, _aad(workspace_id, table, column, row_id, key_version)
    )
    return _HEADER.pack(FORMAT_VERSION, key_version) + nonce + ct


def key_version_of(ciphertext: bytes) -> int:
    """The data key version a ciphertext was sealed with."""
    ciphertext = bytes(ciphertext)
    if len(ciphertext) < _HEADER.size + NONCE_BYTES + 16:
        raise DecryptionError("ciphertext too short")
    fmt, version = _HEADER.unpack_from(ciphertext)
    if fmt != FORMAT_VERSION:
        raise DecryptionError("unknown ciphertext format")
    return version


def open_sealed(
    data_key: bytes, workspace_id, table: str, column: str, row_id, ciphertext: bytes
) -> bytes:
    """Decrypt with a given data key (the database-free half of `decrypt`)."""
    ciphertext = bytes(ciphertext)
    version = key_version_of(ciphertext)
    start = _HEADER.size
    try:
        return AESGCM(data_key).decrypt(
            ciphertext[start : start + NONCE_BYTES],
            ciphertext[start + NONCE_BYTES :],
            _aad(workspace_id, table, column, row_id, version),
        )
    except InvalidTag:
        raise DecryptionError(
            f"ciphertext of {table}.{column} does not open here"
        ) from None


def encrypt(
    conn, master, workspace_id, table: str, column: str, row_id, plaintext: bytes | str
) -> bytes:
    """Seal `plaintext` for one cell, under the workspace's active data key."""
    keyring = _keyring(master)
    version, data_key = _active_key(conn, keyring, workspace_id)
    return seal(data_key, version, workspace_id, table, column, row_id, plaintext)


def decrypt(
    conn, master, workspace_id, table: str, column: str, row_id, ciphertext: bytes
) -> bytes:
    """Open one cell's ciphertext; DecryptionError unless it is authentic here."""
    keyring = _keyring(master)
    version = key_version_of(ciphertext)
    found = _row_key(conn, workspace_id, version)
    if found is None:
        raise KeyUnavailable(
            f"data key {version} of workspace {workspace_id} is not available"
        )
    _, wrapped, master_id = found
    return open_sealed(
        keyring.unwrap(wrapped, master_id),
        workspace_id,
        table,
        column,
        row_id,
        ciphertext,
    )


def decrypt_with_wrapped_key(
    master,
    workspace_id,
    table: str,
    column: str,
    row_id,
    ciphertext: bytes,
    wrapped_key: bytes | None,
    master_key_id: str | None,
) -> bytes:
    """Open one cell's ciphertext with the wrapped data key a query already
    returned beside it (no database round trip: a caller can commit first).

    The same checks as `decrypt`: KeyUnavailable without the data key (a
    purged workspace) or its master key, DecryptionError unless authentic.
    """
    if wrapped_key is None:
        raise KeyUnavailable(
            f"data key {key_version_of(ciphertext)} of workspace {workspace_id}"
            " is not available"
        )
    data_key = _keyring(master).unwrap(bytes(wrapped_key), master_key_id)
    return open_sealed(data_key, workspace_id, table, column, row_id, ciphertext)


def last_four(secret: str | None) -> str:
    """What the UI may show of a secret: its last four characters."""
    if not secret:
        return ""
    return "…" + secret[-4:] if len(secret) > 8 else "…"


# -- rotation ------------------------------------------------------------------


def rotate_master(admin_conn, master, batch: int = 200) -> int:
    """Re-wrap every data key not wrapped by the current master key.

    `admin_conn` is an administrator's (owner's) autocommit connection; each
    key is swapped on its own, only if still wrapped as read, so the run is
    resumable and a second run changes nothing. Returns the keys re-wrapped.
    """
    keyring = _keyring(master)
    done = 0
    while True:
        rows = admin_conn.execute(
            "select workspace_id, version, wrapped_key, master_key_id"
            " from cajex_private.keys_to_rewrap(%s, %s)",
            (keyring.key_id, batch),
        ).fetchall()
        if not rows:
            return done
        progressed = False
        for row in rows:
            ws, version, wrapped, old_id = (
                (
                    row["workspace_id"],
                    row["version"],
                    row["wrapped_key"],
                    row["master_key_id"],
                )
                if isinstance(row, dict)
                else row
            )
            data_key = keyring.unwrap(bytes(wrapped), old_id)
            swapped = admin_conn.execute(
                "select cajex_private.rewrap_workspace_key(%s, %s, %s, %s, %s) as ok",
                (ws, version, old_id, keyring.wrap(data_key), keyring.key_id),
            ).fetchone()
            ok = swapped["ok"] if isinstance(swapped, dict) else swapped[0]
            if ok:
                done += 1
                progressed = True
                _log.info(
                    "crypto.data_key_rewrapped", workspace_id=str(ws), version=version
                )
        if not progressed:
            return done


def registered_columns(conn) -> list[tuple[str, str, list[str]]]:
    rows = conn.execute(
        "select table_name, column_name, key_columns from cajex_private.encrypted_columns"
        " order by 1, 2"
    ).fetchall()
    return [
        (r["table_name"], r["column_name"], list(r["key_columns"]))
        if isinstance(r, dict)
        else (r[0], r[1], list(r[2]))
        for r in rows
    ]


def _stale_cells(
    conn, workspace_id, active_version: int, limit: int
) -> Iterator[tuple]:
    """Cells of the workspace sealed under another key version than the active one."""
    from psycopg import sql

    for table, column, keys in registered_columns(conn):
        schema, name = table.split(".", 1)
        query = sql.SQL(
            "select {keys}, {col} as ciphertext from {tbl} t where t.workspace_id = %s"
            " and {col} is not null"
            " and substring({col} from 2 for 4) <> int4send(%s::int4) limit %s"
        ).format(
            keys=sql.SQL(", ").join(
                sql.SQL("t.{}::text as {}").format(sql.Identifier(k), sql.Identifier(k))
                for k in keys
            ),
            col=sql.Identifier(column),
            tbl=sql.Identifier(schema, name),
        )
        for row in conn.execute(
            query, (workspace_id, active_version, limit)
        ).fetchall():
            values = (
                [row[k] for k in keys]
                if isinstance(row, dict)
                else list(row[: len(keys)])
            )
            ct = row["ciphertext"] if isinstance(row, dict) else row[len(keys)]
            yield (
                table,
                column,
                dict(zip(keys, values, strict=True)),
                "/".join(values),
                bytes(ct),
            )


def rotate_workspace_key(
    open_tx: Callable[[], contextlib.AbstractContextManager],
    master,
    workspace_id,
    batch: int = 100,
    _after_batch=None,
) -> dict:
    """Give the workspace a new data key and re-encrypt its secrets with it.

    `open_tx()` returns a context manager for one transaction in the
    workspace's verified context as a job (role 'system'; it yields a
    connection, or a (connection, opened) pair). Each batch commits on its
    own. A run that finds cells still sealed under an older key (an
    interrupted rotation) finishes them without making another key.
    Returns {"version", "reencrypted", "resumed"}.
    """
    keyring = _keyring(master)

    def tx():
        cm = open_tx()

        @contextlib.contextmanager
        def wrapper():
            with cm as value:
                yield value[0] if isinstance(value, tuple) else value

        return wrapper()

    with tx() as conn:
        active = _row_key(conn, workspace_id, None)
        pending = (
            active is not None
            and next(_stale_cells(conn, workspace_id, active[0], 1), None) is not None
        )
        if pending:
            version, resumed = active[0], True
        else:
            fresh = AESGCM.generate_key(bit_length=256)
            row = conn.execute(
                "select cajex_private.begin_workspace_key_rotation(%s, %s) as v",
                (keyring.wrap(fresh), keyring.key_id),
            ).fetchone()
            version = row["v"] if isinstance(row, dict) else row[0]
            resumed = False
    _log.info(
        "crypto.rotation_started",
        workspace_id=str(workspace_id),
        version=version,
        resumed=resumed,
    )

    reencrypted = 0
    keys_cache: dict[int, bytes] = {}
    while True:
        with tx() as conn:

            def data_key(v: int) -> bytes:
                if v not in keys_cache:
                    found = _row_key(conn, workspace_id, v)
                    if found is None:
                        raise KeyUnavailable(
                            f"data key {v} of workspace {workspace_id} is gone"
                        )
                    keys_cache[v] = keyring.unwrap(found[1], found[2])
                return keys_cache[v]

            cells = list(_stale_cells(conn, workspace_id, version, batch))
            changed = 0
            for table, column, key, row_id, ct in cells:
                plain = open_sealed(
                    data_key(key_version_of(ct)),
                    workspace_id,
                    table,
                    column,
                    row_id,
                    ct,
                )
                new = seal(
                    data_key(version),
                    version,
                    workspace_id,
                    table,
                    column,
                    row_id,
                    plain,
                )
                ok = conn.execute(
                    "select cajex_private.rewrite_secret(%s, %s, %s::jsonb, %s, %s) as ok",
                    (table, column, _json(key), ct, new),
                ).fetchone()
                changed += 1 if (ok["ok"] if isinstance(ok, dict) else ok[0]) else 0
        reencrypted += changed
        if _after_batch is not None:
            _after_batch(reencrypted)
        # No cell left, or none of those left could be swapped (each was
        # changed meanwhile by a writer using the active key): done.
        if not cells or not changed:
            break
    keys_cache.clear()
    _log.info(
        "crypto.rotation_finished",
        workspace_id=str(workspace_id),
        version=version,
        reencrypted=reencrypted,
    )
    return {"version": version, "reencrypted": reencrypted, "resumed": resumed}


def _json(value) -> str:
    import json

    return json.dumps(value)


def destroy_workspace_keys(conn, workspace_id) -> int:
    """Delete a purged workspace's data keys (crypto-shredding). Returns how many."""
    row = conn.execute(
        "select cajex_private.destroy_workspace_keys(%s) as n", (workspace_id,)
    ).fetchone()
    n = row["n"] if isinstance(row, dict) else row[0]
    _log.info("crypto.workspace_keys_destroyed", workspace_id=str(workspace_id), keys=n)
    return n


def random_secret(nbytes: int = 32) -> str:
    """A random URL-safe secret (for callers that mint their own)."""
    return secrets.token_urlsafe(nbytes)
