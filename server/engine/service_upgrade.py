"""In-service upgrades, rolling restarts and their ends: batch by batch, without a gap.

``upgrade`` replaces the units made from the old launch config with units of the new one,
``batchSize`` at a time, ``intervalMillis`` apart. With ``startFirst`` a batch's new units
come up (running, and healthy when they have a health check) before the old ones go;
otherwise the old ones go first. An old unit is never stopped while clients may still be
sent to it: it is first marked ``draining`` (discovery and load balancers leave it out at
once), and stopped ``DRAIN_SECONDS`` (or the service's ``drainTimeoutMs``) later. The old
units stay, stopped, until ``finishupgrade`` removes them or ``rollback`` starts them again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from server import operations
from server.api.errors import ApiError, invalid
from server.caller import Caller
from server.engine.service_reconcile import (
    launch_version,
    member_of,
    service_containers,
)
from server.engine.service_units import Unit, drain_seconds, free_indexes, units_of
from server.store import Record
from shared.errors import InstructionError

if TYPE_CHECKING:
    from server.services import Services

READY_TIMEOUT = 300.0
POLL_SECONDS = 0.2


async def prepare_upgrade(service: Record, values: Mapping[str, Any]) -> dict[str, Any]:
    """The data an upgrade starts with: the strategy, the new launch config, the old one kept
    for rollback. A 422 for an upgrade that asks for nothing Corral can do."""
    if values.get("toServiceStrategy"):
        raise invalid("InvalidOption", "toServiceStrategy",
                      "Corral upgrades in service only: use inServiceStrategy")
    strategy = dict(values.get("inServiceStrategy") or {})
    stored = service.data.get("upgradeStrategy") or {}
    for key, default in (("batchSize", 1), ("intervalMillis", 2000), ("startFirst", False)):
        strategy.setdefault(key, stored.get(key, default))
    from server.resources.services import check_launch_config, check_sidekicks

    old = service.data.get("launchConfig") or {}
    old_sidekicks = service.data.get("secondaryLaunchConfigs") or []
    new = strategy.pop("launchConfig", None) or old
    sidekicks = strategy.pop("secondaryLaunchConfigs", None)
    check_launch_config(new, "inServiceStrategy.launchConfig")
    sidekicks = check_sidekicks(sidekicks) if sidekicks is not None else old_sidekicks
    return {"upgrade": {"inServiceStrategy": {**strategy, "previousLaunchConfig": old,
                                              "previousSecondaryLaunchConfigs":
                                                  old_sidekicks}},
            "previousLaunchConfig": old, "previousSecondaryLaunchConfigs": old_sidekicks,
            "launchConfig": new, "secondaryLaunchConfigs": sidekicks}


def _batches(units: list[Unit], size: int) -> Iterable[list[Unit]]:
    for start in range(0, len(units), max(1, size)):
        yield units[start:start + max(1, size)]


class Rollout:
    """Carries out upgrades and restarts of one service, as its operations."""

    def __init__(self, services: Services, caller: Caller, service: Record) -> None:
        self._services = services
        self._caller = caller
        self._service = service

    async def _units(self) -> list[Unit]:
        containers = await service_containers(self._services.store, self._service)
        return units_of(m for c in containers if (m := member_of(c)) is not None)

    async def _still(self, state: str) -> bool:
        current = await self._services.store.get(self._service.id)
        return current is not None and current.state == state

    async def upgrade(self) -> None:
        strategy = (self._service.data.get("upgrade") or {}).get("inServiceStrategy") or {}
        version = launch_version(self._service)
        stack = await self._services.store.get(self._service.data.get("stackId", 0))
        if stack is None:
            raise InstructionError("the service's stack is gone")
        old = [u for u in await self._units()
               if any(m.version != version and not m.gone and m.state != "stopped"
                      for m in u.members)]
        taken = {m.index for u in await self._units() for m in u.members}
        for batch in _batches(old, int(strategy.get("batchSize") or 1)):
            if not await self._still("upgrading"):
                return  # canceled: the canceling step takes over
            indexes = free_indexes(taken, len(batch))
            taken.update(indexes)
            if strategy.get("startFirst"):
                made = await self._create(stack, indexes, version)
                await self._ready(made)
                await self._retire(batch)
            else:
                await self._retire(batch)
                made = await self._create(stack, indexes, version)
                await self._ready(made)
            await self._pause(int(strategy.get("intervalMillis") or 0) / 1000, "upgrading")

    async def _pause(self, seconds: float, state: str) -> None:
        """The interval between batches, cut short when the service leaves ``state`` (a
        cancel asked for meanwhile runs once this operation has returned)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if not await self._still(state):
                return
            await asyncio.sleep(min(left, POLL_SECONDS))

    async def _create(self, stack: Record, indexes: list[int], version: str) -> list[Record]:
        passes = self._services.service_controller.passes
        made: list[Record] = []
        for index in indexes:
            try:
                made += await passes.create_unit(self._caller, self._service, stack, index,
                                                 None, version=version)
            except ApiError as exc:
                raise InstructionError(exc.message or exc.code) from exc
        return made

    async def _ready(self, records: list[Record]) -> None:
        """Until every container is running, and healthy when it is checked."""
        deadline = time.monotonic() + READY_TIMEOUT
        pending = {r.id for r in records}
        while pending:
            for record_id in list(pending):
                current = await self._services.store.get(record_id)
                if current is None or current.state in ("error", "removed", "stopped"):
                    message = current.transitioning_message if current else None
                    raise InstructionError(f"a new container failed: {message or 'it is gone'}")
                checked = bool((current.data.get("healthCheck") or {}).get("port"))
                if current.state == "running" and \
                        (not checked or current.data.get("healthState") == "healthy"):
                    pending.discard(record_id)
            if time.monotonic() > deadline:
                raise InstructionError("the new containers did not become ready in time")
            if pending:
                await asyncio.sleep(POLL_SECONDS)

    async def _drain(self, members: list[int]) -> None:
        store = self._services.store
        for container_id in members:
            await store.update(container_id, {}, {"draining": True})
        await asyncio.sleep(drain_seconds(self._service.data.get("launchConfig") or {}))

    async def _retire(self, units: list[Unit]) -> None:
        """Out of discovery, then stopped: kept for a rollback."""
        members = [m.id for u in units for m in u.present()]
        await self._drain(members)
        for container_id in members:
            current = await self._services.store.get(container_id)
            if current is not None and current.state in ("running", "starting"):
                try:
                    await operations.act(self._caller, current, "stop")
                except ApiError as exc:
                    raise InstructionError(exc.message or exc.code) from exc
        await self._stopped(members)

    async def _stopped(self, container_ids: list[int]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            states = [await self._services.store.get(i) for i in container_ids]
            if all(s is None or s.state in ("stopped", "removed", "error") for s in states):
                return
            await asyncio.sleep(POLL_SECONDS)
        raise InstructionError("the old containers did not stop in time")

    async def finish(self) -> None:
        version = launch_version(self._service)
        for unit in await self._units():
            if any(m.version != version for m in unit.present()):
                await self._remove(unit)

    async def rollback(self) -> None:
        """Back to the previous launch config: its stopped units start again, the new ones go."""
        previous = launch_version(self._service)
        units = await self._units()
        for unit in units:
            if all(m.version == previous for m in unit.present()):
                for member in unit.present():
                    current = await self._services.store.get(member.id)
                    if current is not None and current.state == "stopped":
                        await self._services.store.update(member.id, {}, {"draining": None})
                        await operations.act(self._caller, current, "start")
        for unit in units:
            if any(m.version != previous for m in unit.present()):
                await self._drain([m.id for m in unit.present()])
                await self._remove(unit)

    async def _remove(self, unit: Unit) -> None:
        for member in unit.present():
            current = await self._services.store.get(member.id)
            if current is not None and current.removed is None:
                try:
                    await operations.remove(self._caller, current)
                except ApiError as exc:
                    raise InstructionError(exc.message or exc.code) from exc

    async def restart(self) -> None:
        strategy = self._service.data.get("restartStrategy") or {}
        units = [u for u in await self._units() if u.present()]
        for batch in _batches(units, int(strategy.get("batchSize") or 1)):
            ids = [m.id for u in batch for m in u.present()]
            for container_id in ids:
                current = await self._services.store.get(container_id)
                if current is not None and current.state == "running":
                    try:
                        await operations.act(self._caller, current, "restart")
                    except ApiError as exc:
                        raise InstructionError(exc.message or exc.code) from exc
            records = [r for i in ids if (r := await self._services.store.get(i)) is not None]
            await self._ready(records)
            await self._pause(int(strategy.get("intervalMillis") or 0) / 1000, "restarting")
