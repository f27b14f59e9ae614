"""The RQ worker for outbox jobs."""

from __future__ import annotations

import redis
from cajex.jobs.relay import QUEUE
from rq import Queue, Worker

from cajex import config, log


def run(burst: bool = False) -> None:
    settings = config.from_env()
    log.configure()
    connection = redis.Redis.from_url(settings.redis_url)
    # Import the handlers before the first job, so an unknown kind is a
    # programming error and not a race.
    from cajex.jobs import registry

    registry.load_all()
    worker = Worker([Queue(QUEUE, connection=connection)], connection=connection)
    # SIGTERM: RQ finishes the job at hand, then exits (graceful shutdown).
    worker.work(burst=burst, with_scheduler=False, logging_level="WARNING")
