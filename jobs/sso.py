"""The `sso.verify_domain` job: look up a pending domain claim's TXT record.

Payload: {"domain"}; the job's workspace is the claiming one. Until the
record is there the job fails and the outbox tries again with a growing
backoff (at most an hour apart), for a week after the claim.
"""

from __future__ import annotations

from cajex.jobs import registry

from cajex import log
from cajex.sso import dns

_logger = log.get("cajex.jobs.sso")


class DomainNotProvenYet(Exception):
    """No TXT record with the claim's value yet: publish it (see the SSO
    settings page); the check repeats by itself."""


@registry.handler("sso.verify_domain")
def verify_domain(ctx: registry.JobContext) -> None:
    domain = str(ctx.payload.get("domain") or "").lower()
    records = dns.txt_records(dns.challenge_name(domain), ctx.settings.dns_server)
    with ctx.pool.connection() as conn:
        outcome = conn.execute(
            "select cajex_private.record_sso_domain_check(%s, %s, %s) as outcome",
            (ctx.workspace_id, domain, records),
        ).fetchone()["outcome"]
    _logger.info(
        "sso.domain_checked",
        workspace_id=ctx.workspace_id,
        domain=domain,
        outcome=outcome,
    )
    if outcome == "not_found":
        raise DomainNotProvenYet(
            f"no TXT record at {dns.challenge_name(domain)} holds the claim's value yet"
        )
