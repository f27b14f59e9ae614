"""`cajex up`: everything on loopback, for trying cajex on one machine.

With no DATABASE_URL / REDIS_URL, a private PostgreSQL cluster and Redis run
under the data folder (.cajex/ by default) and are reused on the next start.
Development mode: with no SMTP configured, email (sign-in links included)
lands in the development mailbox at /dev/mailbox, and secrets are generated
into the data folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import click

from cajex import config, log


def run(port: int, with_demo: bool) -> None:
    _require_free_port(port)
    settings = config.from_env()
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("CAJEX_ENV", "development")
    for key, value in config.load_or_create_secrets(data_dir).items():
        env.setdefault(key, value)
    env.setdefault("CAJEX_PUBLIC_URL", f"http://127.0.0.1:{port}")

    services = []
    procs: list[subprocess.Popen] = []
    # SIGTERM (a service manager, `kill`, a container stopping) stops
    # everything as Ctrl-C does, rather than leaving PostgreSQL and the
    # workers running without us.
    signal.signal(signal.SIGTERM, _interrupt)
    # Whatever fails on the way (a migration, the demo data, the server),
    # everything started so far is stopped again: no orphan keeps the
    # database busy for the next start.
    try:
        admin_url = env.get("DATABASE_ADMIN_URL") or env.get("DATABASE_URL")
        if not env.get("DATABASE_URL"):
            from cajex.localservices import LocalPostgres

            click.echo(
                "cajex: starting a private PostgreSQL under " + str(data_dir / "pgdata")
            )
            pg = LocalPostgres(data_dir).start()
            services.append(pg)
            admin_url = pg.url("cajex")
            env["DATABASE_URL"] = pg.url("cajex", "cajex_app")
        if not env.get("REDIS_URL"):
            from cajex.localservices import LocalRedis

            click.echo("cajex: starting a private Redis")
            rd = LocalRedis(data_dir / "redis").start()
            services.append(rd)
            env["REDIS_URL"] = rd.url

        from cajex.migrate import migrate

        click.echo("cajex: applying the schema")
        migrate(admin_url, env["CAJEX_CONTEXT_SECRET"])
        os.environ.update(env)
        settings = config.from_env()

        if with_demo:
            from cajex.demo import load

            click.echo("cajex: loading demo data")
            summary = load(env["DATABASE_URL"], env["CAJEX_CONTEXT_SECRET"])
            (data_dir / "demo.json").write_text(json.dumps(summary, indent=2))

        bin_dir = os.path.dirname(sys.executable)
        url = f"http://127.0.0.1:{port}"
        click.echo("")
        click.echo(f"cajex is running at {url}")
        if with_demo:
            click.echo(
                f"Sign in at {url}/login with a demo user's address, e.g."
                " olivia.owner@northwind.example; the sign-in link arrives in the"
                f" development mailbox at {url}/dev/mailbox"
            )
            click.echo(f"(the demo users are listed in {data_dir / 'demo.json'})")
        click.echo("Ctrl-C stops everything.")
        procs.append(
            subprocess.Popen([sys.executable, "-m", "cajex.cli", "worker"], env=env)
        )
        procs.append(
            subprocess.Popen([sys.executable, "-m", "cajex.cli", "relay"], env=env)
        )
        cron = _cron_config()
        if cron:
            # The rq script of this interpreter's environment: PATH need not
            # hold it when the virtual environment is not activated.
            rq = os.path.join(bin_dir, "rq")
            procs.append(
                subprocess.Popen(
                    [
                        rq if os.path.exists(rq) else "rq",
                        "cron",
                        "--url",
                        env["REDIS_URL"],
                        cron,
                    ],
                    env=env,
                )
            )
        from cajex.web import create_app

        log.configure()
        app = create_app(settings)
        from werkzeug.serving import run_simple

        run_simple("127.0.0.1", port, app, threaded=True, use_reloader=False)
    except KeyboardInterrupt:
        pass
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
        for service in reversed(services):
            service.stop()
        click.echo("cajex: stopped")


def _require_free_port(port: int) -> None:
    """Refuse at once, before any service starts, when the port is taken."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise click.ClickException(
                f"port {port} on 127.0.0.1 is in use by another program:"
                " stop it, or choose another port with --port"
            ) from None


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _cron_config() -> str | None:
    """The rq cron config of recurring jobs, if any area defines one."""
    from cajex import ROOT

    path = ROOT / "jobs" / "cron.py"
    return str(path) if path.exists() else None
