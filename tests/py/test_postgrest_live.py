"""A real PostgREST against the test database, driven by the `postgrest` client.

Runs only where a `postgrest` binary is on PATH (none is published in the
package registries this project installs from); everywhere else the
per-request transaction PostgREST runs is replayed exactly by
tests/py/test_isolation_sql.py. The config is the one `cajex postgrest-config`
writes.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

from cajex import jwt
from cajex.config import Settings
from cajex.postgrest import write_config

POSTGREST = shutil.which("postgrest")
pytestmark = pytest.mark.skipif(
    POSTGREST is None, reason="no postgrest binary on PATH (see the replay tests)"
)
JWT_SECRET = "p" * 48


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgrest_url(db_urls, tmp_path):
    port = _free_port()
    settings = Settings(
        database_url=db_urls["app"],
        redis_url="redis://127.0.0.1:1",
        env="production",
        secret_key="s" * 40,
        context_secret="c" * 64,
        jwt_secret=JWT_SECRET,
        master_key="m" * 64,
        public_url="http://cajex.test",
        data_dir=tmp_path,
    )
    config = write_config(
        str(tmp_path / "postgrest.conf"),
        settings,
        db_urls["authenticator"],
        db_urls["app"],
        port,
    )
    proc = subprocess.Popen([POSTGREST, str(config)], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert proc.poll() is None, "postgrest exited at start"
        assert time.monotonic() < deadline, "postgrest did not listen"
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def _client(url: str, token: str | None):
    from postgrest import SyncPostgrestClient

    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return SyncPostgrestClient(url, schema="api", headers=headers)


def test_can_read_own_projects_and_cannot_see_another_workspace(world, postgrest_url):
    """A member's JWT shows their workspace's projects and nothing of another's."""
    a, b = world.workspace(), world.workspace()
    mine = world.project(a, name="ours")
    world.project(b, name="theirs")
    token = jwt.postgrest_token(JWT_SECRET, a.owner.id, a.owner.session_id, a.id)
    rows = _client(postgrest_url, token).from_("projects").select("*").execute().data
    assert [r["id"] for r in rows] == [str(mine["id"])]
    forged = jwt.postgrest_token(JWT_SECRET, a.owner.id, a.owner.session_id, b.id)
    assert (
        _client(postgrest_url, forged).from_("projects").select("*").execute().data
        == []
    )


def test_cannot_read_anything_without_a_jwt(world, postgrest_url):
    """The anonymous role sees no workspace's rows."""
    ws = world.workspace()
    world.project(ws, name="hidden")
    assert (
        _client(postgrest_url, None).from_("projects").select("*").execute().data == []
    )
