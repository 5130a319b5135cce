"""The address other hosts reach this host at (its underlay address), as the kernel's routing
table tells it: the source address of the route towards the server's host.

Without ``--agent-ip`` the server would record the address it sees the agent connect from,
which is 127.0.0.1 when agent and server share a host (what ``scripts/install.sh`` does on
the server's machine): useless to the other hosts. So the agent reports the source address of
the route to the server, or, when the server is on loopback, of the default route.

Asking costs no traffic: ``connect()`` on a UDP socket only picks a route and a source
address, it sends nothing. IPv4 only: an IPv6-only server, no route, or a loopback answer
gives None, and the server falls back to the address it sees. The pure helpers take a
resolver and a socket factory, so that tests need no network.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

from agent.logs import log

__all__ = ["DEFAULT_ROUTE_PROBE", "detect_agent_ip", "route_source", "server_address"]

DEFAULT_ROUTE_PROBE = "192.0.2.1"
"""A documentation address (TEST-NET-1): no host has it, so its route is the default route."""
_PROBE_PORT = 9  # discard; UDP connect sends nothing, any port would do


class UdpSocket(Protocol):
    """The part of a UDP socket the detection uses."""

    def connect(self, address: tuple[str, int], /) -> None: ...

    def getsockname(self) -> Any: ...

    def close(self) -> None: ...


SocketFactory = Callable[[], UdpSocket]
Resolver = Callable[[str, int], list[str]]
"""``(host, port)`` -> the host's IPv4 addresses, best first; OSError when it has none."""


def _udp_socket() -> UdpSocket:
    return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
    return [str(info[4][0]) for info in infos]


def server_address(server_url: str, resolve: Resolver = _resolve) -> str | None:
    """The first IPv4 address of the server URL's host; None if the URL names no host or the
    host does not resolve (to IPv4)."""
    parts = urlsplit(server_url)
    try:
        port = parts.port or (443 if parts.scheme in ("https", "wss") else 80)
    except ValueError:  # a port that is not a number
        return None
    if not parts.hostname:
        return None
    try:
        addresses = resolve(parts.hostname, port)
    except (OSError, UnicodeError):  # gaierror is an OSError; IDNA failures are UnicodeError
        return None
    return addresses[0] if addresses else None


def route_source(destination: str, sockets: SocketFactory = _udp_socket) -> str | None:
    """The local address the kernel would send from to reach ``destination``; None without a
    route (or if the answer is loopback or unspecified, which no other host can use)."""
    sock = sockets()
    try:
        sock.connect((destination, _PROBE_PORT))
        source = str(sock.getsockname()[0])
    except OSError:
        return None
    finally:
        sock.close()
    return None if _unusable(source) else source


def _unusable(address: str) -> bool:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return True
    return parsed.is_loopback or parsed.is_unspecified


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # a name, not an address
        return False


def detect_agent_ip(server_url: str, *, resolve: Resolver = _resolve,
                    sockets: SocketFactory = _udp_socket) -> str | None:
    """This host's address as other hosts should reach it, for the agent to report as its
    ``agentIp``: the source address of the route to ``server_url``'s host, or of the default
    route when the server is on loopback (127.0.0.0/8 or ::1, literally or once resolved).
    None when there is no usable answer. Blocks (name resolution): call it off the event loop.
    """
    # A literal ::1 first: the IPv4 resolver would not take it.
    literal = _loopback(urlsplit(server_url).hostname or "")
    destination = None if literal else server_address(server_url, resolve)
    if literal or (destination is not None and _loopback(destination)):
        destination = DEFAULT_ROUTE_PROBE
    detected = None if destination is None else route_source(destination, sockets)
    if detected is None:
        log.warning("could not detect this host's address (no IPv4 route towards %s); the "
                    "server will record the address it sees; set --agent-ip to choose one",
                    server_url)
    else:
        route = "the default route" if destination == DEFAULT_ROUTE_PROBE \
            else f"the route to {destination}"
        log.info("reporting %s as this host's address (the source address of %s); "
                 "--agent-ip overrides it", detected, route)
    return detected
