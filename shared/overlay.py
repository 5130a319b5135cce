"""The payload of ``network.apply``: a host's part of the managed overlay network. Pure.

The server sends it to every agent of an environment whenever what that agent must program
changes (a host joins, leaves or changes its address, the driver's options change, a policy
rule or a container address it names changes), and to each agent when it connects. It is
the whole desired state, never a delta: an agent that missed one applies the next.

The policy arrives already evaluated by the server (``server.engine.network_policy``): an
ordered list of entries, each allowing or denying traffic from its sources to its
destinations (containers of this host), optionally on some ports, then the default action
for everything else bound for this host's containers. Replies that settle a connection
(``RELATED,ESTABLISHED``) always pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Self

from shared.fields import Fields, JsonObject, Refuse, invalid_data, protocol_error

ACTIONS = ("allow", "deny")
PORT_PROTOCOLS = ("tcp", "udp")


def _action(f: Fields, key: str) -> str:
    value = f.text(key)
    if value not in ACTIONS:
        raise f.refuse(f"{f.where}.{key} must be allow or deny")
    return value


@dataclass(frozen=True)
class OverlayPeer:
    """Another host: the subnet it owns and the address its VXLAN packets go to."""

    subnet: str
    underlay_ip: str

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(f.text("subnet"), f.text("underlayIp"))

    def dump(self) -> JsonObject:
        return {"subnet": self.subnet, "underlayIp": self.underlay_ip}


@dataclass(frozen=True)
class PortMatch:
    """``80/tcp``: a destination port and its protocol."""

    port: int
    protocol: str = "tcp"

    @classmethod
    def read(cls, f: Fields) -> Self:
        port, protocol = f.integer("port"), f.opt_text("protocol") or "tcp"
        if not 0 < port < 65536:
            raise f.refuse(f"{f.where}.port must be a port number, 1 to 65535")
        if protocol not in PORT_PROTOCOLS:
            raise f.refuse(f"{f.where}.protocol must be tcp or udp")
        return cls(port, protocol)

    def dump(self) -> JsonObject:
        return {"port": self.port, "protocol": self.protocol}


@dataclass(frozen=True)
class PolicyEntry:
    """Traffic from any of ``sources`` to any of ``destinations`` (addresses), on ``ports``
    (empty: every port), is allowed or denied; the first entry that matches decides."""

    action: str
    sources: tuple[str, ...]
    destinations: tuple[str, ...]
    ports: tuple[PortMatch, ...] = ()

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(_action(f, "action"), f.texts("sources"), f.texts("destinations"),
                   f.nested_list("ports", PortMatch.read))

    def dump(self) -> JsonObject:
        return {"action": self.action, "sources": list(self.sources),
                "destinations": list(self.destinations),
                "ports": [p.dump() for p in self.ports]}


@dataclass(frozen=True)
class OverlayPolicy:
    """What may reach this host's containers over the managed network."""

    default_action: str = "allow"
    entries: tuple[PolicyEntry, ...] = ()

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(_action(f, "defaultAction"), f.nested_list("entries", PolicyEntry.read))

    def dump(self) -> JsonObject:
        return {"defaultAction": self.default_action,
                "entries": [e.dump() for e in self.entries]}

    @property
    def open(self) -> bool:
        """Whether everything passes (nothing to program)."""
        return self.default_action == "allow" and \
            all(e.action == "allow" for e in self.entries)


@dataclass(frozen=True)
class NetworkApply:
    """``network.apply``: this host's subnet and underlay address, the driver's options, its
    peers (every host of the environment: the entry of this host itself, same subnet and
    address, is left out by the agent) and its policy. ``version`` names the desired state
    (a digest), so that logs and the host's record say which one a host runs."""

    subnet: str
    underlay_ip: str
    pool: str
    vni: int
    port: int
    mtu: int
    peers: tuple[OverlayPeer, ...] = ()
    policy: OverlayPolicy = field(default_factory=OverlayPolicy)
    version: str = ""

    @classmethod
    def parse(cls, obj: object, where: str = "data", refuse: Refuse = invalid_data) -> Self:
        return cls.read(Fields(obj, where, refuse))

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(subnet=f.text("subnet"), underlay_ip=f.text("underlayIp"),
                   pool=f.text("pool"), vni=f.integer("vni"), port=f.integer("port"),
                   mtu=f.integer("mtu"), peers=f.nested_list("peers", OverlayPeer.read),
                   policy=f.opt_nested("policy", OverlayPolicy.read) or OverlayPolicy(),
                   version=f.opt_text("version") or "")

    def dump(self) -> JsonObject:
        return {"subnet": self.subnet, "underlayIp": self.underlay_ip, "pool": self.pool,
                "vni": self.vni, "port": self.port, "mtu": self.mtu,
                "peers": [p.dump() for p in self.peers], "policy": self.policy.dump(),
                "version": self.version}


@dataclass(frozen=True)
class NetworkApplied:
    """The reply of ``network.apply``: the version now in effect and how many commands it
    took (0: the host already matched)."""

    version: str
    changes: int

    @classmethod
    def parse(cls, obj: object, where: str = "reply data",
              refuse: Refuse = protocol_error) -> Self:
        return cls.read(Fields(obj, where, refuse))

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(f.opt_text("version") or "", f.opt_integer("changes") or 0)

    def dump(self) -> JsonObject:
        return {"version": self.version, "changes": self.changes}
