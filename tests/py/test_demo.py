"""`cajex demo`: the demo data a new user explores, loaded idempotently."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from cajex import ROOT
from cajex.testing import services


def run_demo(db_urls) -> dict:
    env = dict(os.environ, CAJEX_CONTEXT_SECRET=services.context_secret())
    proc = subprocess.run(
        [sys.executable, "-m", "cajex.cli", "demo", "--database-url", db_urls["app"]],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
        check=True,
    )
    # stdout is one JSON document (log lines go to stderr).
    return json.loads(proc.stdout)


def test_can_load_the_demo_twice_and_get_the_same_world(db_urls, admin_conn):
    """Two organisations, five workspaces, shared people; a second run adds nothing."""
    first = run_demo(db_urls)
    counts = admin_conn.execute(
        "select (select count(*) from cajex.workspaces), (select count(*) from cajex.projects),"
        " (select count(*) from cajex.memberships), (select count(*) from cajex.organisations)"
    ).fetchone()
    second = run_demo(db_urls)
    assert second == first
    assert (
        admin_conn.execute(
            "select (select count(*) from cajex.workspaces), (select count(*) from cajex.projects),"
            " (select count(*) from cajex.memberships), (select count(*) from cajex.organisations)"
        ).fetchone()
        == counts
    )
    workspaces = first["workspaces"]
    assert len(workspaces) == 5 and counts[3] == 2
    assert {w["plan"] for w in workspaces} >= {"enterprise"}
    assert len({w["plan"] for w in workspaces}) >= 3
    assert all(w["projects"] >= 24 for w in workspaces)
    in_several = [u for u in first["users"] if len(u["memberships"]) > 1]
    assert in_several and any(
        len({m["role"] for m in u["memberships"]}) > 1 for u in in_several
    )
