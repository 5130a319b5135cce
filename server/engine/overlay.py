"""The managed overlay network, driven from the server: who holds which subnet, and what every
agent of an environment must program (``network.apply``, see ``shared.overlay``).

The desired state of each host follows from the store alone: the environment's VXLAN driver
options, its hosts' subnet leases and addresses (``agentIpAddress``), and, when the managed
network has a policy, the addresses and labels of its containers. :class:`OverlayController`
follows the change feed; a change that bears on an environment's overlay marks it, and
shortly after (changes arriving together are taken together) the environment's desired
states are computed again and sent to every agent connected to this server whose host runs
a different one, or whose session is new. Nothing is kept that another server could need:
each server pushes to the agents it holds sessions for, from the shared change log, so with
several servers on one PostgreSQL every agent hears of every change.

An agent's answer is recorded on its host: ``networkVersion`` (the state it runs) or
``networkError`` (the failing command's own message), which the API shows as the host's
``transitioning: error`` message. A failed apply is retried every ``RETRY_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from ipaddress import IPv4Address, IPv4Network, ip_address
from typing import TYPE_CHECKING, Any

from server.api.errors import invalid
from server.engine import ipam
from server.engine.network_policy import Member, host_policy
from server.feed import FeedClosed, ResumeTooOld
from server.resources.container_links import primary_address
from server.resources.network_rules import VXLAN_DEFAULTS
from server.store import Condition, Conflict, Query, Record, Store, Transaction
from server.store.interface import Reader
from server.store.paging import list_all
from shared.errors import HostNotConnected, InstructionError
from shared.overlay import NetworkApplied, NetworkApply, OverlayPeer, OverlayPolicy

if TYPE_CHECKING:
    from server.services import Services
    from server.store import Change

log = logging.getLogger(__name__)

INSTRUCTION = "network.apply"
DRIVER_NAME = "vxlan"
MANAGED_KEY = "defaultNetworkId"
CAPABILITIES_KEY = "agentInstructions"
SETTLE_SECONDS = 0.05
"""How long a marked environment waits for more changes before it is computed again."""
COMPUTE_SHARE = 3.0
"""The pause before computing again, as a multiple of the last computation's time: at most
a quarter of the server's time goes to it however fast the changes come."""
RETRY_SECONDS = 5.0
APPLY_TIMEOUT = 120.0
SESSION_CHECK_SECONDS = 0.5
"""How often new agent sessions are looked for (a session changes no record when its host's
facts did not change)."""
_HOST_FIELDS = frozenset({"agentIpAddress", "removed", CAPABILITIES_KEY})
_CONTAINER_FIELDS = frozenset({"primaryIpAddress", "removed", "labels", "hostId", "spec"})


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


async def _release_lease(tx: Transaction, lease_id: int) -> bool:
    return await ipam.release_lease(tx, lease_id)


def _lost_its_address(change: Change) -> bool:
    record = change.record
    return record.type == "container" and record.removed is not None and \
        "removed" in change.fields and isinstance(record.data.get("networkId"), int)


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


