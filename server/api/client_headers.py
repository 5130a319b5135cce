"""Who is calling, on every response: ``X-API-Account-Id`` and ``X-API-Client-Ip``.

As Rancher does, a response names the account of the API key that made the request and the
client's address. The address is the peer's, unless the peer is a trusted proxy (setting
``trusted_proxies``; none by default): then ``X-Forwarded-For`` is read from its right-hand
end, skipping trusted proxies, and the first address that is not one is the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Set by the API handler once the caller is authenticated: its account's public id.
ACCOUNT_ID_KEY = web.RequestKey("api_account_id", str)


def parse_networks(text: str) -> tuple[Network, ...]:
    """Addresses and CIDRs separated by commas or spaces; ValueError names a bad one."""
    networks = []
    for item in text.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or CIDR in the trusted proxies: {item!r}") \
                from None
    return tuple(networks)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _trusted(text: str, trusted: Sequence[Network]) -> bool:
    address = _address(text)
    return address is not None and any(address in network for network in trusted)


def client_ip(peer: str, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """The client's address: ``peer``, or what trusted proxies say they forwarded for."""
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",") if hop.strip()]
    address = peer
    while hops and _trusted(address, trusted):
        hop = hops.pop()
        if _address(hop) is None:
            break  # a proxy we trust sent something that is not an address: stop at it
        address = hop
    return address


def client_headers(trusted: Sequence[Network]) -> Middleware:
    """The middleware adding both headers (outside the error middleware, so that error
    responses carry them too)."""

    @web.middleware
    async def add_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if response.prepared:  # a websocket: its headers are gone already
            return response
        account = request.get(ACCOUNT_ID_KEY)
        if account is not None:
            response.headers["X-API-Account-Id"] = account
        if request.remote:
            response.headers["X-API-Client-Ip"] = client_ip(
                request.remote, request.headers.getall("X-Forwarded-For", []), trusted)
        return response

    return add_headers
