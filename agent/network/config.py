"""What the managed overlay should look like on this host: its settings and its peers. Pure.

Every host owns one subnet of the environment's pool (a /24 of 10.42.0.0/16 by default) and
reaches the others through one L3 VXLAN device. Everything a host's VXLAN end needs is derived
from its subnet, so that a host only has to be told its peers' subnets and underlay addresses:

- the device address is the subnet's network address as a /32 (``10.42.3.0/32``): a ``.0``
  address is never handed to a container, and each peer routes the subnet via it;
- the VTEP MAC is ``0e:42`` followed by the four bytes of that address (``0e:42:0a:2a:03:00``),
  i.e. the pool's base plus the subnet's index in the pool: unique per subnet, locally
  administered, and the same on every host without asking anyone;
- the Docker network's gateway is the subnet's ``.1``.

The :class:`Policy` says what may reach this host's containers: rules in the order they are
tried, each already one (source, destination, port) triple, so that the planner only renders.

Invalid settings raise ``ValueError`` with a sentence naming the value.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Protocol

DEFAULT_POOL = IPv4Network("10.42.0.0/16")
DEFAULT_VNI = 42
DEFAULT_PORT = 4789
DEFAULT_MTU = 1450  # VXLAN costs 50 bytes of a 1500-byte underlay
DEVICE = "corral-vx"
BRIDGE = "corral0"
NETWORK = "corral-managed"

_IFNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")  # IFNAMSIZ 16, never an option
_DOCKER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_MAX_PREFIX = 30  # room for the device .0, the gateway .1 and one container
PROTOCOLS = ("tcp", "udp")


def vtep_mac(subnet: IPv4Network) -> str:
    """The VXLAN device MAC of the host owning ``subnet``."""
    return "0e:42:" + ":".join(f"{byte:02x}" for byte in subnet.network_address.packed)


def device_address(subnet: IPv4Network) -> IPv4Address:
    """The address of the VXLAN device of the host owning ``subnet`` (its ``.0``)."""
    return subnet.network_address


def gateway(subnet: IPv4Network) -> IPv4Address:
    """The Docker network's gateway on the host owning ``subnet`` (its ``.1``)."""
    return subnet.network_address + 1


