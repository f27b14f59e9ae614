"""/metrics for Prometheus. Expose it only to the monitoring network: set
CAJEX_METRICS_TOKEN to require `Authorization: Bearer <token>`."""

from __future__ import annotations

import hmac
import os

from flask import Blueprint, Response, abort, current_app, request

from cajex import metrics

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def scrape():
    token = os.environ.get("CAJEX_METRICS_TOKEN", "")
    if token:
        sent = request.headers.get("Authorization", "")
        if not hmac.compare_digest(sent, f"Bearer {token}"):
            abort(401)
    body, content_type = metrics.render(current_app.extensions["cajex.pool"])
    return Response(body, content_type=content_type)
