"""Keep container records true to what hosts report.

Docker events (``containerEvent``) move containers changed behind Corral's back within a
moment. The inventory a host sends on every (re)connection is reconciled in full: missed
transitions are applied, containers that vanished are marked removed, Corral containers whose
records are gone are removed from the host, containers started outside Corral are imported as
native containers (as Rancher did), and unfinished operations on the host are resumed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Any

from server.api.types import now_ms
from server.engine import ipam
from server.engine.instances import resting_state, summary_fields
from server.engine.overlay_state import managed_network
from server.engine.service_units import OWNED_LABELS
from server.resources.volumes import release_mounts
from server.store import Condition, NewRecord, Query, Record, Transaction
from server.store.paging import list_all
from shared import protocol
from shared.containers import ContainerState, ContainerStatus
from shared.errors import InstructionError, ProtocolError
from shared.ids import format_id
from shared.instructions import NoData, RemoveRequest

if TYPE_CHECKING:
    from server.services import Services

log = logging.getLogger(__name__)
GONE = frozenset({"removed", "purged"})


class Reconciler:
    def __init__(self, services: Services) -> None:
        self._services = services
        self._tasks: set[asyncio.Task[None]] = set()

    async def _find(self, host_id: int, summary: ContainerState) -> Record | None:
        if summary.uuid:
            record = await self._services.store.get_by_uuid(summary.uuid)
            if record is not None and record.type == "container" and \
                    record.data.get("hostId") == host_id:
                return record
            return None
        found = await self._services.store.list(Query(types=["container"], limit=1, conditions=[
            Condition("hostId", "eq", host_id, "int"),
            Condition("externalId", "eq", summary.docker_id)]))
        return found[0] if found else None

    async def on_event(self, host_id: int, event: protocol.ContainerEvent) -> None:
        try:
            summary = ContainerState.parse(event.container, f"the container of a "
                                           f"{event.event} event")
        except ProtocolError as exc:
            log.warning("ignored a container event from host %s: %s",
                        format_id("1h", host_id), exc)
            return
        record = await self._find(host_id, summary)
        if record is None:
            if summary.status is ContainerStatus.RUNNING and event.event == "start":
                await self._import(host_id, summary)
            return
        if record.transitioning == "yes" or record.state in GONE:
            return  # an operation of ours is under way and will record the outcome
        if event.event == "destroy":
            await self._services.store.update(record.id, {"state": "removed",
                                                          "removed": now_ms()})
            await release_mounts(self._services.store, record, volumes_removed=False)
            return
        await self._apply(record, summary)

    async def _apply(self, record: Record, summary: ContainerState) -> None:
        state = resting_state(summary)
        fields = {k: v for k, v in summary_fields(summary).items()
                  if record.data.get(k) != v}
        if state != record.state or fields:
            log.info("container %s is %s on its host", record.uuid, summary.status)
            await self._services.store.update(record.id, {"state": state}, fields)

    async def _import(self, host_id: int, summary: ContainerState) -> Record | None:
        """A container started outside Corral becomes a native container record; one that
        carries a service's labels is Corral's own, whose record is gone (or never
        committed): it is removed, never imported, or the service would count it twice."""
        if summary.uuid and not OWNED_LABELS.isdisjoint(summary.labels):
            self._remove_unrecorded(host_id, summary)
            return None
        host = await self._services.store.get(host_id)
        if host is None or host.project_id is None:
            return None
        record = await self._services.store.create(NewRecord(
            type="container", kind="container", state=resting_state(summary),
            name=summary.name, project_id=host.project_id, uuid=summary.uuid or None,
            data={"imageUuid": f"docker:{summary.image}", "hostId": host_id,
                  "native": not summary.uuid, "labels": dict(summary.labels),
                  "startOnCreate": True, **summary_fields(summary)}))
        log.info("imported container %s (%s) found on host %s", summary.name,
                 summary.docker_id, format_id("1h", host_id))
        if summary.ip_address:
            await self._claim_address(host, record, summary.ip_address)
        return record

    async def _claim_address(self, host: Record, record: Record, address: str) -> None:
        """A native container holding an address of the host's managed subnet keeps it: it
        is leased to it, so no container Corral places gets the same one."""
        store = self._services.store

        async def claim(tx: Transaction) -> None:
            managed = await managed_network(tx, host.project_id)
            subnet = await ipam.host_subnet(tx, managed.network.id, host.id) \
                if managed is not None else None
            try:
                parsed = IPv4Address(address)
            except ValueError:
                return
            if managed is None or subnet is None or parsed not in subnet:
                return
            if not await ipam.claim_address(tx, managed.network.id, parsed, host.id,
                                            record.id, host.project_id):
                log.warning("container %s found on host %s has the managed address %s, "
                            "which is leased to another container", record.name,
                            format_id("1h", host.id), address)
                return
            await tx.update(record.id, {}, {"networkId": managed.network.id})

        await store.transact(claim)

    async def on_inventory(self, host_id: int, inventory: protocol.Inventory) -> None:
        store = self._services.store
        try:
            summaries = [ContainerState.parse(c, f"inventory entry {i}")
                         for i, c in enumerate(inventory.containers)]
        except ProtocolError as exc:
            # Judging by part of the list would wrongly find the rest vanished.
            log.warning("ignored the container inventory of host %s: %s",
                        format_id("1h", host_id), exc)
            await self._services.runner.resume(host_id)
            return
        records = await list_all(store, Query(types=["container"], conditions=[
            Condition("hostId", "eq", host_id, "int")]))
        by_uuid = {r.uuid: r for r in records}
        by_docker_id = {r.data.get("externalId"): r for r in records if r.data.get("externalId")}
        seen: set[int] = set()
        for summary in summaries:
            record = by_uuid.get(summary.uuid) if summary.uuid else \
                by_docker_id.get(summary.docker_id)
            if record is None:
                if summary.uuid and await store.get_by_uuid(summary.uuid):
                    continue  # a record of another host: not ours to judge
                await self._import(host_id, summary)
                continue
            seen.add(record.id)
            if record.transitioning == "yes":
                continue
            if record.state in GONE:
                self._remove_leftover(host_id, record)
            else:
                await self._apply(record, summary)
        for record in records:
            if record.id in seen or record.state in GONE or record.transitioning == "yes":
                continue
            if record.data.get("externalId"):
                log.info("container %s vanished from its host", record.uuid)
                await store.update(record.id, {"state": "removed", "removed": now_ms()})
                await release_mounts(store, record, volumes_removed=False)
        await self._services.runner.resume(host_id)

    def _remove_unrecorded(self, host_id: int, summary: ContainerState) -> None:
        uuid = summary.uuid or ""
        log.info("removing container %s (%s) from host %s: it is a service's, without a "
                 "record", summary.name, summary.docker_id, format_id("1h", host_id))

        async def remove() -> None:
            try:
                await self._services.hub.call(
                    host_id, "instance.remove", "container", summary.docker_id,
                    RemoveRequest(uuid, remove_volumes=False).dump())
            except InstructionError as exc:
                log.warning("could not remove container %s from host %s: %s",
                            summary.docker_id, format_id("1h", host_id), exc)

        self._spawn(remove())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _remove_leftover(self, host_id: int, record: Record) -> None:
        """A container whose record was removed while its host was away goes too."""

        async def remove() -> None:
            try:
                await self._services.instructions.send(
                    record, "instance.remove", RemoveRequest(record.uuid, remove_volumes=True),
                    NoData, host_id=host_id)
            except InstructionError as exc:
                log.warning("could not remove container %s left on host %s: %s",
                            record.uuid, format_id("1h", host_id), exc)

        self._spawn(remove())