def parse_address(text: str, what: str) -> IPv4Address:
    """``text`` as an IPv4 address; ValueError naming ``what`` otherwise."""
    try:
        return IPv4Address(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not an IPv4 address.") from None


def parse_network(text: str, what: str) -> IPv4Network:
    """``text`` as an IPv4 network (``a.b.c.0/nn``); ValueError naming ``what`` otherwise."""
    try:
        return IPv4Network(text)
    except ValueError:
        pass
    try:
        loose = IPv4Network(text, strict=False)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not an IPv4 network like 10.42.3.0/24.") from None
    raise ValueError(f"{what} {text!r} has host bits set; did you mean {loose}?")


def _check_subnet(subnet: IPv4Network, pool: IPv4Network, what: str) -> None:
    if not subnet.subnet_of(pool) or subnet.prefixlen <= pool.prefixlen:
        raise ValueError(f"{what} {subnet} is not a subnet of the pool {pool}.")
    if subnet.prefixlen > _MAX_PREFIX:
        raise ValueError(f"{what} {subnet} is too small: the overlay needs at least a "
                         f"/{_MAX_PREFIX} per host.")


def _check_name(name: str, pattern: re.Pattern[str], what: str) -> None:
    if not pattern.fullmatch(name):
        raise ValueError(f"{what} {name!r} is not a valid name (letters, digits, '_', '.', '-', "
                         "not starting with a punctuation mark"
                         + (", at most 15 characters)." if pattern is _IFNAME else ")."))


def _check_types(obj: object, **types: type) -> None:
    for name, kind in types.items():
        if not isinstance(getattr(obj, name), kind):
            raise TypeError(f"{type(obj).__name__}.{name} must be an {kind.__name__}; "
                            f"use {type(obj).__name__}.of to build one from text.")


@dataclass(frozen=True)
class Peer:
    """Another host of the overlay: the subnet it owns and its underlay (host) address."""

    subnet: IPv4Network
    underlay_ip: IPv4Address

    def __post_init__(self) -> None:
        _check_types(self, subnet=IPv4Network, underlay_ip=IPv4Address)

    @classmethod
    def of(cls, subnet: str, underlay_ip: str) -> Peer:
        """A peer from text, e.g. ``Peer.of("10.42.2.0/24", "10.99.0.2")``."""
        return cls(parse_network(subnet, "Peer subnet"),
                   parse_address(underlay_ip, "Peer underlay address"))

    @property
    def vtep_mac(self) -> str:
        return vtep_mac(self.subnet)

    @property
    def device_address(self) -> IPv4Address:
        return device_address(self.subnet)


def parse_match(text: str, what: str) -> IPv4Network:
    """An address (``10.42.1.5``, read as ``/32``) or a network a policy rule matches."""
    try:
        return IPv4Network(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not an IPv4 address or network.") from None


@dataclass(frozen=True)
class PolicyRule:
    """Traffic from ``source`` to ``destination`` (on ``protocol`` port ``port``, or any port
    when it is None) is accepted (``allow``) or dropped."""

    allow: bool
    source: IPv4Network
    destination: IPv4Network
    port: int | None = None
    protocol: str = "tcp"

    def __post_init__(self) -> None:
        if self.port is not None and not 1 <= self.port <= 65535:
            raise ValueError(f"Policy port {self.port} is out of range (1-65535).")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"Policy protocol {self.protocol!r} is not tcp or udp.")

    @property
    def match(self) -> tuple[IPv4Network, IPv4Network, int | None, str | None]:
        """What the rule matches, whatever it then does."""
        return (self.source, self.destination, self.port,
                None if self.port is None else self.protocol)


@dataclass(frozen=True)
class Policy:
    """What may reach this host's containers: the first rule that matches decides, and
    ``default_deny`` drops the rest. Replies to allowed connections always pass."""

    rules: tuple[PolicyRule, ...] = ()
    default_deny: bool = False

    @property
    def open(self) -> bool:
        """Whether everything passes, so that there is nothing to program."""
        return not self.default_deny and all(rule.allow for rule in self.rules)

    @classmethod
    def of(cls, default_action: str, entries: Iterable[PolicyEntryLike]) -> Policy:
        """A policy from ``shared.overlay.OverlayPolicy``'s fields: each entry expands into one
        rule per destination, source and port, in that order."""
        if default_action not in ("allow", "deny"):
            raise ValueError(f"Policy default action {default_action!r} is not allow or deny.")
        rules = []
        for entry in entries:
            if entry.action not in ("allow", "deny"):
                raise ValueError(f"Policy action {entry.action!r} is not allow or deny.")
            sources = [parse_match(s, "Policy source") for s in entry.sources]
            ports: list[tuple[int | None, str]] = \
                [(p.port, p.protocol) for p in entry.ports] or [(None, "tcp")]
            for destination in entry.destinations:
                d = parse_match(destination, "Policy destination")
                rules += [PolicyRule(entry.action == "allow", s, d, port, protocol)
                          for s in sources for port, protocol in ports]
        return cls(tuple(rules), default_action == "deny")


class PortMatchLike(Protocol):
    @property
    def port(self) -> int: ...
    @property
    def protocol(self) -> str: ...


class PolicyEntryLike(Protocol):
    """What :meth:`Policy.of` reads of an entry (``shared.overlay.PolicyEntry``)."""

    @property
    def action(self) -> str: ...
    @property
    def sources(self) -> Sequence[str]: ...
    @property
    def destinations(self) -> Sequence[str]: ...
    @property
    def ports(self) -> Sequence[PortMatchLike]: ...


OPEN = Policy()


@dataclass(frozen=True)
class OverlayConfig:
    """This host's part of the overlay.

    ``underlay_device`` None means the interface holding ``underlay_ip``, found when applying.
    ``policy`` is here rather than beside the peers because it is a setting of this host: it
    names this host's containers.
    """

    underlay_ip: IPv4Address
    subnet: IPv4Network
    underlay_device: str | None = None
    pool: IPv4Network = DEFAULT_POOL
    vni: int = DEFAULT_VNI
    port: int = DEFAULT_PORT
    mtu: int = DEFAULT_MTU
    device: str = DEVICE
    bridge: str = BRIDGE
    network: str = NETWORK
    policy: Policy = OPEN

    def __post_init__(self) -> None:
        _check_types(self, underlay_ip=IPv4Address, subnet=IPv4Network, pool=IPv4Network)
        _check_subnet(self.subnet, self.pool, "Subnet")
        if self.underlay_ip in self.pool:
            raise ValueError(f"Underlay address {self.underlay_ip} is inside the overlay pool "
                             f"{self.pool}; it must be the host's own address.")
        if not 1 <= self.vni <= 0xFFFFFF:
            raise ValueError(f"VNI {self.vni} is out of range (1-16777215).")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"VXLAN port {self.port} is out of range (1-65535).")
        if not 576 <= self.mtu <= 9000:
            raise ValueError(f"MTU {self.mtu} is out of range (576-9000).")
        for name, what in ((self.device, "VXLAN device name"), (self.bridge, "Bridge name")):
            _check_name(name, _IFNAME, what)
        if self.underlay_device is not None:
            _check_name(self.underlay_device, _IFNAME, "Underlay device name")
        if self.device == self.bridge:
            raise ValueError(f"The VXLAN device and the bridge cannot both be {self.device!r}.")
        _check_name(self.network, _DOCKER_NAME, "Docker network name")

    @classmethod
    def of(cls, underlay_ip: str, subnet: str, *, pool: str | IPv4Network = DEFAULT_POOL,
           **options: Any) -> OverlayConfig:
        """Settings from text; ``options`` are the other fields, e.g.
        ``OverlayConfig.of("10.99.0.3", "10.42.3.0/24", underlay_device="eth0")``."""
        if isinstance(pool, str):
            pool = parse_network(pool, "Pool")
        return cls(parse_address(underlay_ip, "Underlay address"),
                   parse_network(subnet, "Subnet"), pool=pool, **options)

    @property
    def vtep_mac(self) -> str:
        return vtep_mac(self.subnet)

    @property
    def device_address(self) -> IPv4Address:
        return device_address(self.subnet)

    @property
    def gateway(self) -> IPv4Address:
        return gateway(self.subnet)


