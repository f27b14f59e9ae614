"""Exports to the local folder: the files match the database, checksums
verify, links expire, and another workspace's link is refused."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.parse

import pytest
from test_export_support import (
    export_row,
    outbox_job,
    read_csv_zip,
    request_export,
    run_job,
)

from cajex import exports, storage

TRICKY = 'Quotes " and , commas\nnew line \\ backslash \t tab, ünïcode ✓'


def _link_args(url: str) -> dict:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def _ready_export(world, settings, ws):
    export_id = request_export(world, ws)
    run_job(settings, outbox_job(world, ws))
    row = export_row(world, ws, export_id)
    assert row["status"] == "ready", row["last_error"]
    return export_id, row


@pytest.mark.parametrize("split", [False, True], ids=["one-stream", "block-ranges"])
def test_export_files_match_the_database(
    world, settings, signed_in, monkeypatch, split
):
    if split:
        # Every table is split between the parallel connections, however
        # small, and the JSON is built a page at a time.
        monkeypatch.setattr(exports, "_SPLIT_MIN_BLOCKS", 0)
        monkeypatch.setattr(exports, "_JSON_CHUNK_BLOCKS", 1)
    ws = world.workspace(plan="free")
    other = world.workspace()
    world.member(ws, role="viewer")
    world.project(ws, name="Plain")
    bulk = 300 if split else 0
    if bulk:
        # Enough rows to fill several pages, between the other workspace's.
        world.admin.execute(
            "insert into cajex.projects (workspace_id, name, description)"
            " select case when g %% 3 = 0 then %s else %s end, 'Bulk ' || g, repeat('x', 200)"
            " from generate_series(1, %s) g",
            (other.id, ws.id, bulk + bulk // 2),
        )
    with world.as_user(ws.owner, ws) as (conn, _):
        conn.execute(
            "select cajex.create_project(%s, %s, %s)",
            ("Tricky", TRICKY, ["a b", "c.d"]),
        )
    world.project(other, name="Other workspace secret")

    export_id, row = _ready_export(world, settings, ws)
    assert row["progress"] == 100 and row["expires_at"] is not None
    client = signed_in(ws.owner)
    body = client.get(f"/w/{ws.slug}/api/v1/exports/{export_id}").get_json()
    assert body["status"] == "ready"

    files = {}
    for fmt in ("json", "csv", "manifest"):
        resp = client.get(body["files"][fmt]["url"].replace("http://cajex.test", ""))
        assert resp.status_code == 200, fmt
        files[fmt] = resp.data
        assert hashlib.sha256(resp.data).hexdigest() == body["files"][fmt]["sha256"]
        assert row["objects"][fmt]["key"].startswith(f"{ws.id}/")

    db_projects = world.admin.execute(
        "select id, name, description, tags from cajex.projects where workspace_id = %s",
        (ws.id,),
    ).fetchall()
    db_members = world.admin.execute(
        "select user_id from cajex.memberships where workspace_id = %s", (ws.id,)
    ).fetchall()
    db_audit = world.admin.execute(
        "select count(*) as n from cajex.audit_log where workspace_id = %s"
        # The export's own "ready" event is written after its snapshot.
        " and action <> 'export.ready'",
        (ws.id,),
    ).fetchone()["n"]

    doc = json.loads(files["json"])
    by_id = {p["id"]: p for p in doc["projects"]}
    assert len(doc["projects"]) == len(by_id) == len(db_projects) == 2 + bulk
    for p in db_projects:
        assert by_id[str(p["id"])]["name"] == p["name"]
        assert by_id[str(p["id"])]["description"] == p["description"]
        assert by_id[str(p["id"])]["tags"] == p["tags"]
    assert {m["user_id"] for m in doc["members"]} == {
        str(m["user_id"]) for m in db_members
    }
    assert len(doc["audit_log"]) == db_audit
    assert "Other workspace secret" not in files["json"].decode()
    assert doc["manifest"]["workspace"]["id"] == str(ws.id)
    assert doc["manifest"]["schema_version"].startswith("schema/")

    csvs, zip_manifest = read_csv_zip(files["csv"])
    for entry in zip_manifest["files"]:
        raw, rows = csvs[entry["name"]]
        assert hashlib.sha256(raw).hexdigest() == entry["sha256"]
        assert len(rows) == entry["rows"]
    tricky = next(r for r in csvs["projects.csv"][1] if r["name"] == "Tricky")
    assert tricky["description"] == TRICKY
    assert len(csvs["projects.csv"][1]) == 2 + bulk

    manifest = json.loads(files["manifest"])
    listed = {f["name"]: f for f in manifest["files"]}
    assert listed["export.json"]["sha256"] == hashlib.sha256(files["json"]).hexdigest()
    assert (
        listed["export-csv.zip"]["sha256"] == hashlib.sha256(files["csv"]).hexdigest()
    )
    assert manifest["rows"] == {
        "members": 2,
        "projects": 2 + bulk,
        "audit_log": db_audit,
    }


def test_links_expire_and_never_serve_another_workspace(
    world, settings, signed_in, client
):
    ws = world.workspace()
    other = world.workspace()
    world.project(ws)
    world.project(other)
    _, row = _ready_export(world, settings, ws)
    _, other_row = _ready_export(world, settings, other)
    store = storage.LocalStorage(settings.data_dir / "exports", settings.secret_key)
    key = row["objects"]["json"]["key"]

    # Allowed: a fresh link, no sign-in needed.
    good = _link_args(store.link(ws.id, key))
    assert client.get("/exports/download", query_string=good).status_code == 200
    assert int(good["e"]) - time.time() > 23 * 3600

    # Expired: a link minted 25 hours ago with the 24-hour default.
    old = _link_args(store.link(ws.id, key, now=time.time() - 25 * 3600))
    resp = client.get("/exports/download", query_string=old)
    assert resp.status_code == 410
    # Stretching the expiry breaks the signature.
    stretched = dict(old, e=str(int(time.time()) + 3600))
    assert client.get("/exports/download", query_string=stretched).status_code == 403

    # Another workspace: its id with this key, or this id with its key.
    other_key = other_row["objects"]["json"]["key"]
    swapped = dict(good, w=str(other.id))
    assert client.get("/exports/download", query_string=swapped).status_code == 403
    with_other_key = dict(good, k=other_key)
    assert (
        client.get("/exports/download", query_string=with_other_key).status_code == 403
    )
    # Signed correctly for workspace A but naming B's object: the key is not under A.
    try:
        store.link(ws.id, other_key)
        raise AssertionError("a link for another workspace's key was minted")
    except ValueError:
        pass
    # B's own valid link still works for B.
    assert (
        client.get(
            "/exports/download",
            query_string=_link_args(store.link(other.id, other_key)),
        ).status_code
        == 200
    )

    # A member of the other workspace cannot see this workspace's exports page.
    outsider = signed_in(other.owner)
    assert outsider.get(f"/w/{ws.slug}/api/v1/exports").status_code == 404
    # And a plain member here may not export.
    member = world.member(ws, role="member")
    assert signed_in(member).get(f"/w/{ws.slug}/api/v1/exports").status_code == 403


def test_export_page_and_request(world, signed_in, csrf_headers):
    ws = world.workspace(plan="basic")
    client = signed_in(ws.owner)
    resp = client.post(f"/w/{ws.slug}/api/v1/exports", headers=csrf_headers)
    assert resp.status_code == 202 and resp.get_json()["status"] == "queued"
    again = client.post(f"/w/{ws.slug}/api/v1/exports", headers=csrf_headers).get_json()
    assert again["id"] == resp.get_json()["id"]
    page = client.get(f"/w/{ws.slug}/exports")
    assert page.status_code == 200 and b"Export on its way" in page.data
    other = world.workspace()
    assert (
        signed_in(other.owner)
        .post(f"/w/{ws.slug}/api/v1/exports", headers=csrf_headers)
        .status_code
        == 404
    )
