"""Exports to an S3-compatible store (moto in server mode, a real process on
loopback), and a worker killed mid-export: nothing is published and the
retry completes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request

import boto3
import pytest
from test_export_support import export_row, outbox_job, request_export, run_job

from cajex.localservices import free_port


@pytest.fixture
def moto(monkeypatch):
    port = free_port()
    proc = subprocess.Popen(
        ["moto_server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1)  # noqa: S310
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(10)


def _s3_export(world, settings, moto, app, ws):
    """A ready export of `ws` in moto, with the web app on the same store."""
    from cajex import storage

    s3 = boto3.client("s3", endpoint_url=moto)
    s3.create_bucket(Bucket="exports")
    s3_settings = dataclasses.replace(
        settings, s3_endpoint_url=moto, s3_bucket="exports"
    )
    # The web app uses the same S3 settings, as in production.
    app.extensions["cajex.export_storage"] = storage.from_settings(s3_settings)
    export_id = request_export(world, ws)
    run_job(s3_settings, outbox_job(world, ws))
    row = export_row(world, ws, export_id)
    assert row["status"] == "ready", row["last_error"]
    return s3, s3_settings, export_id, row


def _follow(client, url: str):
    """The app's answer to a download link, and the presigned URL it redirects to."""
    assert url.startswith("http://cajex.test/exports/download?")
    resp = client.get(url.replace("http://cajex.test", ""))
    return resp, resp.headers.get("Location")


def test_export_to_s3_downloads_through_the_app(world, settings, moto, app, client):
    ws = world.workspace()
    other = world.workspace()
    world.project(ws, name="In S3")
    world.project(other, name="Other")
    s3, s3_settings, export_id, row = _s3_export(world, settings, moto, app, ws)

    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="exports")["Contents"])
    assert keys == sorted(o["key"] for o in row["objects"].values())
    # Under the attempt that published them.
    assert all(k.startswith(f"{ws.id}/exports/{export_id}/1/") for k in keys)
    # No temporary upload is left behind.
    assert not any("/uploading/" in k for k in keys)

    from cajex import storage

    store = storage.from_settings(s3_settings)
    for fmt, obj in row["objects"].items():
        # The link is the app's, never the bucket's...
        url = store.link(ws.id, obj["key"])
        assert "X-Amz-Signature" not in url
        resp, presigned = _follow(client, url)
        assert resp.status_code == 302, fmt
        assert resp.headers["Cache-Control"] == "no-store"
        # ...which redirects to a SigV4 presigned GET that lives a minute
        # (moto does not enforce the expiry; the real service does, from this).
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(presigned).query))
        assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
        assert query["X-Amz-Expires"] == str(storage.PRESIGNED_TTL) == "60"
        assert "X-Amz-Signature" in query and "X-Amz-Date" in query
        data = urllib.request.urlopen(presigned, timeout=10).read()  # noqa: S310
        assert hashlib.sha256(data).hexdigest() == obj["sha256"], fmt
    _, presigned = _follow(client, store.link(ws.id, row["objects"]["json"]["key"]))
    doc = json.loads(urllib.request.urlopen(presigned).read())  # noqa: S310
    assert [p["name"] for p in doc["projects"]] == ["In S3"]
    # A link for another workspace's key is never minted, nor served.
    with pytest.raises(ValueError):
        store.link(other.id, row["objects"]["json"]["key"])
    good = store.link(ws.id, row["objects"]["json"]["key"])
    swapped = good.replace(str(ws.id), str(other.id), 1)
    assert _follow(client, swapped)[0].status_code == 403


