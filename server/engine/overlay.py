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

import contextlib
import logging
from functools import partial
from ipaddress import IPv4Network
from typing import TYPE_CHECKING, Any

from server.engine import ipam
from server.engine.network_policy import Member
from server.engine.pusher import HostState, Pusher
from server.store import Condition, Conflict, Query, Record, Transaction
from server.store.paging import list_all
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

_HOST_FIELDS = frozenset({"agentIpAddress", "removed", CAPABILITIES_KEY})
_CONTAINER_FIELDS = frozenset({"primaryIpAddress", "removed", "labels", "hostId", "spec"})


async def _release_lease(tx: Transaction, lease_id: int) -> bool:
    return await ipam.release_lease(tx, lease_id)


def _lost_its_address(change: Change) -> bool:
    record = change.record
    return record.type == "container" and record.removed is not None and \
        "removed" in change.fields and isinstance(record.data.get("networkId"), int)


class OverlayController(Pusher):
    """Keeps every connected agent's overlay at its host's desired state."""

    name = "overlay"
    instruction = INSTRUCTION
    reply_type = NetworkApplied

    def __init__(self, services: Services) -> None:
        super().__init__(services)
        self._policed: set[int] = set()       # environments whose policy names containers

    def target(self, host_id: int) -> HostTarget | None:
        found = super().target(host_id)
        assert found is None or isinstance(found, HostTarget)
        return found

    async def on_start(self, project_ids: list[int]) -> None:
        for project_id in project_ids:
            await self._release_orphans(project_id)

    # --- following the store ------------------------------------------------------------

    async def on_change(self, change: Change) -> None:
        if _lost_its_address(change):
            await self._release_address(change.record)

    def bears_on(self, change: Change) -> bool:
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

    # --- computing ----------------------------------------------------------------------

    async def compute(self, project_id: int) -> dict[int, HostState]:
        managed = await managed_network(self._store, project_id)
        hosts = [] if managed is None else await list_all(self._store, Query(
            types=["host"], project_id=project_id, conditions=[Condition("removed", "null")]))
        self._policed.discard(project_id)
        if managed is None:
            return {}
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
        return dict(targets)

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

    async def on_outcome(self, host_id: int, version: str | None, error: str | None) -> None:
        await self._record(host_id, version, None if error is None else f"Network: {error}")

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
