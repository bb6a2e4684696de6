"""Who is asking: the client address, trusting forwarded headers only from known proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from authsvc.config import IPNetwork

_UNKNOWN = "unknown"


def _parse(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(address.strip())
    except ValueError:
        return None


def _trusted(address: str, proxies: Sequence[IPNetwork]) -> bool:
    parsed = _parse(address)
    return parsed is not None and any(parsed in network for network in proxies)


def client_ip(peer: str | None, forwarded_for: str | None, proxies: Sequence[IPNetwork]) -> str:
    """The address to account a request to.

    The socket peer, unless the peer is a trusted proxy: then walk ``X-Forwarded-For`` from the
    right (the hop our proxy appended) and take the first address that is not itself a trusted
    proxy. Anything left of that was written by the client and can be forged, so it is ignored.
    """
    if not peer:
        return _UNKNOWN
    if not forwarded_for or not _trusted(peer, proxies):
        return peer
    for hop in reversed(forwarded_for.split(",")):
        hop = hop.strip()
        if _parse(hop) is None:
            # A malformed hop: stop trusting the chain here and account it to the proxy.
            return peer
        if not _trusted(hop, proxies):
            return hop
    return peer
