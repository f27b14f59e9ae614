"""Delete, restore and purge: a deleted workspace is unreachable by every
path, a restore brings back every row, and a purge removes rows, objects and
keys of that workspace only."""

from __future__ import annotations

import json
import urllib.parse

import psycopg
import pytest
from psycopg.rows import dict_row
from structlog.testing import capture_logs
from test_export_support import export_row, outbox_job, request_export, run_job

from cajex import jwt, retention, storage
from cajex.testing import postgrest


def owned_counts(admin, workspace_id) -> dict[str, int]:
    """Rows of the workspace in every workspace-owned table the catalog names."""
    tables = admin.execute(
        "select table_name::text as t, column_name as c from cajex_private.purge_tables()"
    ).fetchall()
    return {
        f"{r['t']}.{r['c']}": admin.execute(
            f"select count(*) as n from {r['t']} where {r['c']} = %s",  # noqa: S608
            (workspace_id,),
        ).fetchone()["n"]
        for r in tables
    }


def populate(world, ws, n_projects=5):
    world.member(ws, role="admin")
    world.member(ws, role="viewer")
    for i in range(n_projects):
        world.project(ws, name=f"P{i}")
    world.admin.execute(
        "insert into cajex.workspace_keys (workspace_id, version, wrapped_key, master_key_id)"
        " values (%s, 1, '\\x00', 'test')",
        (ws.id,),
    )


def delete(client, ws, csrf_headers, name=None):
    return client.post(
        f"/w/{ws.slug}/api/v1/workspace/delete",
        json={"confirm_name": name or ws.slug.title()},
        headers=csrf_headers,
    )


def postgrest_replay(db_urls, settings, user, ws) -> tuple:
    """PostgREST's transaction for a GET: role, verified claims, pre-request, a read."""
    claims = jwt.verify(
        jwt.postgrest_token(settings.jwt_secret, user.id, user.session_id, str(ws.id)),
        settings.jwt_secret,
    )
    with postgrest.request(db_urls["authenticator"], "cajex_api", claims) as conn:
        opened = conn.execute("select cajex.current_workspace_id() as w").fetchone()[
            "w"
        ]
        rows = conn.execute("select count(*) as n from api.projects").fetchone()["n"]
    return opened, rows


def test_deleted_workspace_is_unreachable_then_restored_whole(
    world, settings, signed_in, csrf_headers, db_urls
):
    ws = world.workspace()
    other = world.workspace()
    populate(world, ws)
    populate(world, other)
    export_id = request_export(world, ws)
    run_job(settings, outbox_job(world, ws))
    key = export_row(world, ws, export_id)["objects"]["json"]["key"]
    store = storage.LocalStorage(settings.data_dir / "exports", settings.secret_key)
    link = dict(
        urllib.parse.parse_qsl(urllib.parse.urlsplit(store.link(ws.id, key)).query)
    )

    owner = signed_in(ws.owner)
    assert owner.get("/exports/download", query_string=link).status_code == 200
    assert postgrest_replay(db_urls, settings, ws.owner, ws) == (ws.id, 5)
    before = owned_counts(world.admin, ws.id)
    other_before = owned_counts(world.admin, other.id)

    # Deny first: a wrong name, a non-owner, another workspace's owner.
    assert delete(owner, ws, csrf_headers, name="not the name").status_code == 422
    admin_user = world.user()
    world.member(ws, admin_user, role="admin")
    assert delete(signed_in(admin_user), ws, csrf_headers).status_code == 403
    assert delete(signed_in(other.owner), ws, csrf_headers).status_code == 404
    before = owned_counts(world.admin, ws.id)

    resp = delete(owner, ws, csrf_headers)
    assert resp.status_code == 200, resp.data
    assert resp.get_json()["status"] == "deleted"

    # Gone for everyone, by every path.
    assert owner.get(f"/w/{ws.slug}/projects").status_code == 404
    assert owner.get(f"/w/{ws.slug}/api/v1/projects").status_code == 404
    assert owner.get(f"/w/{ws.slug}/exports").status_code == 404
    assert signed_in(admin_user).get(f"/w/{ws.slug}/api/v1/projects").status_code == 404
    with world.as_user(ws.owner) as (conn, _):
        assert (
            conn.execute(
                "select count(*) as n from cajex.workspaces where id = %s", (ws.id,)
            ).fetchone()["n"]
            == 0
        )
    me = owner.get("/api/v1/me").get_json()
    assert str(ws.id) not in {w["id"] for w in me["workspaces"]}
    assert postgrest_replay(db_urls, settings, ws.owner, ws) == (None, 0)
    with world.as_job(ws) as (conn, opened):
        assert opened.workspace_id is None
        assert (
            conn.execute("select count(*) as n from cajex.projects").fetchone()["n"]
            == 0
        )
    assert owner.get("/exports/download", query_string=link).status_code == 404
    # The other workspace is untouched and still works.
    assert (
        signed_in(other.owner).get(f"/w/{other.slug}/api/v1/projects").status_code
        == 200
    )

    # The notice, the billing job and the organisation's record.
    notice = world.admin.execute(
        "select payload from cajex.outbox where kind = 'email.send'"
        " and payload ->> 'template' = 'workspace_deleted'"
    ).fetchone()["payload"]
    assert notice["to"] == ws.owner.email and notice["params"]["purge_after"]
    assert (
        world.admin.execute(
            "select count(*) as n from cajex.outbox where kind = 'billing.workspace_deleted'"
            " and workspace_id = %s",
            (ws.id,),
        ).fetchone()["n"]
        == 1
    )

    # Only the owner lists and restores it.
    listed = owner.get("/api/v1/workspaces/deleted").get_json()["items"]
    assert [w["id"] for w in listed] == [str(ws.id)]
    assert (
        signed_in(other.owner).get("/api/v1/workspaces/deleted").get_json()["items"]
        == []
    )
    outsider = signed_in(other.owner).post(
        f"/api/v1/workspaces/{ws.id}/restore", headers=csrf_headers
    )
    assert outsider.status_code == 404
    assert (
        signed_in(admin_user)
        .post(f"/api/v1/workspaces/{ws.id}/restore", headers=csrf_headers)
        .status_code
        == 404
    )

    restored = owner.post(f"/api/v1/workspaces/{ws.id}/restore", headers=csrf_headers)
    assert restored.status_code == 200 and restored.get_json()["slug"] == ws.slug
    after = owned_counts(world.admin, ws.id)
    # Every row is back; the audit log and the outbox gained the events.
    for table, n in before.items():
        if table in ("cajex.audit_log.workspace_id", "cajex.outbox.workspace_id"):
            assert after[table] >= n
        else:
            assert after[table] == n, table
    assert owned_counts(world.admin, other.id) == other_before
    assert owner.get(f"/w/{ws.slug}/api/v1/projects").get_json()["items"]
    assert postgrest_replay(db_urls, settings, ws.owner, ws) == (ws.id, 5)
    assert owner.get("/exports/download", query_string=link).status_code == 200
    assert (
        world.admin.execute(
            "select count(*) as n from cajex.outbox where kind = 'billing.workspace_restored'"
        ).fetchone()["n"]
        == 1
    )