def check_peers(config: OverlayConfig, peers: Iterable[Peer]) -> list[Peer]:
    """The peers sorted by subnet, after checking they fit ``config`` and each other."""
    result = sorted(set(peers), key=lambda p: (p.subnet, p.underlay_ip))
    for peer in result:
        _check_subnet(peer.subnet, config.pool, "Peer subnet")
        if peer.subnet.overlaps(config.subnet):
            raise ValueError(f"Peer subnet {peer.subnet} overlaps this host's subnet "
                             f"{config.subnet}.")
        if peer.underlay_ip == config.underlay_ip:
            raise ValueError(f"Peer {peer.subnet} has this host's own underlay address "
                             f"{peer.underlay_ip}.")
        if peer.underlay_ip in config.pool:
            raise ValueError(f"Peer {peer.subnet}'s underlay address {peer.underlay_ip} is "
                             f"inside the overlay pool {config.pool}.")
    for before, after in itertools.pairwise(result):
        if before.subnet.overlaps(after.subnet):
            raise ValueError(f"Peer subnets {before.subnet} and {after.subnet} overlap.")
    seen: dict[IPv4Address, IPv4Network] = {}
    for peer in result:
        if peer.underlay_ip in seen:
            raise ValueError(f"Peers {seen[peer.underlay_ip]} and {peer.subnet} have the same "
                             f"underlay address {peer.underlay_ip}.")
        seen[peer.underlay_ip] = peer.subnet
    return result


__all__ = [
    "BRIDGE",
    "DEVICE",
    "NETWORK",
    "OPEN",
    "OverlayConfig",
    "Peer",
    "Policy",
    "PolicyRule",
    "check_peers",
    "device_address",
    "gateway",
    "parse_address",
    "parse_match",
    "parse_network",
    "vtep_mac",
]
