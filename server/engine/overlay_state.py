"""The managed overlay network's desired state, from what the store holds: the environment's
managed network and driver options, the leases of hosts and containers, and each host's
``network.apply`` payload (``desired_states``, pure). ``server.engine.overlay`` sends it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Network, ip_address
from typing import TYPE_CHECKING, Any

from server.api.errors import invalid
from server.engine import ipam
from server.engine.network_policy import Member, host_policy
from server.resources.container_links import primary_address
from server.resources.network_rules import VXLAN_DEFAULTS
from server.store import Condition, Query, Record, Transaction
from server.store.interface import Reader
from shared.overlay import NetworkApply, OverlayPeer, OverlayPolicy

if TYPE_CHECKING:
    pass


INSTRUCTION = "network.apply"
DRIVER_NAME = "vxlan"
MANAGED_KEY = "defaultNetworkId"
CAPABILITIES_KEY = "agentInstructions"

@dataclass(frozen=True)
class ManagedNetwork:
    """An environment's managed network and its driver's options."""

    network: Record
    pool: ipam.Pool
    vni: int
    port: int
    mtu: int

    @property
    def default_action(self) -> str:
        return str(self.network.data.get("defaultPolicyAction") or "allow")

    @property
    def policy(self) -> list[dict[str, Any]]:
        return list(self.network.data.get("policy") or [])

    @property
    def open(self) -> bool:
        """No policy to enforce: containers' addresses do not matter to the agents."""
        return self.default_action == "allow" and \
            all(rule.get("action") == "allow" for rule in self.policy)


async def managed_network(reader: Reader, project_id: int | None) -> ManagedNetwork | None:
    """The environment's managed network, or None if it has none (removed, or not made)."""
    drivers = await reader.list(Query(
        types=["networkDriver"], project_id=project_id, limit=1,
        conditions=[Condition("name", "eq", DRIVER_NAME), Condition("removed", "null")]))
    if not drivers:
        return None
    network_id = drivers[0].data.get(MANAGED_KEY)
    network = await reader.get(network_id) if isinstance(network_id, int) else None
    if network is None or network.removed is not None:
        return None
    options = {**VXLAN_DEFAULTS, **(drivers[0].data.get("networkMetadata") or {})}
    return ManagedNetwork(
        network=network,
        pool=ipam.Pool.parse(network.id, str(options["subnetPool"]),
                             int(options["hostSubnetPrefix"])),
        vni=int(options["vni"]), port=int(options["port"]), mtu=int(options["mtu"]))


async def lease_host_subnet(tx: Transaction, host: Record) -> IPv4Network | None:
    """The host's subnet of its environment's pool (leased now if it holds none); None when
    the environment has no managed network. PoolExhausted when the pool is full."""
    managed = await managed_network(tx, host.project_id)
    if managed is None:
        return None
    return await ipam.lease_subnet(tx, managed.pool, host.id, host.project_id)


async def lease_container_address(tx: Transaction, host: Record, container: Record,
                                  moved_from: int | None = None) -> Record:
    """The container's address on the managed network, leased from ``host``'s subnet in the
    transaction that places it there (so two containers never share one; the address it
    held on ``moved_from``, the host it migrates from, is given up), in its spec and as its
    ``primaryIpAddress``. A 422 naming ``networkMode`` when there is no managed network or
    no address left."""
    managed = await managed_network(tx, container.project_id)
    if managed is None:
        raise invalid("InvalidReference", "networkMode", "this environment has no managed "
                      "network; choose another networkMode such as bridge")
    if moved_from is not None:
        await ipam.release_instance(tx, moved_from, container.id)
    try:
        subnet = await ipam.lease_subnet(tx, managed.pool, host.id, host.project_id)
        address = str(await ipam.lease_address(tx, managed.network.id, subnet, host.id,
                                               container.id, container.project_id))
    except ipam.PoolExhausted as exc:
        raise invalid("NoHostAvailable", "networkMode",
                      f"host 1h{host.id} cannot take another container on the managed "
                      f"network: {exc}") from None
    spec = {**(container.data.get("spec") or {}), "ipAddress": address}
    return await tx.update(container.id, {}, {"spec": spec, "primaryIpAddress": address,
                                              "networkId": managed.network.id})


