"""`cajex keys ...`: rotate the master key, workspaces' data keys and the
context's seal key.

Both rotations are resumable and safe to run twice (cajex.crypto): an
interrupted run leaves every secret readable, and the next run finishes it.
"""

from __future__ import annotations

import contextlib
import json
import uuid

import click


def _keyring():
    from cajex import config, crypto

    try:
        return crypto.master_key_from_settings(config.from_env())
    except crypto.CryptoError as exc:
        raise click.ClickException(str(exc)) from None


@contextlib.contextmanager
def _as_owner(database_admin_url: str):
    """A connection acting as cajex_owner, the owner of the rotation functions
    (db/policies/600_crypto.sql, db/functions/000_context.sql)."""
    import psycopg

    with psycopg.connect(database_admin_url, autocommit=True) as conn:
        try:
            conn.execute("set role cajex_owner")
        except psycopg.Error:
            raise click.ClickException("this role cannot act as cajex_owner") from None
        yield conn


def register(cli: click.Group) -> None:
    @cli.group("keys")
    def keys() -> None:
        """Envelope encryption keys (docs/ai.md, docs/operations.md)."""
        import sys

        from cajex import log

        # Log lines go to stderr; stdout carries only the JSON result.
        log.configure(stream=sys.__stderr__)

    @keys.command("rotate-master")
    @click.option(
        "--database-admin-url",
        envvar="DATABASE_ADMIN_URL",
        required=True,
        help="The owner's (migration role's) connection.",
    )
    def rotate_master(database_admin_url: str) -> None:
        """Re-wrap every data key with CAJEX_MASTER_KEY.

        The old master key goes in CAJEX_OLD_MASTER_KEYS for the run (and for
        as long as backups wrapped by it must stay readable). Secrets are not
        touched. Prints {"rewrapped": n} as JSON.
        """

        from cajex import crypto

        keyring = _keyring()
        with _as_owner(database_admin_url) as conn:
            try:
                done = crypto.rotate_master(conn, keyring)
            except crypto.CryptoError as exc:
                raise click.ClickException(
                    f"{exc}: put the master key the data keys are wrapped with in"
                    " CAJEX_OLD_MASTER_KEYS"
                ) from None
        click.echo(json.dumps({"rewrapped": done, "master_key_id": keyring.key_id}))

    @keys.command("rotate-seal")
    @click.option(
        "--database-admin-url",
        envvar="DATABASE_ADMIN_URL",
        required=True,
        help="The owner's (migration role's) connection.",
    )
    def rotate_seal(database_admin_url: str) -> None:
        """Give the database a new key for sealing request contexts.

        The key never leaves the database. Transactions in flight lose their
        context (they see no rows from then on); every new one opens as
        before. Prints {"rotated": true, "created_at": ...} as JSON.
        """
        with _as_owner(database_admin_url) as conn:
            conn.execute("select cajex_private.ensure_seal_key(true)")
            made = conn.execute(
                "select created_at from cajex_private.seal_key"
            ).fetchone()[0]
        click.echo(json.dumps({"rotated": True, "created_at": made.isoformat()}))

    @keys.command("rotate-workspace")
    @click.option(
        "--workspace", "workspace", required=True, help="Workspace id (or slug)."
    )
    @click.option("--database-url", envvar="DATABASE_URL", required=True)
    @click.option(
        "--database-admin-url",
        envvar="DATABASE_ADMIN_URL",
        default=None,
        help="Only to look a slug up.",
    )
    def rotate_workspace(
        workspace: str, database_url: str, database_admin_url: str | None
    ) -> None:
        """Give one workspace a new data key and re-encrypt its secrets with it.

        Runs as a job of that workspace. Prints {"version", "reencrypted",
        "resumed"} as JSON.
        """
        import psycopg

        from cajex import config, crypto, db

        settings = config.from_env()
        try:
            workspace_id = uuid.UUID(workspace)
        except ValueError:
            workspace_id = None
        if workspace_id is None:
            if not database_admin_url:
                raise click.ClickException(
                    "give the workspace id, or DATABASE_ADMIN_URL to look its slug up"
                )
            with psycopg.connect(database_admin_url) as conn:
                row = conn.execute(
                    "select id from cajex.workspaces where slug = %s", (workspace,)
                ).fetchone()
            if row is None:
                raise click.ClickException("no workspace with that slug")
            workspace_id = row[0]
        pool = db.make_pool(database_url, 1, 1, name="cli")
        try:
            with db.as_service(
                pool, settings.context_secret, workspace_id, "cli_keys"
            ) as (_, ws):
                if ws.workspace_id is None:
                    raise click.ClickException("no active workspace with that id")
            result = crypto.rotate_workspace_key(
                lambda: db.as_service(
                    pool, settings.context_secret, workspace_id, "cli_keys"
                ),
                _keyring(),
                workspace_id,
            )
        finally:
            pool.close()
        click.echo(json.dumps(result))