def _due(world, ws):
    """Move the workspace's purge date into the past (the window has passed)."""
    world.admin.execute(
        "update cajex.workspaces set purge_after = now() - interval '1 minute' where id = %s",
        (ws.id,),
    )


def test_purge_removes_rows_objects_and_keys_of_that_workspace_only(
    world, settings, signed_in, csrf_headers, db_urls
):
    ws = world.workspace()
    other = world.workspace()
    populate(world, ws, 12)
    populate(world, other, 7)
    for w in (ws, other):
        request_export(world, w)
        run_job(settings, outbox_job(world, w))
    store = storage.LocalStorage(settings.data_dir / "exports", settings.secret_key)
    objects = settings.data_dir / "exports" / "objects"
    assert list((objects / str(ws.id)).rglob("*.json"))
    other_before = owned_counts(world.admin, other.id)
    other_files = sorted(
        p.name for p in (objects / str(other.id)).rglob("*") if p.is_file()
    )

    assert delete(signed_in(ws.owner), ws, csrf_headers).status_code == 200
    # Not due yet: nothing happens.
    assert retention.purge_workspace(db_urls["worker"], store, ws.id) is None
    _due(world, ws)
    # Once the window has passed it cannot be restored.
    late = signed_in(ws.owner).post(
        f"/api/v1/workspaces/{ws.id}/restore", headers=csrf_headers
    )
    assert late.status_code == 410

    # A purge that crashed after one small batch resumes and completes.
    worker = psycopg.connect(db_urls["worker"], autocommit=True, row_factory=dict_row)
    assert worker.execute(
        "select cajex_private.purge_begin(%s) as ok", (ws.id,)
    ).fetchone()["ok"]
    assert (
        worker.execute(
            "select deleted as n from cajex_private.purge_batch("
            "%s, 'cajex.audit_log'::regclass, 'workspace_id', 3)",
            (ws.id,),
        ).fetchone()["n"]
        == 3
    )
    # A table that is not workspace-owned is refused.
    with pytest.raises(psycopg.Error) as refused:
        worker.execute(
            "select cajex_private.purge_batch(%s, 'cajex.users'::regclass, 'id', 3)",
            (ws.id,),
        )
    assert refused.value.sqlstate == "CXINV"
    worker.close()

    done = retention.purge_due(db_urls["worker"], store, batch=4)
    assert [d["workspace_id"] for d in done] == [str(ws.id)]
    assert done[0]["keys"] == 1 and done[0]["objects"] >= 3

    assert all(n == 0 for n in owned_counts(world.admin, ws.id).values())
    assert not (objects / str(ws.id)).exists()
    assert owned_counts(world.admin, other.id) == other_before
    assert (
        sorted(p.name for p in (objects / str(other.id)).rglob("*") if p.is_file())
        == other_files
    )
    tomb = world.admin.execute(
        "select * from cajex.workspaces where id = %s", (ws.id,)
    ).fetchone()
    assert tomb["status"] == "purged" and tomb["purged_at"] is not None
    assert tomb["slug"] != ws.slug and tomb["name"] == "Purged workspace"
    assert tomb["settings"] == {} and tomb["deleted_by"] is None
    record = world.admin.execute(
        "select details from cajex.organisation_audit_log"
        " where workspace_id = %s and action = 'workspace.purged'",
        (ws.id,),
    ).fetchall()
    assert len(record) == 1 and record[0]["details"]["keys"] == 1
    assert ws.owner.email not in json.dumps(record[0]["details"])

    # Idempotent: nothing more to do, and the slug is free again.
    assert retention.purge_workspace(db_urls["worker"], store, ws.id) is None
    assert retention.purge_due(db_urls["worker"], store) == []
    world.workspace(slug=ws.slug)


