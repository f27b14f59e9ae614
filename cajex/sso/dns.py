"""TXT lookups that prove a claimed email domain (cajex.claim_sso_domain).

An admin publishes `cajex-domain-verification=<token>` as a TXT record at
_cajex-challenge.<domain>; the worker looks it up here and records what it
found. Only the answer of a DNS server counts, never anything the browser
sends.
"""

from __future__ import annotations

import dns.exception
import dns.resolver

#: Where the record lives, under the claimed domain.
CHALLENGE_LABEL = "_cajex-challenge"


class LookupFailed(Exception):
    """The DNS server could not be asked or did not answer (try again later)."""


def challenge_name(domain: str) -> str:
    return f"{CHALLENGE_LABEL}.{domain}"


def txt_records(name: str, server: str = "", timeout: float = 5.0) -> list[str]:
    """Every TXT string at `name` (empty when there is none), asked of
    `server` (host:port) or the system's resolvers."""
    resolver = dns.resolver.Resolver(configure=not server)
    if server:
        host, _, port = server.rpartition(":")
        resolver.nameservers = [host or server]
        resolver.port = int(port) if host else 53
    resolver.lifetime = timeout
    try:
        answer = resolver.resolve(name, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as exc:
        raise LookupFailed(type(exc).__name__) from None
    return [b"".join(record.strings).decode("utf-8", "replace") for record in answer]