class OverlayController:
    """Keeps every connected agent's overlay at its host's desired state."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._store: Store = services.store
        self._dirty: set[int] = set()
        self._wake = asyncio.Event()
        self._targets: dict[int, HostTarget] = {}
        self._project_hosts: dict[int, set[int]] = {}
        self._policed: set[int] = set()       # environments whose policy names containers
        self._sent: dict[int, tuple[int | None, str]] = {}
        self._retry_at: dict[int, float] = {}
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._last_compute = 0.0

    async def start(self) -> None:
        position = self._services.feed.position
        projects = await self._projects()
        self._dirty.update(projects)
        for project_id in projects:
            await self._release_orphans(project_id)
        self._tasks = [asyncio.create_task(self._follow(position)),
                       asyncio.create_task(self._loop())]

    async def stop(self) -> None:
        for task in [*self._tasks, *self._inflight.values()]:
            task.cancel()
        for task in [*self._tasks, *self._inflight.values()]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks, self._inflight = [], {}

    def target(self, host_id: int) -> HostTarget | None:
        """What the host should run, as last computed (for tests and diagnostics)."""
        return self._targets.get(host_id)

    def mark(self, project_id: int | None) -> None:
        if project_id is not None:
            self._dirty.add(project_id)
            self._wake.set()

    # --- following the store ------------------------------------------------------------

    async def _projects(self) -> list[int]:
        projects = await list_all(self._store, Query(types=["project"],
                                                     conditions=[Condition("removed", "null")]))
        return [p.id for p in projects]

    async def _follow(self, since: int) -> None:
        cursor = self._services.feed.follow(since)
        while True:
            try:
                batch = await cursor.next_batch()
            except FeedClosed:
                return
            except ResumeTooOld:
                log.warning("overlay: fell behind the change log; recomputing every "
                            "environment")
                cursor = self._services.feed.follow()
                for project_id in await self._projects():
                    self.mark(project_id)
                continue
            for change in batch:
                if self._bears_on_overlay(change):
                    self.mark(change.record.project_id)
                if _lost_its_address(change):
                    await self._release_address(change.record)

    def _bears_on_overlay(self, change: Change) -> bool:
        record = change.record
        match record.type:
            case "host":
                return change.kind == "create" or not _HOST_FIELDS.isdisjoint(change.fields)
            case "ipLease":
                return record.kind == ipam.SUBNET
            case "network" | "networkDriver" | "project":
                return True
            case "container":
                return record.project_id in self._policed and (
                    change.kind == "create" or not _CONTAINER_FIELDS.isdisjoint(change.fields))
        return False

    # --- addresses of removed containers -------------------------------------------------

    async def _release_address(self, container: Record) -> None:
        """A removed container's address is free again. Done here, from the change log,
        because containers are removed by many paths (their operation, reconcile, their
        host's removal); a server that stopped before doing it does it at its next start."""
        host_id = container.data.get("hostId")
        if not isinstance(host_id, int):
            return
        try:
            await self._store.transact(
                lambda tx: ipam.release_instance(tx, host_id, container.id))
        except Conflict:
            pass  # another server released it at the same moment
        except Exception:
            log.exception("overlay: could not release the address of container %s",
                          container.id)

    async def _release_orphans(self, project_id: int) -> None:
        managed = await managed_network(self._store, project_id)
        if managed is None:
            return
        for lease in await ipam.address_leases(self._store, managed.network.id):
            instance_id = lease.data.get("instanceId")
            owner = await self._store.get(instance_id) if isinstance(instance_id, int) \
                else None
            if owner is None or owner.removed is not None:
                with contextlib.suppress(Conflict):
                    await self._store.transact(partial(_release_lease, lease_id=lease.id))

    # --- computing and sending ----------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: 3.11's wait_for can lose a cancellation that
            # arrives as its timeout fires, and stop() would wait for this task forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SESSION_CHECK_SECONDS):
                    await self._wake.wait()
            self._wake.clear()
            if self._dirty:
                # Computing an environment of n hosts reads them all: while hosts keep
                # registering, computing again at once would take the whole server, so the
                # pause before the next one grows with the time the last one took.
                await asyncio.sleep(max(SETTLE_SECONDS, COMPUTE_SHARE * self._last_compute))
                dirty, self._dirty = self._dirty, set()
                started = time.monotonic()
                for project_id in sorted(dirty):
                    try:
                        await self._compute(project_id)
                    except Exception:
                        log.exception("overlay: could not compute environment %s; trying "
                                      "again shortly", project_id)
                        self._dirty.add(project_id)
                self._last_compute = time.monotonic() - started
            self._dispatch()

    async def _compute(self, project_id: int) -> None:
        managed = await managed_network(self._store, project_id)
        hosts = [] if managed is None else await list_all(self._store, Query(
            types=["host"], project_id=project_id, conditions=[Condition("removed", "null")]))
        before = self._project_hosts.pop(project_id, set())
        for host_id in before:
            self._targets.pop(host_id, None)
        self._policed.discard(project_id)
        if managed is None:
            self._forget(before)
            return
        subnets = await self._subnets(managed, hosts)
        members: list[Member] = []
        if not managed.open:
            self._policed.add(project_id)
            containers = await list_all(self._store, Query(
                types=["container"], project_id=project_id,
                conditions=[Condition("removed", "null")]))
            members = [m for c in containers
                       if (m := member_of(c, managed.network.id)) is not None]
        targets = desired_states(managed, hosts, subnets, members)
        self._targets.update(targets)
        self._project_hosts[project_id] = set(targets)
        self._forget(before - set(targets))
        for host in hosts:
            # Only a host whose agent takes part shows a problem (an older agent's host has
            # no overlay to be wrong about); one that shows it already is not written again.
            problem = targets[host.id].problem
            error = f"Network: {problem}" if problem is not None and capable(host) else None
            if error is not None and host.data.get("networkError") != error:
                await self._record(host.id, None, error)
            elif error is None and host.data.get("networkError") and \
                    (problem is not None or not capable(host)):
                await self._record(host.id, None, None)

    def _forget(self, host_ids: Iterable[int]) -> None:
        for host_id in host_ids:
            self._sent.pop(host_id, None)
            self._retry_at.pop(host_id, None)

    async def _subnets(self, managed: ManagedNetwork,
                       hosts: list[Record]) -> dict[int, IPv4Network]:
        """Every host's subnet; hosts without one (registered before the network existed,
        or when the pool was full) get one now."""
        subnets = await ipam.host_subnets(self._store, managed.network.id)
        room = managed.pool.capacity - len(subnets)
        for host in hosts:
            if host.id in subnets:
                continue
            if room <= 0:  # the pool is full: those left get none (and show it)
                break

            async def lease(tx: Transaction, host: Record = host) -> IPv4Network | None:
                # Locked, as its removal locks it: a host removed since the list was read
                # (its leases released) must not get one again.
                current = await tx.lock(host.id)
                if current is None or current.removed is not None:
                    return None
                return await ipam.lease_subnet(tx, managed.pool, host.id, host.project_id)

            try:
                subnet = await self._store.transact(lease)
            except Conflict:
                continue  # another server leased for it meanwhile: read next time
            except ipam.PoolExhausted:
                break  # full after all (another server's hosts took the rest)
            if subnet is not None:
                subnets[host.id] = subnet
                room -= 1
        return subnets

    def _dispatch(self) -> None:
        hub, now = self._services.hub, time.monotonic()
        for host_id in hub.connected_hosts():
            target = self._targets.get(host_id)
            if target is None or target.payload is None or host_id in self._inflight or \
                    self._retry_at.get(host_id, 0.0) > now:
                continue
            key = (hub.session_id(host_id), target.payload.version)
            if self._sent.get(host_id) == key:
                continue
            self._inflight[host_id] = asyncio.create_task(self._send(target, key))

    async def _send(self, target: HostTarget, key: tuple[int | None, str]) -> None:
        host_id, payload = target.host_id, target.payload
        assert payload is not None
        try:
            host = await self._store.get(host_id)
            if host is None or host.removed is not None:
                return
            reply = await self._services.instructions.send(
                host, INSTRUCTION, payload, NetworkApplied, timeout=APPLY_TIMEOUT)
        except HostNotConnected:
            pass  # a new session gets the state anyway
        except InstructionError as exc:
            log.info("[host 1h%s] overlay: %s", host_id, exc)
            self._retry_at[host_id] = time.monotonic() + RETRY_SECONDS
            await self._record(host_id, None, f"Network: {exc}")
        else:
            self._sent[host_id] = key
            self._retry_at.pop(host_id, None)
            await self._record(host_id, reply.version, None)
        finally:
            self._inflight.pop(host_id, None)
            self._wake.set()

    async def _record(self, host_id: int, version: str | None, error: str | None) -> None:
        """The host's overlay outcome, written only when it differs from what is stored."""
        current = await self._store.get(host_id)
        if current is None or current.removed is not None:
            return
        changes: dict[str, Any] = {}
        if current.data.get("networkError") != error:
            changes["networkError"] = error
        if version is not None and current.data.get("networkVersion") != version:
            changes["networkVersion"] = version
        if changes:
            with contextlib.suppress(Conflict):
                await self._store.update(host_id, {}, changes)
