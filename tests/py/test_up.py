"""`cajex up` as a new user runs it, as a real process: with no database or
Redis configured it starts its own, serves the app, and stops everything
again, on SIGTERM (a service manager, `kill`) as on Ctrl-C. The second
start reuses the cluster the first one made."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from cajex import ROOT
from cajex.localservices import LocalPostgres, free_port


def _processes_with(arg: str) -> list[int]:
    """Pids whose command line holds `arg`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if arg.encode() in cmdline:
            found.append(int(entry.name))
    return found


def _processes_in(directory: Path) -> list[int]:
    """Pids working in `directory` (Redis changes into its --dir, and
    rewrites its command line, so it is found by where it works)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "cwd")) == directory:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"cajex up exited early: {proc.stdout.read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError("cajex up did not become healthy")


def _up(data: Path, port: int) -> subprocess.Popen:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "DATABASE_ADMIN_URL", "REDIS_URL")
    }
    env.update(CAJEX_DATA_DIR=str(data), CAJEX_ENV="development")
    return subprocess.Popen(
        [sys.executable, "-m", "cajex.cli", "up", "--no-demo", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal gives it
    )


def test_up_runs_its_own_services_and_stops_them_on_sigterm_and_ctrl_c(tmp_path):
    data = tmp_path / "cajex-data"
    pg = LocalPostgres(data)
    made = None
    for stop in ("sigterm", "ctrl-c"):
        port = free_port()
        proc = _up(data, port)
        try:
            _wait_healthy(port, proc)
            assert pg.running()
            assert _processes_in((data / "redis").resolve())
            if stop == "sigterm":
                proc.send_signal(signal.SIGTERM)
            else:
                os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends
            output, _ = proc.communicate(timeout=90)
            # Checked before the clean-up below, which would hide a leak.
            assert proc.returncode == 0, output[-2000:]
            assert "cajex: stopped" in output
            assert not pg.running(), f"PostgreSQL still runs after {stop}"
            assert not _processes_in((data / "redis").resolve()), f"Redis still runs after {stop}"
            assert not _processes_with(str(port)), f"a server still holds port {port} after {stop}"
        finally:
            # Whatever went wrong, nothing of this test outlives it.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            if pg.running():
                pg.stop("immediate")
        # The second start found the first one's cluster and used it.
        version = (data / "pgdata" / "PG_VERSION").stat()
        made = made or (version.st_ino, version.st_mtime_ns)
        assert (version.st_ino, version.st_mtime_ns) == made


def test_up_refuses_a_port_in_use_before_starting_anything(tmp_path):
    data = tmp_path / "cajex-data"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _up(data, port)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert f"port {port} on 127.0.0.1 is in use" in output and "--port" in output
    assert not (data / "pgdata").exists()
