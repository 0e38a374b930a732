"""The caller's address, as the proxies in front of the gateway saw it.

``X-Forwarded-For`` is a list each proxy appends to, so only its last entries are
trustworthy: the first is whatever the client chose to write.  ``trusted_proxies`` is how
many proxies in front of the gateway append to it; the caller is the entry written by the
outermost of them.  On Cloud Functions and Cloud Run that is one (Google's front end
appends the address it saw); behind an external HTTPS load balancer it is two (the
balancer appends the client's address and its own).  Off Google Cloud the default is
none: the peer address of the connection.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from gateway.config import Config, on_google_cloud


def trusted_proxies(config: Config) -> int:
    """``trusted_proxies`` from the configuration; 1 on Google Cloud, 0 elsewhere."""
    if config.trusted_proxies is None:
        return 1 if on_google_cloud() else 0
    return config.trusted_proxies


def caller_address(forwarded_for: str, peer: str | None, hops: int) -> str | None:
    """The address the outermost trusted proxy saw, or the peer's with no proxies."""
    candidate = peer or ""
    if hops > 0:
        entries = [e.strip() for e in forwarded_for.split(",") if e.strip()]
        if entries:
            # Fewer entries than proxies: the first was still written by a trusted one.
            candidate = entries[max(len(entries) - hops, 0)]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


def masked(address: str | None) -> str | None:
    """The network, not the host (/24, /48): enough for abuse triage, no more."""
    if address is None:
        return None
    ip = ipaddress.ip_address(address)
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


def client_ip(request: Any, config: Config | None) -> str | None:
    """What the access log records as ``remoteIp``."""
    hops = trusted_proxies(config) if config is not None else 0
    forwarded = request.headers.get("X-Forwarded-For", "")
    return masked(caller_address(forwarded, request.remote_addr, hops))
