"""agent.underlay: the address the agent reports as its ``agentIp``, from the routing table."""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest

from agent.underlay import DEFAULT_ROUTE_PROBE, detect_agent_ip, route_source, server_address


class FakeRoutes:
    """A socket factory over a routing table: destination -> source address (None: no
    route). Records every socket it made and what it was connected to."""

    def __init__(self, routes: dict[str, str | None]) -> None:
        self.routes = routes
        self.sockets: list[FakeUdpSocket] = []

    def __call__(self) -> FakeUdpSocket:
        sock = FakeUdpSocket(self.routes)
        self.sockets.append(sock)
        return sock

    def destinations(self) -> list[str]:
        return [s.peer[0] for s in self.sockets if s.peer is not None]


class FakeUdpSocket:
    def __init__(self, routes: dict[str, str | None]) -> None:
        self._routes = routes
        self.peer: tuple[str, int] | None = None
        self.closed = False

    def connect(self, address: tuple[str, int], /) -> None:
        self.peer = address
        if self._routes.get(address[0]) is None:
            raise OSError(101, "Network is unreachable")

    def getsockname(self) -> Any:
        assert self.peer is not None
        return (self._routes[self.peer[0]], 40000)

    def close(self) -> None:
        self.closed = True


def resolver(names: dict[str, list[str]]) -> Any:
    """A resolver over ``names``; an unknown name fails like getaddrinfo."""

    def resolve(host: str, port: int) -> list[str]:
        if host not in names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return names[host]

    return resolve


NO_NAMES = resolver({})


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://127.1.2.3", "http://[::1]:8080"])
def test_a_server_on_loopback_gives_the_default_routes_source(url: str) -> None:
    routes = FakeRoutes({DEFAULT_ROUTE_PROBE: "192.168.1.20"})
    assert detect_agent_ip(url, resolve=NO_NAMES, sockets=routes) == "192.168.1.20"
    assert routes.destinations() == [DEFAULT_ROUTE_PROBE]
    assert all(s.closed for s in routes.sockets)


def test_a_server_name_that_resolves_to_loopback_gives_the_default_routes_source() -> None:
    routes = FakeRoutes({DEFAULT_ROUTE_PROBE: "192.168.1.20", "127.0.0.1": "127.0.0.1"})
    resolve = resolver({"localhost": ["127.0.0.1"]})
    assert detect_agent_ip("http://localhost:8080", resolve=resolve,
                           sockets=routes) == "192.168.1.20"


def test_a_routed_server_gives_the_source_of_the_route_towards_it() -> None:
    """Not the default route's: the server may be on a private network of its own."""
    routes = FakeRoutes({"10.8.0.1": "10.8.0.7", DEFAULT_ROUTE_PROBE: "192.168.1.20"})
    resolve = resolver({"corral.example": ["10.8.0.1", "10.9.0.1"]})
    assert detect_agent_ip("https://corral.example", resolve=resolve,
                           sockets=routes) == "10.8.0.7"
    assert routes.destinations() == ["10.8.0.1"]


def test_no_route_gives_none_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        assert detect_agent_ip("http://127.0.0.1:8080", resolve=NO_NAMES,
                               sockets=FakeRoutes({})) is None
        assert detect_agent_ip("http://10.8.0.1:8080", resolve=resolver(
            {"10.8.0.1": ["10.8.0.1"]}), sockets=FakeRoutes({})) is None
    assert [r.levelno for r in caplog.records] == [logging.WARNING] * 2
    assert "set --agent-ip" in caplog.records[0].getMessage()


def test_a_server_name_that_does_not_resolve_gives_none() -> None:
    routes = FakeRoutes({DEFAULT_ROUTE_PROBE: "192.168.1.20"})
    assert detect_agent_ip("http://nowhere.invalid", resolve=NO_NAMES, sockets=routes) is None
    assert routes.sockets == []


def test_a_loopback_source_is_no_answer() -> None:
    """Only a host with nothing but loopback routes would answer this; other hosts cannot use it."""
    routes = FakeRoutes({"10.8.0.1": "127.0.0.1"})
    assert route_source("10.8.0.1", routes) is None
    assert routes.sockets[0].closed


def test_the_detected_address_is_logged_with_how_to_override_it(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        detect_agent_ip("http://127.0.0.1:8080", resolve=NO_NAMES,
                        sockets=FakeRoutes({DEFAULT_ROUTE_PROBE: "192.168.1.20"}))
    [record] = caplog.records
    assert record.levelno == logging.INFO
    assert "192.168.1.20" in record.getMessage()
    assert "default route" in record.getMessage()
    assert "--agent-ip overrides it" in record.getMessage()


def test_server_address_takes_the_urls_port_or_its_schemes() -> None:
    asked: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return ["10.8.0.1"]

    assert server_address("https://corral.example", resolve) == "10.8.0.1"
    assert server_address("http://corral.example:8080/v1", resolve) == "10.8.0.1"
    assert server_address("http://corral.example", resolve) == "10.8.0.1"
    assert asked == [("corral.example", 443), ("corral.example", 8080), ("corral.example", 80)]
    assert server_address("not a url", resolve) is None
    assert server_address("http://corral.example:port", resolve) is None


def test_the_real_routing_table_is_asked_without_sending_anything() -> None:
    """On this machine: a loopback server gives a non-loopback address or None."""
    detected = detect_agent_ip("http://127.0.0.1:1")
    assert detected is None or not detected.startswith("127.")
