"""`cajex scim ...`: SCIM tokens for scripted identity-provider setups."""

from __future__ import annotations

import json

import click


def register(cli: click.Group) -> None:
    @cli.group("scim")
    def scim() -> None:
        """SCIM provisioning."""

    @scim.group("token")
    def token() -> None:
        """SCIM bearer tokens."""

    @token.command("create")
    @click.option("--workspace", "slug", required=True, help="Workspace slug (or id).")
    @click.option("--label", default="cli", show_default=True)
    @click.option("--database-url", envvar="DATABASE_URL", required=True)
    def create(slug: str, label: str, database_url: str) -> None:
        """Create a token; print the SCIM base URL and the token (shown once) as JSON."""
        from cajex import config, db
        from cajex import scim as scim_lib

        settings = config.from_env()
        pool = db.make_pool(database_url, 1, 1, name="cli")
        try:
            with pool.connection() as conn:
                row = conn.execute(
                    "select cajex_private.scim_workspace_id(%s) as id", (slug,)
                ).fetchone()
                conn.rollback()
            workspace_id = row["id"] if row else None
            if workspace_id is None and len(slug) == 36:
                workspace_id = slug
            if workspace_id is None:
                raise click.ClickException("no active workspace with that slug")
            with db.as_service(
                pool, settings.context_secret, workspace_id, "cli_scim"
            ) as (
                conn,
                opened,
            ):
                if opened.workspace_id is None:
                    raise click.ClickException("no active workspace with that slug")
                token_id, secret = scim_lib.create_token(conn, label)
                slug = opened.workspace_slug
        except Exception as exc:
            if getattr(exc, "sqlstate", None) == "CXFTR":
                raise click.ClickException(
                    "this workspace's plan does not include SCIM (Enterprise)"
                ) from None
            raise
        finally:
            pool.close()
        base_url = f"{settings.public_url.rstrip('/')}/scim/v2/{slug}"
        click.echo(
            json.dumps({"base_url": base_url, "token_id": token_id, "token": secret})
        )