def test_retention_days_come_from_the_deployment(monkeypatch):
    assert retention.retention_days({}) == 30
    assert retention.retention_days({"CAJEX_RETENTION_DAYS": "7"}) == 7
    for bad in ("0", "-1", "x", "4000"):
        with pytest.raises(ValueError):
            retention.retention_days({"CAJEX_RETENTION_DAYS": bad})


def _deleted_and_due(world, ws):
    world.admin.execute(
        "update cajex.workspaces set status = 'deleted', deleted_at = now(),"
        " purge_after = now() - interval '1 minute' where id = %s",
        (ws.id,),
    )


def test_a_large_workspace_is_purged_in_page_order_and_nothing_escapes(
    world, db_urls, monkeypatch
):
    big, small, neighbour = world.workspace(), world.workspace(), world.workspace()
    # The big workspace's rows and the neighbour's interleaved on the pages.
    world.admin.execute(
        "insert into cajex.projects (workspace_id, name, created_by)"
        " select case when g %% 8 = 0 then %s else %s end, 'P' || g, null"
        " from generate_series(1, 4800) g",
        (neighbour.id, big.id),
    )
    world.project(small)
    neighbour_before = owned_counts(world.admin, neighbour.id)
    big_rows = sum(owned_counts(world.admin, big.id).values())
    for ws in (big, small):
        _deleted_and_due(world, ws)

    worker = psycopg.connect(db_urls["worker"], autocommit=True, row_factory=dict_row)
    for ws in (big, small):
        assert worker.execute("select cajex_private.purge_begin(%s) as ok", (ws.id,)).fetchone()["ok"]
    walks = "select cajex_private.purge_walks(%s, 'cajex.projects', 'workspace_id') as w"
    # A workspace with a row on most pages is walked; one row among many pages is not.
    assert worker.execute(walks, (big.id,)).fetchone()["w"] is True
    assert worker.execute(walks, (small.id,)).fetchone()["w"] is False

    # Bad ranges, a set-null reference, and a workspace not being purged are refused.
    pages = "select * from cajex_private.purge_pages(%s, %s::regclass, %s, %s, %s)"
    for args, code in (
        ((big.id, "cajex.projects", "workspace_id", 0, 0), "CXINV"),
        ((big.id, "cajex.projects", "workspace_id", 0, 1025), "CXINV"),
        ((big.id, "cajex.projects", "workspace_id", -1, 8), "CXINV"),
        ((big.id, "cajex.onboarding_drafts", "workspace_id", 0, 8), "CXINV"),
        ((big.id, "cajex.users", "id", 0, 8), "CXINV"),
        ((neighbour.id, "cajex.projects", "workspace_id", 0, 8), "CXNFD"),
    ):
        with pytest.raises(psycopg.Error) as refused:
            worker.execute(pages, args)
        assert refused.value.sqlstate == code, args
    worker.close()

    # A row that escapes the walk (here: written behind it once it has
    # passed) is found by the check after it and taken by the keyset batches.
    walked, left = [], []
    real_walk = retention._walk_pages

    def walk_then_escape(conn, workspace_id, table, column, batch, pace):
        n = real_walk(conn, workspace_id, table, column, batch, pace)
        if table == "cajex.projects" and workspace_id == str(big.id):
            walked.append(n)
            world.admin.execute(
                "insert into cajex.projects (workspace_id, name) values (%s, 'late')",
                (big.id,),
            )
            left.append(conn.execute(
                "select cajex_private.purge_rows_left(%s, 'cajex.projects', 'workspace_id') as l",
                (workspace_id,),
            ).fetchone()["l"])
        return n

    monkeypatch.setattr(retention, "_walk_pages", walk_then_escape)
    monkeypatch.setattr(retention, "PROGRESS_SECONDS", 0.0)
    with capture_logs() as logs:
        summary = retention.purge_workspace(db_urls["worker"], None, big.id, batch=500)
    assert walked == [4200] and left == [True]
    # A long walk says how far it has got, table by table.
    progress = [e for e in logs if e["event"] == "purge.progress"]
    assert progress and all(e["table"] == "cajex.projects" for e in progress)
    assert progress[-1]["rows"] <= 4200 and progress[-1]["page"] <= progress[-1]["pages"]
    assert any(e["event"] == "purge.table" and e["table"] == "cajex.projects"
               and e["rows"] == 4201 for e in logs)
    assert summary["rows"] == big_rows + 1
    assert all(n == 0 for n in owned_counts(world.admin, big.id).values())
    assert owned_counts(world.admin, neighbour.id) == neighbour_before

    # The small workspace goes in key order, all of it.
    assert retention.purge_workspace(db_urls["worker"], None, small.id, batch=500)["rows"] >= 1
    assert all(n == 0 for n in owned_counts(world.admin, small.id).values())


