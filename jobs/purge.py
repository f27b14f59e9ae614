"""The purge job (run by `rq cron`): workspaces past their recovery window
lose their rows, objects and keys; a tombstone remains. See cajex.retention."""

from __future__ import annotations

from cajex import config, log, retention, storage

_logger = log.get("cajex.jobs.purge")


def purge_due_workspaces(limit: int = 10) -> int:
    """Purge up to `limit` due workspaces; returns how many were purged."""
    settings = config.from_env()
    done = retention.purge_due(
        settings.worker_url, storage.from_settings(settings), limit=limit
    )
    _logger.info("purge.sweep", purged=len(done))
    return len(done)
