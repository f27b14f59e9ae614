"""`cajex jobs ...`: operate the job pipeline."""

from __future__ import annotations

import json
import time

import click


def register(cli: click.Group) -> None:
    @cli.group("jobs")
    def jobs() -> None:
        """The outbox and its workers."""

    @jobs.command("status")
    @click.option("--database-url", envvar="DATABASE_URL", required=True)
    def status(database_url: str) -> None:
        """Jobs due and the age of the oldest, as JSON."""
        import psycopg

        with psycopg.connect(database_url) as conn:
            pending, oldest = conn.execute(
                "select * from cajex_private.outbox_lag()"
            ).fetchone()
        click.echo(json.dumps({"pending": pending, "oldest_seconds": round(oldest, 1)}))

    @jobs.command("ping")
    @click.option("--workspace", "workspace_id", required=True, help="Workspace id.")
    @click.option("--timeout", default=30.0, show_default=True)
    @click.option("--database-url", envvar="DATABASE_URL", required=True)
    def ping(workspace_id: str, timeout: float, database_url: str) -> None:
        """Send a heartbeat job through the relay and a worker; wait for it."""
        import psycopg

        from cajex import config, db

        settings = config.from_env()
        pool = db.make_pool(database_url, 1, 1, name="cli")
        try:
            with db.as_service(pool, settings.context_secret, workspace_id, "cli") as (
                conn,
                opened,
            ):
                if opened.workspace_id is None:
                    raise click.ClickException("no active workspace with that id")
                job = conn.execute(
                    "select cajex_private.enqueue_job('system.heartbeat', '{}'::jsonb) as id"
                ).fetchone()["id"]
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                with pool.connection() as conn:
                    done = conn.execute(
                        "select cajex_private.outbox_job_done(%s) as done", (job,)
                    ).fetchone()["done"]
                if done:
                    click.echo(json.dumps({"job": job, "status": "done"}))
                    return
                time.sleep(0.5)
            raise click.ClickException(
                f"job {job} did not finish in {timeout}s: is a worker and the relay running?"
            )
        finally:
            pool.close()
        del psycopg
