"""Where the AI gateway may connect.

A workspace admin chooses the provider's base URL, so without a check the
gateway would be a proxy into the platform's own network (SSRF): loopback
services, the private network, a cloud metadata endpoint, with the answer
read back as a draft. So:

* `check_url` refuses, at save time and again before each call, a URL that
  is not plain http(s), names a user or password, carries a query or a
  fragment, or names (or resolves to) an address that is not public;
* `http_client` builds the provider clients' HTTP client: it resolves the
  host when it connects, checks every address, and connects to the checked
  address itself, so DNS cannot answer differently between check and
  connect (rebinding); redirects are never followed, and no proxy or
  .netrc is read from the environment.

`allow_private` (the deployment setting CAJEX_AI_ALLOW_PRIVATE_HOSTS) lets a
self-hosted model on loopback or the private network through; it is off by
default.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse

# The HTTP library the providers' official clients are built on: current
# releases of both use the httpx2 fork (they refuse an httpx client).
try:
    import httpcore2 as httpcore
    import httpx2 as httpx
except ImportError:  # older client releases
    import httpcore
    import httpx


class Refused(Exception):
    """The URL or the address it resolves to may not be called."""

    def __init__(self, reason: str):
        super().__init__(f"provider address refused: {reason}")
        self.reason = reason


def default_allow_private() -> bool:
    """The deployment setting, for callers that were not handed one."""
    from cajex import config

    return config.from_env().ai_allow_private_hosts


def is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether `ip` is a public unicast address (IPv4-in-IPv6 forms unwrapped)."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = (
            ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        )
        if embedded is not None:
            return is_public(embedded)
        if ip in _NAT64:
            return is_public(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return not (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_unspecified
        or ip.is_reserved
        or ip in _CGNAT
        or not ip.is_global
    )


# Carrier-grade NAT (RFC 6598) is not "private" to older Pythons.
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _is_local_name(host: str) -> bool:
    host = host.rstrip(".").lower()
    return host == "localhost" or host.endswith(".localhost")


def resolve(host: str, port: int, allow_private: bool) -> list[str]:
    """Every address of `host`, checked; Refused when any may not be called.

    All must pass: a name with one public and one internal address would let
    the connection pick the internal one.
    """
    if not allow_private and _is_local_name(host):
        raise Refused("local host name")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise Refused("host does not resolve") from None
    addresses = []
    for info in infos:
        text = info[4][0].split("%", 1)[0]
        if not allow_private and not is_public(ipaddress.ip_address(text)):
            raise Refused("internal address")
        if text not in addresses:
            addresses.append(text)
    if not addresses:
        raise Refused("host does not resolve")
    return addresses


def parse(url: str) -> tuple[str, int]:
    """The host and port of a provider URL; Refused when its form is not allowed."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise Refused("malformed URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused("not an http(s) URL")
    if "@" in parts.netloc:
        raise Refused("user or password in URL")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise Refused("query or fragment in URL")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def check_url(url: str | None, allow_private: bool) -> None:
    """Refuse a provider URL that may not be called (None: the provider's own API)."""
    if not url:
        return
    host, port = parse(url)
    resolve(host, port, allow_private)


class _GuardedBackend(httpcore.SyncBackend):
    """Resolves and checks the host at connect time and connects to the checked address."""

    def __init__(self, allow_private: bool):
        self.allow_private = allow_private

    def connect_tcp(
        self, host, port, timeout=None, local_address=None, socket_options=None
    ):
        last = None
        for address in resolve(host, port, self.allow_private):
            try:
                # TLS still verifies the certificate for `host`: httpcore
                # takes the server name from the request, not from here.
                return super().connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as exc:
                last = exc
        raise last  # resolve() returned at least one address


def http_client(timeout: float, allow_private: bool) -> httpx.Client:
    """The HTTP client for a provider's official library (see the module doc)."""
    transport = httpx.HTTPTransport(retries=0)
    pool = getattr(transport, "_pool", None)
    if not isinstance(pool, httpcore.ConnectionPool) or not hasattr(
        pool, "_network_backend"
    ):
        # httpx changed its insides: refuse rather than connect unchecked.
        raise Refused("no guarded transport")
    pool._network_backend = _GuardedBackend(allow_private)
    return httpx.Client(
        transport=transport,
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
    )


def refused_in(exc: BaseException) -> Refused | None:
    """The Refused behind a client library's connection error, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, Refused):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
