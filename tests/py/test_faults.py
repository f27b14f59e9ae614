"""Faults with real processes: PostgreSQL crashes, Redis vanishes, a worker
is killed mid-job. Nothing acknowledged is lost, nothing runs twice.

These tests run their own PostgreSQL cluster (with fsync and synchronous
commit on, as production has them), because they stop and restart it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
import redis
from cajex.web.middleware import close_pools
from rq import Queue

from cajex import ROOT, config
from cajex.localservices import LocalPostgres, LocalRedis
from cajex.migrate import migrate

pytestmark = pytest.mark.slow


@pytest.fixture
def own_cluster(tmp_path):
    """A private cluster with a migrated database, a workspace and a signed-in owner."""
    pg = LocalPostgres(tmp_path / "pg").start()
    secret = secrets.token_hex(32)
    migrate(pg.url(), secret)
    admin = psycopg.connect(pg.url(), autocommit=True)
    user = admin.execute(
        "insert into cajex.users (email) values ('owner@faults.test') returning id"
    ).fetchone()[0]
    org = admin.execute(
        "insert into cajex.organisations (name) values ('Faults') returning id"
    ).fetchone()[0]
    ws = admin.execute(
        "insert into cajex.workspaces (organisation_id, slug, name) values (%s, 'faults', 'Faults') returning id",
        (org,),
    ).fetchone()[0]
    admin.execute(
        "insert into cajex.memberships (workspace_id, user_id, role) values (%s, %s, 'owner')",
        (ws, user),
    )
    session_secret = secrets.token_urlsafe(32)
    session_id = admin.execute(
        "select cajex_private.create_session(%s, %s, 'test')",
        (user, hashlib.sha256(session_secret.encode()).digest()),
    ).fetchone()[0]
    admin.close()
    yield {
        "pg": pg,
        "secret": secret,
        "user": user,
        "workspace": ws,
        "session_id": session_id,
        "session_secret": session_secret,
    }
    pg.stop("immediate")


def _app(cluster, tmp_path, redis_url=""):
    from cajex.web import create_app

    settings = config.Settings(
        database_url=cluster["pg"].url("cajex", "cajex_app"),
        redis_url=redis_url,
        env="production",
        secret_key="s" * 40,
        context_secret=cluster["secret"],
        jwt_secret="j" * 48,
        master_key="m" * 64,
        data_dir=tmp_path,
        pool_min=2,
        pool_max=6,
    )
    return create_app(settings, {"TESTING": True})


def _client(app, cluster):
    client = app.test_client()
    with client.session_transaction() as sess:
        sess.update(
            {
                "_user_id": str(cluster["user"]),
                "_fresh": True,
                "sid": str(cluster["session_id"]),
                "sk": cluster["session_secret"],
            }
        )
    return client


def test_postgres_crash_during_a_burst_loses_no_acknowledged_write(
    own_cluster, tmp_path
):
    """Requests fail with 503 while the database is down, succeed after, and every 201 is kept."""
    app = _app(own_cluster, tmp_path)
    acknowledged, statuses, stop = [], [], threading.Event()
    lock = threading.Lock()

    def writer(n):
        client = _client(app, own_cluster)
        i = 0
        while not stop.is_set():
            i += 1
            response = client.post(
                "/w/faults/api/v1/projects", json={"name": f"w{n}-{i}"}
            )
            with lock:
                statuses.append(response.status_code)
                if response.status_code == 201:
                    acknowledged.append(response.json["id"])
            time.sleep(0.01)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    before_crash = len(acknowledged)
    own_cluster["pg"].stop("immediate")  # a crash: no shutdown checkpoint
    time.sleep(1.0)
    own_cluster["pg"].start()
    time.sleep(2.5)
    stop.set()
    for t in threads:
        t.join()
    close_pools(app)

    assert before_crash > 0
    assert set(statuses) <= {201, 503}, (
        f"unexpected statuses: {set(statuses) - {201, 503}}"
    )
    assert 503 in statuses, "the outage was not seen"
    assert statuses[-1] == 201, "requests did not recover after the restart"
    with psycopg.connect(own_cluster["pg"].url()) as conn:
        stored = {
            str(r[0]) for r in conn.execute("select id from cajex.projects").fetchall()
        }
    assert set(acknowledged) <= stored


def _enqueue_heartbeats(cluster, count, payload="{}"):
    from cajex import db

    pool = db.make_pool(cluster["pg"].url("cajex", "cajex_app"), 1, 1)
    ids = []
    with db.as_service(pool, cluster["secret"], cluster["workspace"], "test") as (
        conn,
        opened,
    ):
        assert opened.workspace_id is not None
        for _ in range(count):
            ids.append(
                conn.execute(
                    "select cajex_private.enqueue_job('system.heartbeat', %s::jsonb) as id",
                    (payload,),
                ).fetchone()["id"]
            )
    pool.close()
    return ids


def _heartbeats(cluster) -> int:
    with psycopg.connect(cluster["pg"].url()) as conn:
        return conn.execute(
            "select count(*) from cajex.audit_log where action = 'system.heartbeat'"
        ).fetchone()[0]


def _worker_env(cluster, redis_url, **extra):
    return dict(
        os.environ,
        DATABASE_URL=cluster["pg"].url("cajex", "cajex_app"),
        REDIS_URL=redis_url,
        CAJEX_CONTEXT_SECRET=cluster["secret"],
        CAJEX_ENV="development",
        PYTHONPATH=str(ROOT),
        **extra,
    )


def test_redis_outage_queues_jobs_in_the_outbox_and_runs_each_once_after(
    own_cluster, tmp_path, monkeypatch
):
    """With Redis gone requests still work and jobs wait; once it is back each runs exactly once."""
    from cajex.jobs.relay import relay_once

    rd = LocalRedis(tmp_path / "redis", persist=False).start()
    app = _app(own_cluster, tmp_path, rd.url)
    client = _client(app, own_cluster)
    rd.stop()

    assert (
        client.post(
            "/w/faults/api/v1/projects", json={"name": "during outage"}
        ).status_code
        == 201
    )
    assert client.get("/w/faults/api/v1/projects").status_code == 200
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json["checks"]["redis"] == "unavailable"

    ids = _enqueue_heartbeats(own_cluster, 5)
    relay_conn = psycopg.connect(own_cluster["pg"].url("cajex", "cajex_worker"))
    queue = Queue(
        "cajex",
        connection=redis.Redis.from_url(
            rd.url, socket_timeout=1, socket_connect_timeout=1
        ),
    )
    assert relay_once(relay_conn, queue) == 0  # nothing handed over, nothing lost

    rd = LocalRedis(tmp_path / "redis", port=rd.port, persist=False).start()
    queue = Queue("cajex", connection=redis.Redis.from_url(rd.url))
    assert relay_once(relay_conn, queue) == len(ids)
    # A second relay pass (a duplicate delivery) must change nothing.
    subprocess.run(
        [sys.executable, "-m", "cajex.cli", "worker", "--burst"],
        env=_worker_env(own_cluster, rd.url),
        check=True,
        cwd=ROOT,
        timeout=120,
    )
    for job_id in ids:  # hand every job over again, as a confused relay would
        queue.enqueue("cajex.jobs.runner.run_outbox_job", job_id)
    subprocess.run(
        [sys.executable, "-m", "cajex.cli", "worker", "--burst"],
        env=_worker_env(own_cluster, rd.url),
        check=True,
        cwd=ROOT,
        timeout=120,
    )
    relay_conn.close()
    rd.stop()
    close_pools(app)
    with psycopg.connect(own_cluster["pg"].url()) as conn:
        errors = conn.execute(
            "select last_error from cajex.outbox where last_error is not null"
        ).fetchall()
    assert errors == []
    assert _heartbeats(own_cluster) == len(ids)


def test_a_worker_killed_mid_job_is_retried_and_the_job_takes_effect_once(
    own_cluster, tmp_path
):
    """SIGKILL during a job: after the lease it runs again, and the orphaned attempt that
    wakes up late makes no second effect."""
    from cajex.jobs.relay import relay_once

    rd = LocalRedis(tmp_path / "redis", persist=False).start()
    env = _worker_env(own_cluster, rd.url, CAJEX_JOB_LEASE_SECONDS="3")
    os.environ["CAJEX_JOB_LEASE_SECONDS"] = "3"
    try:
        [job] = _enqueue_heartbeats(own_cluster, 1, '{"hold_seconds": 8}')
        relay_conn = psycopg.connect(own_cluster["pg"].url("cajex", "cajex_worker"))
        queue = Queue("cajex", connection=redis.Redis.from_url(rd.url))
        assert relay_once(relay_conn, queue) == 1
        worker = subprocess.Popen(
            [sys.executable, "-m", "cajex.cli", "worker"], env=env, cwd=ROOT
        )
        deadline = time.monotonic() + 60
        with psycopg.connect(own_cluster["pg"].url(), autocommit=True) as admin:
            while (
                admin.execute(
                    "select started_at from cajex.outbox where id = %s", (job,)
                ).fetchone()[0]
                is None
            ):
                assert time.monotonic() < deadline, "the worker never started the job"
                time.sleep(0.1)
            # RQ runs the job in a forked work horse, which outlives a killed
            # parent: it is the worker presumed dead that wakes up late.
            horses = subprocess.run(
                ["pgrep", "-P", str(worker.pid)], capture_output=True, text=True
            ).stdout.split()
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            assert _heartbeats(own_cluster) == 0
            # Hold the retry short: the payload is rewritten as an operator would.
            admin.execute(
                "update cajex.outbox set payload = '{}' where id = %s", (job,)
            )
            time.sleep(3.5)  # the lease expires
            assert relay_once(relay_conn, queue) == 1
        subprocess.run(
            [sys.executable, "-m", "cajex.cli", "worker", "--burst"],
            env=env,
            check=True,
            cwd=ROOT,
            timeout=120,
        )
        assert _heartbeats(own_cluster) == 1
        # The orphaned horse finishes its hold and tries to commit its effect.
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{pid}").exists() for pid in horses):
            assert time.monotonic() < deadline, "the orphaned work horse never ended"
            time.sleep(0.2)
        relay_conn.close()
    finally:
        os.environ.pop("CAJEX_JOB_LEASE_SECONDS", None)
        rd.stop()
    assert _heartbeats(own_cluster) == 1
    with psycopg.connect(own_cluster["pg"].url()) as conn:
        done, attempts = conn.execute(
            "select done_at is not null, attempts from cajex.outbox where id = %s",
            (job,),
        ).fetchone()
    assert done and attempts == 2


def test_pool_reconnects_after_a_clean_restart(own_cluster, tmp_path):
    """After the database restarts, at most the first use of each old connection fails."""
    app = _app(own_cluster, tmp_path)
    client = _client(app, own_cluster)
    assert client.get("/w/faults/api/v1/projects").status_code == 200
    own_cluster["pg"].stop("fast")
    assert client.get("/w/faults/api/v1/projects").status_code == 503
    own_cluster["pg"].start()
    statuses = [client.get("/w/faults/api/v1/projects").status_code for _ in range(10)]
    close_pools(app)
    assert statuses[-5:] == [200] * 5
    assert Path(own_cluster["pg"].pgdata).exists()
