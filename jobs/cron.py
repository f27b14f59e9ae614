"""Recurring jobs, for `rq cron --url REDIS_URL jobs/cron.py` (started by
`cajex up`). Each job is idempotent: a missed or doubled run does no harm."""

from cajex.jobs.export import expire_exports
from cajex.jobs.purge import purge_due_workspaces
from cajex.jobs.relay import QUEUE
from rq import cron

# Exports are deleted 7 days after they are ready; hourly keeps that close.
cron.register(
    expire_exports, queue_name=QUEUE, cron="17 * * * *", name="exports.expire"
)
# Purges run every 15 minutes, a few workspaces at a time.
cron.register(
    purge_due_workspaces,
    queue_name=QUEUE,
    cron="*/15 * * * *",
    job_timeout=3600,
    name="retention.purge",
)
