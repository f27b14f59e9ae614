"""Liveness and readiness: /livez says the process answers, /healthz says
whether the database and Redis do."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

bp = Blueprint("health", __name__)


@bp.get("/livez")
def livez():
    return jsonify(status="ok")


@bp.get("/healthz")
def healthz():
    settings = current_app.extensions["cajex.settings"]
    checks = {}
    try:
        with current_app.extensions["cajex.pool"].connection(timeout=2) as conn:
            conn.execute("select 1").fetchone()
        checks["database"] = "ok"
    except Exception:  # noqa: BLE001 - any failure means "not ready"
        checks["database"] = "unavailable"
    if settings.redis_url:
        try:
            import redis

            redis.Redis.from_url(
                settings.redis_url, socket_timeout=1, socket_connect_timeout=1
            ).ping()
            checks["redis"] = "ok"
        except Exception:  # noqa: BLE001
            checks["redis"] = "unavailable"
    else:
        checks["redis"] = "not_configured"
    # Redis down does not make the app unready: requests that do not need it
    # still work, and jobs wait in the outbox.
    ready = checks["database"] == "ok"
    return jsonify(
        status="ok" if ready else "unavailable", checks=checks
    ), 200 if ready else 503
