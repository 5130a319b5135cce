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
import logging
import time
from collections.abc import Iterable
from functools import partial
from ipaddress import IPv4Network
from typing import TYPE_CHECKING, Any

from server.engine import ipam
from server.engine.network_policy import Member
from server.feed import FeedClosed, ResumeTooOld
from server.store import Condition, Conflict, Query, Record, Store, Transaction
from server.store.paging import list_all
from shared.errors import HostNotConnected, InstructionError
from shared.overlay import NetworkApplied

if TYPE_CHECKING:
    from server.services import Services
    from server.store import Change

from server.engine.overlay_state import (
    CAPABILITIES_KEY,
    INSTRUCTION,
    HostTarget,
    ManagedNetwork,
    capable,
    desired_states,
    managed_network,
    member_of,
)

log = logging.getLogger(__name__)

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


async def _release_lease(tx: Transaction, lease_id: int) -> bool:
    return await ipam.release_lease(tx, lease_id)


def _lost_its_address(change: Change) -> bool:
    record = change.record
    return record.type == "container" and record.removed is not None and \
        "removed" in change.fields and isinstance(record.data.get("networkId"), int)


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
