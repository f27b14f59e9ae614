"""Exports across a workspace's life and against duplicate deliveries: an
export on its way when the workspace is deleted is settled, so the restored
workspace exports again; two deliveries of one job never leave a ready
export whose files differ from its checksums; and the purge leaves no
deletion notice naming the workspace and its owner."""

from __future__ import annotations

import dataclasses
import hashlib
import threading

import psycopg
import pytest
from psycopg.types.json import Jsonb
from test_export_support import export_row, outbox_job, request_export, run_job

from cajex import exports, retention, storage


def _delete(world, ws) -> None:
    with world.as_user(ws.owner, ws) as (conn, _):
        conn.execute("select cajex.delete_workspace(%s, 30)", (ws.slug.title(),))


def _restore(world, ws) -> None:
    with world.as_user(ws.owner) as (conn, _):
        conn.execute("select cajex.restore_workspace(%s)", (ws.id,))


def _mark_done(world, job) -> None:
    """What the runner does after a handler returns normally."""
    world.admin.execute(
        "update cajex.outbox set started_at = now(), done_at = now() where id = %s",
        (job["id"],),
    )


def _files(settings, ws) -> list[str]:
    root = settings.data_dir / "exports" / "objects" / str(ws.id)
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _assert_files_match(settings, row) -> None:
    objects = settings.data_dir / "exports" / "objects"
    for fmt, obj in row["objects"].items():
        data = (objects / obj["key"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == obj["sha256"], fmt


def test_an_export_queued_at_deletion_is_settled_and_the_restored_workspace_exports(
    world, settings
):
    ws = world.workspace()
    world.project(ws, name="P")
    stuck = request_export(world, ws)
    job = outbox_job(world, ws)

    _delete(world, ws)
    row = export_row(world, ws, stuck)
    assert (row["status"], row["last_error"]) == ("failed", "workspace_deleted")
    # The worker gets the job while the workspace is deleted: nothing runs.
    run_job(settings, job)
    _mark_done(world, job)
    assert export_row(world, ws, stuck)["status"] == "failed"

    _restore(world, ws)
    again = request_export(world, ws)
    assert again != stuck
    run_job(settings, outbox_job(world, ws))
    row = export_row(world, ws, again)
    assert row["status"] == "ready", row["last_error"]
    _assert_files_match(settings, row)


def test_an_export_running_at_deletion_keeps_nothing_and_a_new_one_completes(
    world, settings, monkeypatch
):
    ws = world.workspace()
    world.project(ws, name="P")
    first = request_export(world, ws)
    job = outbox_job(world, ws)
    real = exports.build

    def build(*args, **kwargs):
        out = real(*args, **kwargs)
        _delete(world, ws)  # the owner deletes while the files are published
        return out

    monkeypatch.setattr(exports, "build", build)
    run_job(settings, job)
    monkeypatch.setattr(exports, "build", real)
    row = export_row(world, ws, first)
    assert (row["status"], row["last_error"]) == ("failed", "workspace_deleted")
    # The attempt could not finish: its published files are gone again.
    assert _files(settings, ws) == []
    _mark_done(world, job)

    _restore(world, ws)
    again = request_export(world, ws)
    assert again != first
    run_job(settings, outbox_job(world, ws))
    row = export_row(world, ws, again)
    assert row["status"] == "ready", row["last_error"]
    _assert_files_match(settings, row)


def test_a_pending_export_whose_job_is_gone_is_not_handed_back(world, settings):
    # An export left queued by a job that ended without settling it (before
    # delete_workspace settled exports, say): the next request starts anew.
    ws = world.workspace()
    lost = request_export(world, ws)
    job = outbox_job(world, ws)
    # While its job is pending, a second click returns it.
    assert request_export(world, ws) == lost
    _mark_done(world, job)
    again = request_export(world, ws)
    assert again != lost
    row = export_row(world, ws, lost)
    assert (row["status"], row["last_error"]) == ("failed", "job_lost")
    run_job(settings, outbox_job(world, ws))
    assert export_row(world, ws, again)["status"] == "ready"


def _race(world, settings, monkeypatch, slow: str):
    """Two deliveries of one job at once. `slow` 'first': the first delivery
    (attempt 1) stalls before it writes and the second takes the export over
    and finishes first. 'second': the second delivery takes the export over
    and stalls, and the first, superseded, finishes writing first. Returns
    (workspace, export id, the errors the deliveries raised)."""
    ws = world.workspace()
    for i in range(5):
        world.project(ws, name=f"P{i}")
    export_id = request_export(world, ws)
    job = outbox_job(world, ws)
    real = exports.build
    first_writing, held, release = (
        threading.Event(),
        threading.Event(),
        threading.Event(),
    )

    def build(*args, **kwargs):
        name = threading.current_thread().name
        if name == "held":
            held.set()
            assert release.wait(60)
        elif name == "first":
            # Writes only once the second delivery has taken the export over.
            first_writing.set()
            assert held.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(exports, "build", build)
    errors: list[BaseException] = []

    def run(attempts):
        try:
            run_job(settings, job, attempts=attempts)
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    if slow == "first":
        stalled = threading.Thread(target=run, args=(1,), name="held")
        stalled.start()
        assert held.wait(60)
        run(2)
        assert export_row(world, ws, export_id)["status"] == "ready"
    else:
        first = threading.Thread(target=run, args=(1,), name="first")
        first.start()
        assert first_writing.wait(60)
        stalled = threading.Thread(target=run, args=(2,), name="held")
        stalled.start()
        first.join(60)
        assert not first.is_alive()
        assert export_row(world, ws, export_id)["status"] == "running"
    release.set()
    stalled.join(60)
    assert not stalled.is_alive()
    return ws, export_id, errors


@pytest.mark.parametrize("slow", ["first", "second"])
def test_two_deliveries_leave_a_ready_export_whose_files_match(
    world, settings, monkeypatch, slow
):
    ws, export_id, errors = _race(world, settings, monkeypatch, slow)
    assert errors == []  # the superseded attempt steps aside quietly
    row = export_row(world, ws, export_id)
    assert row["status"] == "ready" and row["attempts"] == 2
    # The winner is the latest attempt, its objects under its own prefix...
    prefix = exports.object_prefix(ws.id, export_id, 2)
    assert all(o["key"].startswith(prefix) for o in row["objects"].values())
    _assert_files_match(settings, row)
    # ...and the loser kept nothing.
    assert _files(settings, ws) == sorted(
        o["key"].split("/", 1)[1] for o in row["objects"].values()
    )
    # The download path serves the winner's files.
    store = storage.LocalStorage(settings.data_dir / "exports", settings.secret_key)
    assert store.exists(row["objects"]["json"]["key"])


def test_only_the_attempt_handed_out_may_finish(world):
    ws = world.workspace()
    export_id = request_export(world, ws)

    def objects(attempt):
        base = exports.object_prefix(ws.id, export_id, attempt)
        return Jsonb({"json": {"key": base + "export.json", "sha256": "a" * 64}})

    def finish(conn, attempt, keyed_for):
        conn.execute(
            "select cajex.finish_export(%s, %s, '{}', 'v', interval '1 day', null, %s)",
            (export_id, objects(keyed_for), attempt),
        )

    with world.as_job(ws) as (conn, _):
        a1 = conn.execute("select attempts from cajex.start_export(%s)", (export_id,))
        assert a1.fetchone()["attempts"] == 1
        a2 = conn.execute("select attempts from cajex.start_export(%s)", (export_id,))
        assert a2.fetchone()["attempts"] == 2
        conn.execute("savepoint s")
        with pytest.raises(psycopg.Error) as stale:
            finish(conn, 1, 1)
        assert stale.value.sqlstate == "CXSTL"
        conn.execute("rollback to savepoint s")
        # The current attempt may name only its own objects.
        with pytest.raises(psycopg.Error) as misplaced:
            finish(conn, 2, 1)
        assert misplaced.value.sqlstate == "CXINV"
        conn.execute("rollback to savepoint s")
        # A superseded attempt's failure does not send the export back.
        changed = conn.execute(
            "select cajex.fail_export(%s, 'boom', false, 1) as c", (export_id,)
        ).fetchone()["c"]
        assert changed is False
        finish(conn, 2, 2)
        row = conn.execute(
            "select status, attempts from cajex.exports where id = %s", (export_id,)
        ).fetchone()
        assert row == {"status": "ready", "attempts": 2}


def test_the_purge_leaves_no_deletion_notice_naming_the_workspace(
    world, settings, db_urls
):
    ws = world.workspace()
    name = ws.slug.title()
    _delete(world, ws)
    notice = world.admin.execute(
        "select id, workspace_id, kind, payload, attempts from cajex.outbox"
        " where kind = 'email.send' and payload ->> 'template' = 'workspace_deleted'"
        " and payload -> 'params' ->> 'workspace_id' = %s",
        (str(ws.id),),
    ).fetchone()
    assert notice["workspace_id"] == ws.id
    assert notice["payload"]["to"] == ws.owner.email
    # The notice goes out although the workspace opens no context now.
    import cajex.jobs.email  # noqa: F401  (registers the handler)

    dev = dataclasses.replace(
        settings, env="development", database_url=db_urls["worker"]
    )
    run_job(dev, notice)
    _mark_done(world, notice)
    delivered = world.admin.execute(
        "select workspace_id, recipient, text_body from cajex.email_deliveries"
        " where outbox_id = %s",
        (notice["id"],),
    ).fetchone()
    assert delivered["recipient"] == ws.owner.email and name in delivered["text_body"]

    world.admin.execute(
        "update cajex.workspaces set purge_after = now() - interval '1 minute'"
        " where id = %s",
        (ws.id,),
    )
    store = storage.LocalStorage(settings.data_dir / "exports", settings.secret_key)
    assert retention.purge_workspace(db_urls["worker"], store, ws.id, pace=0)
    left = world.admin.execute(
        "select 'outbox' as t, id::text from cajex.outbox"
        " where payload::text like %(id)s or payload::text like %(name)s"
        " union all"
        " select 'email_deliveries', outbox_id::text from cajex.email_deliveries"
        " where outbox_id = %(notice)s or text_body like %(name)s"
        " or subject like %(name)s",
        {"id": f"%{ws.id}%", "name": f"%{name}%", "notice": notice["id"]},
    ).fetchall()
    assert left == []
