"""`cajex sso ...`: configure a workspace's SSO connections from a script.

Each command acts through a verified job context of the workspace
(cajex.db.as_service), so the same SQL functions, permission checks, plan
gate and audit log apply as on the settings page. Output is JSON.
"""

from __future__ import annotations

import json

import click


def _workspace(conn, slug: str):
    row = conn.execute(
        "select cajex_private.sso_workspace_by_slug(%s) as id", (slug,)
    ).fetchone()
    conn.rollback()
    if row is None or row["id"] is None:
        raise click.ClickException(f"no active workspace {slug!r}")
    return row["id"]


def _run(slug: str, database_url: str, action):
    """Run `action(conn, settings, workspace_id)` in the workspace's job context."""
    import psycopg

    from cajex import config, db
    from cajex.errors import AppError, from_database

    settings = config.from_env()
    if not settings.context_secret:
        raise click.UsageError("CAJEX_CONTEXT_SECRET is not set")
    pool = db.make_pool(database_url, 1, 1, name="cli")
    try:
        with pool.connection() as conn:
            workspace_id = _workspace(conn, slug)
        with db.as_service(pool, settings.context_secret, workspace_id, "cli_sso") as (
            conn,
            opened,
        ):
            if opened.workspace_id is None:
                raise click.ClickException(f"workspace {slug!r} cannot be opened")
            return action(conn, settings, workspace_id)
    except AppError as exc:
        raise click.ClickException(exc.message) from None
    except psycopg.Error as exc:
        known = from_database(exc)
        if known is None:
            raise
        raise click.ClickException(known.message) from None
    finally:
        pool.close()


def _describe(settings, row) -> dict:
    from cajex.sso import service

    out = service.endpoints(settings.public_url, row["id"])
    out.update(
        type=row["type"],
        name=row["name"],
        status=row["status"],
        default_role=row["default_role"],
    )
    if row["type"] == "saml":
        out["idp_entity_id"] = row["saml_idp_entity_id"]
    else:
        out["issuer"] = row["oidc_issuer"]
        out["client_id"] = row["oidc_client_id"]
    return out


def register(cli: click.Group) -> None:
    @cli.group("sso")
    def sso() -> None:
        """Enterprise SSO connections of a workspace."""

    workspace = click.option(
        "--workspace", "slug", required=True, help="Workspace slug."
    )
    database = click.option("--database-url", envvar="DATABASE_URL", required=True)
    role = click.option(
        "--default-role",
        type=click.Choice(["admin", "member", "viewer"]),
        default="member",
        show_default=True,
        help="Role of a person provisioned at their first sign-in.",
    )

    @sso.command("add-saml")
    @workspace
    @click.option(
        "--metadata", required=True, help="IdP metadata: a file path or an https URL."
    )
    @click.option(
        "--allow-idp-initiated",
        is_flag=True,
        help="Accept sign-ins started at the IdP.",
    )
    @click.option("--name", default=None)
    @role
    @database
    def add_saml(slug, metadata, allow_idp_initiated, name, default_role, database_url):
        """Add a SAML 2.0 connection from the IdP's metadata; prints what the IdP needs."""
        from cajex.errors import AppError
        from cajex.sso import service

        try:
            md, url = service.read_metadata(metadata)
        except AppError as exc:
            raise click.ClickException(exc.message) from None

        def action(conn, settings, _wid):
            row = service.create_saml(
                conn,
                md,
                name=name,
                metadata_url=url,
                allow_idp_initiated=allow_idp_initiated,
                default_role=default_role,
            )
            return _describe(settings, row)

        click.echo(json.dumps(_run(slug, database_url, action)))

    @sso.command("add-oidc")
    @workspace
    @click.option(
        "--issuer",
        required=True,
        help="The issuer or its discovery URL (.well-known/openid-configuration).",
    )
    @click.option("--client-id", required=True)
    @click.option("--client-secret", required=True)
    @click.option("--discovery-url", default=None, help="When not under the issuer.")
    @click.option("--name", default=None)
    @role
    @database
    def add_oidc(
        slug,
        issuer,
        client_id,
        client_secret,
        discovery_url,
        name,
        default_role,
        database_url,
    ):
        """Add an OpenID Connect connection; prints the redirect URI to register."""
        from cajex import crypto
        from cajex.sso import service

        def action(conn, settings, _wid):
            row = service.create_oidc(
                conn,
                crypto.master_key_from_settings(settings),
                issuer=issuer,
                client_id=client_id,
                client_secret=client_secret,
                discovery_url=discovery_url,
                name=name,
                default_role=default_role,
            )
            return _describe(settings, row)

        click.echo(json.dumps(_run(slug, database_url, action)))

    @sso.command("list")
    @workspace
    @database
    def list_(slug, database_url):
        """The workspace's connections, as JSON."""
        from cajex.sso import service

        def action(conn, settings, _wid):
            return [_describe(settings, row) for row in service.list_connections(conn)]

        click.echo(json.dumps(_run(slug, database_url, action)))

    @sso.command("claim-domain")
    @workspace
    @click.option("--connection", "connection_id", required=True)
    @click.option("--domain", required=True)
    @database
    def claim_domain(slug, connection_id, domain, database_url):
        """Route an email domain to a connection (the operator vouches for it)."""

        def action(conn, _settings, _wid):
            conn.execute(
                "select cajex.claim_sso_domain(%s, %s)", (connection_id, domain)
            )
            return {"domain": domain.lower(), "connection_id": connection_id}

        click.echo(json.dumps(_run(slug, database_url, action)))

    @sso.command("enable")
    @workspace
    @click.option("--connection", "connection_id", required=True)
    @database
    def enable(slug, connection_id, database_url):
        """Enable a connection."""

        def action(conn, _settings, _wid):
            conn.execute(
                "select cajex.set_sso_connection_status(%s, 'enabled')",
                (connection_id,),
            )
            return {"connection_id": connection_id, "status": "enabled"}

        click.echo(json.dumps(_run(slug, database_url, action)))