def underlay_problem(address: Any, pool: IPv4Network) -> str | None:
    """Why a host's address cannot carry the overlay, or None if it can."""
    if not isinstance(address, str) or not address:
        return "the host has not reported its address yet"
    try:
        parsed = ip_address(address)
    except ValueError:
        return f"the host's address {address!r} is not an IP address"
    if not isinstance(parsed, IPv4Address):
        return f"the host's address {address} is not IPv4; the overlay runs over IPv4"
    if parsed in pool:
        return (f"the host's address {address} lies inside the overlay pool {pool}; "
                "start its agent with --agent-ip set to the host's own address")
    return None


def versioned(payload: NetworkApply, peers_digest: str | None = None) -> NetworkApply:
    """The payload with its version: a digest of everything in it (the peer list's given
    as ``peers_digest`` when it was computed once for many payloads)."""
    if peers_digest is None:
        peers_digest = digest([p.dump() for p in payload.peers])
    body = {**payload.dump(), "peers": peers_digest, "version": ""}
    return replace(payload, version=digest(body))


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class HostTarget:
    """One host's desired overlay state, or why it has none (kept for every host, so it
    holds no record: ids and the payload only)."""

    host_id: int
    payload: NetworkApply | None
    problem: str | None = None


def capable(host: Record) -> bool:
    """Whether the host's agent says it carries out ``network.apply`` (older ones do not)."""
    return INSTRUCTION in (host.data.get(CAPABILITIES_KEY) or ())


def desired_states(managed: ManagedNetwork, hosts: Iterable[Record],
                   subnets: Mapping[int, IPv4Network],
                   members: Iterable[Member] = ()) -> dict[int, HostTarget]:
    """Every host's desired state, from what the store holds. Pure.

    Every payload carries the same peer list, this host included (its agent leaves its own
    subnet out): one list for the environment instead of one per host, which would grow
    with the square of the hosts. Hosts whose agents do not carry ``network.apply`` out are
    peers but get no payload."""
    problems: dict[int, str] = {}
    live = [h for h in hosts if h.removed is None]
    by_address: dict[str, list[int]] = {}
    for host in live:
        problem = underlay_problem(host.data.get("agentIpAddress"), managed.pool.cidr)
        if problem is None and subnets.get(host.id) is None:
            problem = f"no subnet of the pool {managed.pool.cidr} is free for it"
        if problem is not None:
            problems[host.id] = problem
        else:
            by_address.setdefault(str(host.data["agentIpAddress"]), []).append(host.id)
    for address, sharing in by_address.items():
        if len(sharing) > 1:  # neither can be told apart as a VXLAN endpoint
            for host_id in sharing:
                # Named from the group's first four: the group may hold every host.
                others = [f"1h{h}" for h in sharing[:4] if h != host_id][:3]
                rest = len(sharing) - 1 - len(others)
                named = ", ".join(others) + (f" and {rest} more" if rest else "")
                problems[host_id] = (f"the host's address {address} is also reported by "
                                     f"{named}; give each host its own (--agent-ip)")
    peers = tuple(OverlayPeer(str(subnets[h.id]), str(h.data["agentIpAddress"]))
                  for h in sorted(live, key=lambda h: h.id) if h.id not in problems)
    peers_digest = digest([p.dump() for p in peers])
    everyone = list(members)
    out: dict[int, HostTarget] = {}
    for host in live:
        if host.id in problems:
            out[host.id] = HostTarget(host.id, None, problems[host.id])
            continue
        if not capable(host):
            out[host.id] = HostTarget(host.id, None)
            continue
        policy = OverlayPolicy() if managed.open else host_policy(
            managed.default_action, managed.policy, everyone, host.id)
        out[host.id] = HostTarget(host.id, versioned(NetworkApply(
            subnet=str(subnets[host.id]), underlay_ip=str(host.data["agentIpAddress"]),
            pool=str(managed.pool.cidr), vni=managed.vni, port=managed.port,
            mtu=managed.mtu, peers=peers, policy=policy), peers_digest))
    return out


def member_of(container: Record, network_id: int) -> Member | None:
    """The container as the policy sees it, if it has an address on the managed network."""
    address = primary_address(container)
    host_id = container.data.get("hostId")
    if container.removed is not None or container.data.get("networkId") != network_id or \
            not isinstance(address, str) or not isinstance(host_id, int):
        return None
    spec = container.data.get("spec") or {}
    labels = {str(k): str(v) for k, v in (spec.get("labels") or {}).items()}
    links = container.data.get("instanceLinks") or {}
    return Member(id=container.id, ip=address, host_id=host_id, labels=labels,
                  links=frozenset(v for v in links.values() if isinstance(v, int))
                  if isinstance(links, dict) else frozenset())
