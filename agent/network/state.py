"""The overlay as it is on this host: what the planner compares with what it should be. Pure.

Each ``parse_*`` function reads the output of one command (``ip -j ...``, ``bridge -j fdb``,
``iptables -S``, ``docker network inspect``) into small frozen types. Output that is not what the
command prints raises ValueError naming the command.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Link:
    """A network interface; ``vxlan`` holds the VXLAN settings when it is one."""

    name: str
    kind: str | None            # linkinfo.info_kind ("vxlan", "veth", ...), None for plain ones
    mac: str | None
    mtu: int
    up: bool
    addresses: frozenset[str]   # IPv4 only, "a.b.c.d/nn"
    vxlan: Vxlan | None = None


@dataclass(frozen=True)
class Vxlan:
    vni: int | None
    local: str | None
    port: int | None
    underlay_device: str | None
    learning: bool


@dataclass(frozen=True)
class Route:
    dst: str                    # "10.42.2.0/24"
    gateway: str | None
    onlink: bool


@dataclass(frozen=True)
class Neighbour:
    dst: str
    lladdr: str | None
    permanent: bool


@dataclass(frozen=True)
class FdbEntry:
    mac: str
    dst: str | None
    permanent: bool


@dataclass(frozen=True)
class Table:
    """One iptables table as ``iptables -S`` shows it: each chain's rules as argument tuples
    (without ``-A CHAIN``), in order."""

    chains: Mapping[str, tuple[tuple[str, ...], ...]] = field(default_factory=dict)

    def rules(self, chain: str) -> tuple[tuple[str, ...], ...] | None:
        """The rules of ``chain``, or None if there is no such chain."""
        return self.chains.get(chain)


@dataclass(frozen=True)
class DockerNetwork:
    id: str
    name: str
    driver: str
    subnets: tuple[tuple[str, str | None], ...]  # (subnet, gateway) of each IPAM config
    options: Mapping[str, str]
    containers: int


@dataclass(frozen=True)
class Observed:
    """Everything the planner looks at. Routes, neighbours and FDB entries are the VXLAN
    device's (empty when there is no device)."""

    links: tuple[Link, ...] = ()
    routes: tuple[Route, ...] = ()
    neighbours: tuple[Neighbour, ...] = ()
    fdb: tuple[FdbEntry, ...] = ()
    filter: Table = field(default_factory=Table)
    nat: Table = field(default_factory=Table)
    network: DockerNetwork | None = None

    def link(self, name: str) -> Link | None:
        return next((link for link in self.links if link.name == name), None)

    def link_with_address(self, address: str) -> Link | None:
        """The interface holding ``address`` (any prefix length)."""
        return next((link for link in self.links
                     if any(a.split("/")[0] == address for a in link.addresses)), None)


def _json_list(text: str, command: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(text) if text.strip() else []
    except ValueError as exc:
        raise ValueError(f"`{command}` printed something that is not JSON: {exc}.") from None
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ValueError(f"`{command}` printed JSON that is not a list of objects.")
    return data


def parse_links(text: str) -> tuple[Link, ...]:
    """``ip -j -d addr show``."""
    links = []
    for item in _json_list(text, "ip -j -d addr show"):
        info = item.get("linkinfo") or {}
        data = info.get("info_data") or {}
        kind = info.get("info_kind")
        vxlan = None
        if kind == "vxlan":
            vxlan = Vxlan(vni=data.get("id"), local=data.get("local"), port=data.get("port"),
                          underlay_device=data.get("link"),
                          learning=bool(data.get("learning", True)))
        addresses = frozenset(f"{a['local']}/{a['prefixlen']}" for a in item.get("addr_info", [])
                              if a.get("family") == "inet")
        links.append(Link(name=str(item["ifname"]), kind=kind, mac=item.get("address"),
                          mtu=int(item.get("mtu", 0)), up="UP" in item.get("flags", []),
                          addresses=addresses, vxlan=vxlan))
    return tuple(links)


def parse_routes(text: str) -> tuple[Route, ...]:
    """``ip -4 -j route show dev DEVICE``; a host route has no prefix length in its dst."""
    routes = []
    for item in _json_list(text, "ip -4 -j route show"):
        dst = str(item["dst"])
        routes.append(Route(dst=dst if "/" in dst or dst == "default" else f"{dst}/32",
                            gateway=item.get("gateway"),
                            onlink="onlink" in item.get("flags", [])))
    return tuple(routes)


def parse_neighbours(text: str) -> tuple[Neighbour, ...]:
    """``ip -4 -j neigh show dev DEVICE``."""
    return tuple(Neighbour(dst=str(item["dst"]), lladdr=item.get("lladdr"),
                           permanent="PERMANENT" in item.get("state", []))
                 for item in _json_list(text, "ip -4 -j neigh show"))


def parse_fdb(text: str) -> tuple[FdbEntry, ...]:
    """``bridge -j fdb show dev DEVICE``."""
    return tuple(FdbEntry(mac=str(item["mac"]), dst=item.get("dst"),
                          permanent=item.get("state") == "permanent")
                 for item in _json_list(text, "bridge -j fdb show"))


def parse_table(text: str) -> Table:
    """``iptables -S`` of a whole table: ``-P`` and ``-N`` declare chains, ``-A`` adds rules.
    iptables-nft adds ``# Warning: ...`` lines when legacy tables exist too."""
    chains: dict[str, list[tuple[str, ...]]] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        words = shlex.split(line)
        if len(words) < 2 or words[0] not in ("-P", "-N", "-A"):
            raise ValueError(f"`iptables -S` printed an unexpected line: {line!r}.")
        rules = chains.setdefault(words[1], [])
        if words[0] == "-A":
            rules.append(tuple(words[2:]))
    return Table({name: tuple(rules) for name, rules in chains.items()})


def parse_network(text: str) -> DockerNetwork:
    """``docker network inspect NAME`` (a list of one network)."""
    items = _json_list(text, "docker network inspect")
    if len(items) != 1:
        raise ValueError(f"`docker network inspect` printed {len(items)} networks, not one.")
    item = items[0]
    configs = (item.get("IPAM") or {}).get("Config") or []
    return DockerNetwork(
        id=str(item["Id"]), name=str(item["Name"]), driver=str(item.get("Driver", "")),
        subnets=tuple((str(c.get("Subnet")), c.get("Gateway")) for c in configs),
        options={str(k): str(v) for k, v in (item.get("Options") or {}).items()},
        containers=len(item.get("Containers") or {}))


def network_id(text: str, name: str) -> str | None:
    """The id of the network called ``name`` in ``docker network ls --format '{{json .}}'``
    (one object a line), or None. Docker's name filter matches substrings, hence this."""
    for line in text.splitlines():
        if line.strip():
            item = json.loads(line)
            if item.get("Name") == name:
                return str(item["ID"])
    return None
