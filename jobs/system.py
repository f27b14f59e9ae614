"""Platform jobs: the heartbeat that proves the job pipeline end to end."""

from __future__ import annotations

import time

from cajex.jobs import registry


@registry.handler("system.heartbeat")
def heartbeat(ctx: registry.JobContext) -> None:
    """Write one audit event in the workspace, exactly once per job.

    The event and the job's completion commit in one transaction, so a
    worker that dies before the commit leaves nothing behind, and the retry
    writes the event once. `hold_seconds` (at most 60) keeps the job busy,
    for testing that a killed worker's job is picked up again.
    """
    hold = min(float(ctx.payload.get("hold_seconds", 0) or 0), 60.0)
    with ctx.service("heartbeat") as (conn, opened):
        if opened.workspace_id is None:
            return
        if hold:
            time.sleep(hold)
        conn.execute("select cajex_private.record_heartbeat(%s)", (ctx.id,))
