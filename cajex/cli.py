"""The `cajex` command line.

Every command that talks to the database takes --database-url (default:
$DATABASE_URL). Commands of other areas live in cajex/commands/, one module
each with a `register(cli)` function.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import sys

import click

from cajex import config


def _database_url(value: str | None) -> str:
    url = value or os.environ.get("DATABASE_URL")
    if not url:
        raise click.UsageError("no database: pass --database-url or set DATABASE_URL")
    return url


database_url_option = click.option(
    "--database-url",
    envvar="DATABASE_URL",
    default=None,
    help="PostgreSQL URL (default: $DATABASE_URL).",
)


@click.group()
def cli() -> None:
    """cajex: isolated workspaces for architecture governance."""


# -- db ------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Schema, isolation audit and DBA helpers."""


@db.command("migrate")
@database_url_option
def db_migrate(database_url: str | None) -> None:
    """Apply the schema (the same psql run a DBA does: db/migrate.sql)."""
    from cajex.migrate import MigrationError, migrate

    settings = config.from_env()
    try:
        migrate(_database_url(database_url), settings.context_secret or None)
    except MigrationError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("schema is up to date")


@db.command("plan")
def db_plan() -> None:
    """Regenerate db/plan.sql from the folders of db/."""
    from cajex.migrate import write_plan

    click.echo(f"wrote {write_plan()}")


@db.command("doctor")
@database_url_option
def db_doctor(database_url: str | None) -> None:
    """The isolation audit: exit 0 when clean, else one line per finding."""
    import psycopg

    from cajex.doctor import audit

    with psycopg.connect(_database_url(database_url)) as conn:
        findings = audit(conn)
    for finding in findings:
        click.echo(str(finding))
    if findings:
        click.echo(f"{len(findings)} finding(s)", err=True)
        sys.exit(1)
    click.echo("isolation audit: clean")


@db.command("as-member")
@click.option("--workspace", "slug", required=True, help="Workspace slug.")
@click.option("--email", required=True, help="The member's email address.")
@click.option(
    "--ttl", default=3600, show_default=True, help="Seconds the context token lasts."
)
@database_url_option
def db_as_member(slug: str, email: str, ttl: int, database_url: str | None) -> None:
    """Print SQL that opens a member's workspace context in psql."""
    import psycopg

    from cajex.dba import as_member_sql

    settings = config.from_env()
    if not settings.context_secret:
        raise click.UsageError(
            "CAJEX_CONTEXT_SECRET is not set: the token must be signed with it"
        )
    with psycopg.connect(_database_url(database_url)) as conn:
        try:
            click.echo(as_member_sql(conn, settings.context_secret, slug, email, ttl))
        except LookupError as exc:
            raise click.ClickException(str(exc)) from None


# -- demo, PostgREST ----------------------------------------------------------------


@cli.command("demo")
@database_url_option
def demo(database_url: str | None) -> None:
    """Load demo organisations, workspaces, members and projects (idempotent)."""
    from cajex.demo import load

    settings = config.from_env()
    result = load(_database_url(database_url), settings.context_secret)
    click.echo(json.dumps(result, indent=2))


@cli.command("postgrest-config")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    default="postgrest.conf",
    show_default=True,
)
@click.option(
    "--authenticator-url", default=None, help="db-uri for cajex_authenticator."
)
@click.option("--port", default=3000, show_default=True)
@database_url_option
def postgrest_config(
    output: str, authenticator_url: str | None, port: int, database_url: str | None
) -> None:
    """Write a PostgREST config for the api schema."""
    from cajex.postgrest import write_config

    settings = config.from_env()
    if not settings.jwt_secret:
        raise click.UsageError(
            "CAJEX_JWT_SECRET is not set: PostgREST and the web app share it"
        )
    path = write_config(
        output, settings, authenticator_url, _database_url(database_url), port
    )
    click.echo(f"wrote {path}")


# -- processes -------------------------------------------------------------------------


@cli.command("worker")
@click.option("--burst", is_flag=True, help="Run queued jobs, then exit.")
def worker(burst: bool) -> None:
    """Run an RQ worker for the outbox jobs."""
    from cajex.jobs.worker import run

    run(burst=burst)


@cli.command("relay")
def relay() -> None:
    """Relay outbox rows to RQ (at least once)."""
    from cajex.jobs.relay import run

    run()


@cli.command("up")
@click.option("--port", default=8000, show_default=True, help="Web port on 127.0.0.1.")
@click.option(
    "--demo/--no-demo",
    "with_demo",
    default=True,
    show_default=True,
    help="Load the demo data.",
)
def up(port: int, with_demo: bool) -> None:
    """Run the platform: PostgreSQL and Redis (private ones unless configured),
    the schema, the web app, a worker, the relay and the scheduler."""
    from cajex.up import run

    run(port=port, with_demo=with_demo)


def _register_areas() -> None:
    from cajex import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"cajex.commands.{info.name}")
        if hasattr(module, "register"):
            module.register(cli)


def main() -> None:
    # Log lines go to stderr as JSON: stdout carries what a command prints
    # for scripts (the JSON of `cajex demo`, `cajex sso add-oidc`, ...).
    from cajex import log

    log.configure()
    _register_areas()
    cli()


if __name__ == "__main__":  # pragma: no cover
    main()
