"""`cajex members ...`: the permission documentation."""

from __future__ import annotations

from pathlib import Path

import click


def register(cli: click.Group) -> None:
    @cli.group("members")
    def members() -> None:
        """Members, roles and invitations."""

    @members.command("permissions-doc")
    @click.option("--database-url", envvar="DATABASE_URL", required=True, help="PostgreSQL URL.")
    @click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
                  default=Path(__file__).resolve().parents[2] / "docs" / "permissions.md",
                  show_default=True)
    @click.option("--check", is_flag=True, help="Fail when the file differs instead of writing it.")
    def permissions_doc(database_url: str, output: Path, check: bool) -> None:
        """Write docs/permissions.md from cajex.role_permissions."""
        import psycopg
        from psycopg.rows import dict_row

        from cajex.members import render_permissions_doc

        with psycopg.connect(database_url, row_factory=dict_row) as conn:
            text = render_permissions_doc(conn)
        if check:
            if not output.exists() or output.read_text() != text:
                raise click.ClickException(f"{output} is out of date: run cajex members permissions-doc")
            click.echo("permissions doc is current")
            return
        output.write_text(text)
        click.echo(f"wrote {output}")