def test_an_s3_link_handed_out_before_deletion_stops_working(
    world, settings, moto, app, signed_in, csrf_headers
):
    ws = world.workspace()
    world.project(ws, name="Secret project")
    _, _, export_id, row = _s3_export(world, settings, moto, app, ws)
    owner = signed_in(ws.owner)
    body = owner.get(f"/w/{ws.slug}/api/v1/exports/{export_id}").get_json()
    url = body["files"]["json"]["url"]
    browser = app.test_client()  # a link works without signing in

    resp, presigned = _follow(browser, url)
    assert resp.status_code == 302
    data = urllib.request.urlopen(presigned, timeout=10).read()  # noqa: S310
    assert hashlib.sha256(data).hexdigest() == row["objects"]["json"]["sha256"]

    resp = owner.post(
        f"/w/{ws.slug}/api/v1/workspace/delete",
        json={"confirm_name": ws.slug.title()},
        headers=csrf_headers,
    )
    assert resp.status_code == 200
    # The same link, checked again on use: the workspace is gone.
    resp, location = _follow(browser, url)
    assert resp.status_code == 404 and location is None
    assert b"Secret project" not in resp.data

    # Restored, the link works again (the export is still live).
    restored = owner.post(f"/api/v1/workspaces/{ws.id}/restore", headers=csrf_headers)
    assert restored.status_code == 200
    assert _follow(browser, url)[0].status_code == 302


_KILLED_WORKER = textwrap.dedent(
    """
    import json, pathlib, sys, time
    from cajex import config, exports
    from cajex.jobs import registry
    import cajex.jobs.export
    from cajex import db

    signal_file = pathlib.Path(sys.argv[2])
    original = exports._copy_json_array

    def slow(*args):
        # Half the export is on disk: the CSV zip is complete, the JSON is not.
        n = original(*args)
        signal_file.write_text("mid-export")
        time.sleep(120)
        return n

    exports._copy_json_array = slow
    job = json.loads(sys.argv[1])
    settings = config.from_env()
    pool = db.make_pool(settings.database_url, 1, 3)
    ctx = registry.JobContext(id=job["id"], kind=job["kind"], workspace_id=job["workspace_id"],
                              payload=job["payload"], attempts=1, pool=pool, settings=settings)
    registry.get("export.run")(ctx)
    """
)


def test_a_killed_worker_publishes_nothing_and_the_retry_completes(
    world, settings, tmp_path
):
    ws = world.workspace()
    for i in range(30):
        world.project(ws, name=f"Project {i}")
    export_id = request_export(world, ws)
    job = outbox_job(world, ws)
    signal_file = tmp_path / "signal"
    env = dict(
        os.environ,
        DATABASE_URL=settings.database_url,
        CAJEX_CONTEXT_SECRET=settings.context_secret,
        CAJEX_SECRET_KEY=settings.secret_key,
        CAJEX_DATA_DIR=str(settings.data_dir),
        CAJEX_PUBLIC_URL=settings.public_url,
    )
    payload = json.dumps(
        {
            "id": job["id"],
            "kind": job["kind"],
            "workspace_id": str(ws.id),
            "payload": job["payload"],
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WORKER, payload, str(signal_file)], env=env
    )
    try:
        deadline = time.monotonic() + 60
        while not signal_file.exists():
            assert proc.poll() is None, "the worker ended before the crash point"
            assert time.monotonic() < deadline, (
                "the worker never reached the crash point"
            )
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL

    objects = settings.data_dir / "exports" / "objects"
    published = (
        [p for p in objects.rglob("*") if p.is_file()] if objects.exists() else []
    )
    assert published == []
    row = export_row(world, ws, export_id)
    assert row["status"] == "running" and row["objects"] == {}
    # Scratch files of the dead attempt exist but are never served.
    assert list((settings.data_dir / "exports" / "tmp").rglob("*.partial"))

    run_job(settings, job, attempts=2)
    row = export_row(world, ws, export_id)
    assert row["status"] == "ready" and row["attempts"] == 2
    for obj in row["objects"].values():
        path = objects / obj["key"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == obj["sha256"]
    doc = json.loads((objects / row["objects"]["json"]["key"]).read_bytes())
    assert len(doc["projects"]) == 30
