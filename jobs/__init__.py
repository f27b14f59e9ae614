"""Background jobs: small importable functions run by RQ workers.

Jobs are never enqueued directly. A change writes a row to the outbox table
in its own transaction (cajex_private.enqueue_job); the relay
(`cajex.jobs.relay`) hands due rows to RQ; `cajex.jobs.runner.run_outbox_job`
runs the registered handler for the row's kind, once to visible effect.
"""
