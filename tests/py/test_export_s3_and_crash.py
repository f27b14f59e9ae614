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


def test_export_to_s3_with_presigned_links(world, settings, moto, signed_in):
    s3 = boto3.client("s3", endpoint_url=moto)
    s3.create_bucket(Bucket="exports")
    s3_settings = dataclasses.replace(
        settings, s3_endpoint_url=moto, s3_bucket="exports"
    )
    ws = world.workspace()
    other = world.workspace()
    world.project(ws, name="In S3")
    world.project(other, name="Other")
    export_id = request_export(world, ws)
    run_job(s3_settings, outbox_job(world, ws))
    row = export_row(world, ws, export_id)
    assert row["status"] == "ready", row["last_error"]

    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="exports")["Contents"])
    assert keys == sorted(o["key"] for o in row["objects"].values())
    assert all(k.startswith(f"{ws.id}/exports/{export_id}/") for k in keys)
    # No temporary upload is left behind.
    assert not any("/uploading/" in k for k in keys)

    from cajex import storage

    store = storage.S3Storage(moto, "exports", settings.data_dir)
    for fmt, obj in row["objects"].items():
        url = store.link(ws.id, obj["key"])
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
        # SigV4 presigned: the link carries its 24-hour life in the signature.
        assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
        assert query["X-Amz-Expires"] == "86400"
        assert "X-Amz-Signature" in query and "X-Amz-Date" in query
        data = urllib.request.urlopen(url, timeout=10).read()  # noqa: S310
        assert hashlib.sha256(data).hexdigest() == obj["sha256"], fmt
    json_url = store.link(ws.id, row["objects"]["json"]["key"])
    doc = json.loads(urllib.request.urlopen(json_url).read())  # noqa: S310
    assert [p["name"] for p in doc["projects"]] == ["In S3"]
    # A link for another workspace's key is never minted.
    with pytest.raises(ValueError):
        store.link(other.id, row["objects"]["json"]["key"])

    # The page shows presigned links too.
    body = signed_in(ws.owner).get(f"/w/{ws.slug}/api/v1/exports/{export_id}")
    assert body.status_code == 200


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
