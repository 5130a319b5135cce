"""The service controller: keeps every running service at its scale, level-triggered.

It follows the change feed; a change that bears on a service (the service itself, one of its
containers, a host of its environment) queues the service, each at most once. A worker takes
it, reads its current state and carries out one reconcile pass
(``server.engine.service_reconcile``). Every ``RESYNC_SECONDS`` every running service is
queued again, which also notices hosts whose lost timer ran out.

Only services at rest in a running state are reconciled here; a service in a transitional
state belongs to its operation (``server.engine.service_operations``), which takes the same
per-service lock. Across servers on one PostgreSQL, a pass holds the service's claim, so two
servers never reconcile one service at once (a server that cannot take it leaves it to the
one that holds it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from server.engine.service_reconcile import ServicePass
from server.resources.service_lifecycle import RUNNING_STATES
from server.store import Condition, Conflict, Query, Record
from server.store.paging import list_all

if TYPE_CHECKING:
    from server.services import Services
    from server.store import Change

log = logging.getLogger(__name__)

RESYNC_SECONDS = 5.0
RETRY_SECONDS = 5.0
CLAIM_TTL_MS = 60_000
WORKERS = 4
_CONTAINER_FIELDS = frozenset({"state", "removed", "healthState", "hostId"})
_HOST_FIELDS = frozenset({"state", "agentState", "removed", "labels"})


class ServiceController:
    def __init__(self, services: Services) -> None:
        self._services = services
        self._pass = ServicePass(services)
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._queued: set[int] = set()
        self._locks: dict[int, asyncio.Lock] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def passes(self) -> ServicePass:
        return self._pass

    def lock(self, service_id: int) -> asyncio.Lock:
        """Held by a pass and by the service's operations: one at a time per service."""
        return self._locks.setdefault(service_id, asyncio.Lock())

    def queue(self, service_id: int) -> None:
        if service_id not in self._queued:
            self._queued.add(service_id)
            self._queue.put_nowait(service_id)

    async def start(self) -> None:
        position = self._services.feed.position
        self._tasks = [asyncio.create_task(self._follow(position)),
                       asyncio.create_task(self._resync()),
                       *(asyncio.create_task(self._work()) for _ in range(WORKERS))]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    # --- what to look at ------------------------------------------------------------------

    async def _follow(self, since: int) -> None:
        async def on_batch(batch: list[Change]) -> None:
            for change in batch:
                await self._on_change(change)

        await self._services.feed.consume(since, on_batch, self._queue_all)

    async def _on_change(self, change: Change) -> None:
        record = change.record
        if record.type == "service":
            self.queue(record.id)
        elif record.type == "container":
            service_id = record.data.get("serviceId")
            if isinstance(service_id, int) and (
                    change.kind == "create" or not _CONTAINER_FIELDS.isdisjoint(change.fields)):
                self.queue(service_id)
        elif record.type == "host" and (change.kind == "create" or
                                        not _HOST_FIELDS.isdisjoint(change.fields)):
            await self._queue_all(record.project_id)

    async def _queue_all(self, project_id: int | None = None) -> None:
        for service in await list_all(self._services.store, Query(
                types=["service"], project_id=project_id,
                conditions=[Condition("removed", "null")])):
            if service.state in RUNNING_STATES:
                self.queue(service.id)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(RESYNC_SECONDS)
            try:
                await self._queue_all()
            except Exception:
                log.exception("services: could not list the services to resync")

    # --- passes ---------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            service_id = await self._queue.get()
            self._queued.discard(service_id)
            try:
                await self.reconcile(service_id)
            except Exception:
                log.exception("services: the pass of service %s failed", service_id)

    async def reconcile(self, service_id: int) -> None:
        store = self._services.store
        async with self.lock(service_id):
            service = await store.get(service_id)
            if service is None or service.type != "service" or service.removed is not None \
                    or service.state not in RUNNING_STATES or service.transitioning == "yes":
                return
            owner = self._services.runner.owner
            if not await store.claim(service_id, owner, "reconcile", CLAIM_TTL_MS):
                return  # another server is at it
            try:
                result = await self._pass.run(service)
            finally:
                with contextlib.suppress(Exception):
                    await store.release(service_id, owner)
        await self._record(service, result.problem, result.plan.live, result.health)

    async def _record(self, service: Record, problem: str | None, live: int,
                      health: str | None) -> None:
        """The pass's outcome on the service: its problem as the transitioning error (or
        none), how many of its units run and its health, each written only when it
        differs; then its stack's health."""
        current = await self._services.store.get(service.id)
        if current is None or current.removed is not None or current.transitioning == "yes":
            return
        columns: dict[str, Any] = {}
        if problem is not None and (current.transitioning != "error" or
                                    current.transitioning_message != problem):
            columns = {"transitioning": "error", "transitioning_message": problem}
        elif problem is None and current.transitioning == "error":
            columns = {"transitioning": "no", "transitioning_message": None}
        data: dict[str, Any] = {}
        if current.data.get("currentScale") != live:
            data["currentScale"] = live
        if health is not None and current.data.get("healthState") != health:
            data["healthState"] = health
        if columns or data:
            with contextlib.suppress(Conflict):
                await self._services.store.update(service.id, columns, data or None,
                                                  expected_states={current.state})
        if "healthState" in data:
            await self._stack_health(current.data.get("stackId"))
        if problem is not None:
            asyncio.get_running_loop().call_later(RETRY_SECONDS, self.queue, service.id)

    async def _stack_health(self, stack_id: Any) -> None:
        store = self._services.store
        stack = await store.get(stack_id) if isinstance(stack_id, int) else None
        if stack is None or stack.removed is not None:
            return
        services = await list_all(store, Query(
            types=["service"], project_id=stack.project_id,
            conditions=[Condition("stackId", "eq", stack.id, "int"),
                        Condition("removed", "null")]))
        health = stack_health([s.data.get("healthState") for s in services
                               if s.state in RUNNING_STATES])
        if stack.data.get("healthState") != health:
            with contextlib.suppress(Conflict):
                await store.update(stack.id, {}, {"healthState": health})


def stack_health(states: list[Any]) -> str:
    """A stack's health from its running services': all healthy, all unhealthy, some not
    healthy (degraded) or on their way (initializing)."""
    if all(s == "healthy" for s in states):
        return "healthy"
    if all(s == "unhealthy" for s in states):
        return "unhealthy"
    if any(s in ("unhealthy", "degraded") for s in states):
        return "degraded"
    return "initializing"