PURGE_CALLS = [
    ("select * from cajex_private.purge_due(10)", False),
    ("select cajex_private.purge_begin(%s)", True),
    (
        "select * from cajex_private.purge_batch(%s, 'cajex.projects'::regclass, 'workspace_id', 10)",
        True,
    ),
    ("select cajex_private.purge_destroy_keys(%s)", True),
    ("select cajex_private.purge_finish(%s, 0)", True),
]


@pytest.mark.parametrize(("query", "takes_id"), PURGE_CALLS)
def test_a_request_can_neither_purge_a_workspace_nor_mark_one_purged(
    world, db_urls, query, takes_id
):
    """Purging deletes a due workspace's rows past RLS: it is the worker's
    (cajex_worker). From another workspace's transaction, or with none, a
    request is refused and the deleted workspace keeps every row."""
    ws, other = world.workspace(), world.workspace()
    populate(world, ws)
    _deleted_and_due(world, ws)
    before = owned_counts(world.admin, ws.id)
    params = (ws.id,) if takes_id else ()
    with world.app_connection() as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with world.as_user(other.owner, other, conn=conn) as (c, _):
                c.execute(query, params)
        conn.autocommit = True
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(query, params)
    assert owned_counts(world.admin, ws.id) == before
    status = world.admin.execute(
        "select status from cajex.workspaces where id = %s", (ws.id,)
    ).fetchone()["status"]
    assert status == "deleted"


def test_a_purge_is_not_marked_done_while_rows_or_keys_are_left(world, db_urls):
    """purge_finish checks that nothing of the workspace is left: a purge that
    skipped a table, or its keys, stays open, and running it again ends it."""
    ws = world.workspace()
    populate(world, ws)
    _deleted_and_due(world, ws)
    worker = psycopg.connect(db_urls["worker"], autocommit=True, row_factory=dict_row)
    try:
        assert worker.execute(
            "select cajex_private.purge_begin(%s) as ok", (ws.id,)
        ).fetchone()["ok"]
        with pytest.raises(psycopg.Error) as left:
            worker.execute("select cajex_private.purge_finish(%s, 0)", (ws.id,))
        assert left.value.sqlstate == "CXSTL"
        tables = worker.execute(
            "select table_name::text as t, column_name as c"
            " from cajex_private.purge_tables() where table_name <> 'cajex.workspace_keys'::regclass"
        ).fetchall()
        for t in tables:
            while worker.execute(
                "select deleted from cajex_private.purge_batch(%s, %s::regclass, %s, 1000)",
                (ws.id, t["t"], t["c"]),
            ).fetchone()["deleted"]:
                pass
        # Every row is gone but the data keys are not destroyed yet.
        with pytest.raises(psycopg.Error) as keys:
            worker.execute("select cajex_private.purge_finish(%s, 0)", (ws.id,))
        assert keys.value.sqlstate == "CXSTL" and "keys" in str(keys.value)
        assert (
            world.admin.execute(
                "select status from cajex.workspaces where id = %s", (ws.id,)
            ).fetchone()["status"]
            == "deleted"
        )
    finally:
        worker.close()
    summary = retention.purge_workspace(db_urls["worker"], None, ws.id)
    assert summary is not None and summary["keys"] >= 1
    assert sum(owned_counts(world.admin, ws.id).values()) == 0
    assert (
        world.admin.execute(
            "select status from cajex.workspaces where id = %s", (ws.id,)
        ).fetchone()["status"]
        == "purged"
    )
