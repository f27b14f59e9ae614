"""Many clients in several workspaces at once: no canary crosses a boundary,
nothing acknowledged is lost."""

from __future__ import annotations

import random
import threading

import pytest


@pytest.mark.slow
def test_concurrent_clients_never_see_another_workspaces_canaries(world, app):
    """Threads create, list and change projects in four workspaces at once."""
    spaces = [world.workspace() for _ in range(4)]
    for ws in spaces:
        world.project(ws, name=f"canary-{ws.slug}")
    people = {ws.slug: [ws.owner, world.member(ws, role="member")] for ws in spaces}
    acknowledged = {ws.slug: [] for ws in spaces}
    leaks, failures = [], []
    lock = threading.Lock()

    def client_for(user):
        client = app.test_client()
        world.login(client, user)
        return client

    def run(seed):
        rng = random.Random(seed)
        clients = {ws.slug: [client_for(u) for u in people[ws.slug]] for ws in spaces}
        for step in range(40):
            ws = rng.choice(spaces)
            client = rng.choice(clients[ws.slug])
            action = rng.random()
            if action < 0.4:
                response = client.post(
                    f"/w/{ws.slug}/api/v1/projects",
                    json={"name": f"{ws.slug}-{seed}-{step}"},
                )
                if response.status_code == 201:
                    with lock:
                        acknowledged[ws.slug].append(response.json["id"])
                else:
                    failures.append(response.status_code)
            elif action < 0.8:
                response = client.get(f"/w/{ws.slug}/api/v1/projects?limit=100")
                names = [p["name"] for p in response.json["items"]]
                foreign = [
                    n
                    for n in names
                    if n.startswith("canary-") and n != f"canary-{ws.slug}"
                ]
                foreign += [
                    n for n in names if not n.startswith(("canary-", ws.slug + "-"))
                ]
                if foreign:
                    leaks.append((ws.slug, foreign))
            else:
                # Try to touch another workspace's rows from this one.
                other = rng.choice([s for s in spaces if s is not ws])
                with lock:
                    theirs = list(acknowledged[other.slug])
                if theirs:
                    response = client.patch(
                        f"/w/{ws.slug}/api/v1/projects/{rng.choice(theirs)}",
                        json={"name": "hijacked"},
                    )
                    if response.status_code != 404:
                        leaks.append(("patch", response.status_code))

    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert leaks == []
    assert failures == []
    for ws in spaces:
        with world.as_user(ws.owner, ws) as (conn, _):
            rows = conn.execute("select id::text, name from cajex.projects").fetchall()
        ids = {r["id"] for r in rows}
        assert set(acknowledged[ws.slug]) <= ids
        assert not any(r["name"] == "hijacked" for r in rows)
        assert all(
            r["name"] == f"canary-{ws.slug}" or r["name"].startswith(ws.slug + "-")
            for r in rows
        )
