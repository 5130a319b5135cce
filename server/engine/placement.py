"""Place a container: plan against the placement view, then reserve what it takes in the
same transaction that records it.

The commit locks the chosen host (a row lock on PostgreSQL; SQLite has one writer), re-checks
the request against the host's containers as the store has them, and only then inserts the
container, so two concurrent creates never claim the same host port or overcommit a host,
also across server processes. A host that no longer fits is planned around, with its fresh
state, until one fits or none is left.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from server import scheduler
from server.agents.liveness import AgentState
from server.api.errors import invalid
from server.engine.placement_view import (
    HostView,
    PlacementView,
    Taken,
    candidate,
    reservation,
)
from server.store import Condition, Query, Record, Store, Transaction
from server.store.paging import list_all
from shared.ids import format_id, parse_id

if TYPE_CHECKING:
    from server.agents.hub import Hub

ATTEMPTS = 8


def request_for(values: Mapping[str, Any], spec: Mapping[str, Any],
                required_host_ids: frozenset[str] | None) -> scheduler.Request:
    memory, cpu = reservation(spec, values)
    return scheduler.Request(
        requested_host_id=values.get("requestedHostId"),
        ports=[(p.get("hostIp"), p.get("hostPort"), p.get("protocol") or "tcp")
               for p in spec.get("ports") or []],
        memory_reservation=memory or None, milli_cpu_reservation=cpu or None,
        labels=dict(spec.get("labels") or {}), required_host_ids=required_host_ids)


def pending(request: scheduler.Request) -> Taken:
    """What a container being committed takes, as far as its plan knows."""
    ports = frozenset((ip or scheduler.ANY_IP, int(port), protocol or "tcp")
                      for ip, port, protocol in request.ports if port)
    return Taken(ports, request.memory_reservation or 0, request.milli_cpu_reservation or 0,
                 scheduler.PlacedContainer(name=None, labels=dict(request.labels)))


NewContainer = Callable[[Transaction, Record], Awaitable[Record]]


class Placer:
    """Plans against the view, commits against the store."""

    def __init__(self, store: Store, view: PlacementView, hub: Hub) -> None:
        self._store = store
        self.view = view
        self._hub = hub

    def _live(self, host_id: int) -> bool:
        return self._hub.agent_state(host_id) is AgentState.ACTIVE

    async def place(self, store: Store, project_id: int, values: Mapping[str, Any],
                    spec: Mapping[str, Any], required_host_ids: frozenset[str] | None,
                    create: NewContainer) -> Record:
        """Choose a host, re-check it in a transaction and record the container there
        (``create`` writes it, given the transaction and the host); a 422 that says why no
        host can take it otherwise."""
        await self.view.sync()
        project = await self.view.hosts(project_id)
        await self._check_requested(project.hosts, values.get("requestedHostId"))
        request = request_for(values, spec, required_host_ids)
        # Hosts whose commit found them full: planned with what the store said.
        fresh: dict[int, scheduler.HostCandidate] = {}
        for _ in range(ATTEMPTS):
            def current(host_id: int) -> scheduler.HostCandidate:
                return fresh.get(host_id) or \
                    project.hosts[host_id].candidate(self._live(host_id))

            host_id = self._plan(request, project.ordered(), current, values)
            # Counted on its host while it commits, so that creates planned meanwhile spread
            # over other hosts and leave its ports alone.
            token = project.reserve(host_id, pending(request))
            try:
                record, refreshed = await self._commit(store, host_id, request, create)
            finally:
                project.unreserve(host_id, token)
            if record is not None:
                return record
            assert refreshed is not None
            fresh[host_id] = refreshed
        raise invalid("NoHostAvailable", None,
                      "no host could take this container: the hosts kept changing; try again")

    def _plan(self, request: scheduler.Request, order: list[int],
              current: Callable[[int], scheduler.HostCandidate],
              values: Mapping[str, Any]) -> int:
        try:
            # The common case walks hosts in spread order and stops at the first that fits;
            # soft rules, or no host fitting, take the full ranking (and its reasons).
            placement = scheduler.place_in_order(request, (current(h) for h in order)) or \
                scheduler.place(request, [current(h) for h in order])
        except scheduler.NoHostAvailable as exc:
            field_name = "requestedHostId" if values.get("requestedHostId") else None
            raise invalid("NoHostAvailable", field_name, str(exc)) from None
        except ValueError as exc:
            raise invalid("InvalidFormat", "labels", str(exc)) from None
        number = parse_id(placement.host_id, "1h")
        assert number is not None
        return number

    async def _commit(self, store: Store, host_id: int, request: scheduler.Request,
                      create: NewContainer) -> tuple[Record | None,
                                                     scheduler.HostCandidate | None]:
        """The container recorded on ``host_id``, or the host as it really is if it does not
        fit any more."""

        async def work(tx: Transaction) -> tuple[Record | None,
                                                 scheduler.HostCandidate | None]:
            host = await tx.lock(host_id)
            if host is None:
                raise invalid("NoHostAvailable", None,
                              f"host {format_id('1h', host_id)} was removed")
            actual = candidate(host, await self._taken(tx, host), self._live(host_id))
            try:
                scheduler.place(request, [actual])
            except scheduler.NoHostAvailable:
                return None, actual
            return await create(tx, host), None

        return await store.transact(work)

    async def _taken(self, tx: Transaction, host: Record) -> list[Taken]:
        """What the containers of the locked ``host`` take: from the view when it holds
        every change the transaction can see (a placement on the host waits for the lock, so
        nothing can be added meanwhile), read from the store otherwise."""
        self.view.catch_up()
        if host.project_id is not None and await tx.last_seq() <= self.view.applied:
            known = self.view.taken_on(host.project_id, host.id)
            if known is not None:
                return known
        containers = await list_all(tx, Query(
            types=["container"], conditions=[Condition("hostId", "eq", host.id, "int"),
                                             Condition("removed", "null")]))
        return [Taken.of(c) for c in containers]

    async def _check_requested(self, views: Mapping[int, HostView], requested: Any) -> None:
        if requested is None:
            return
        number = parse_id(str(requested), "1h")
        target = views.get(number) if number is not None else None
        if target is None:
            raise invalid("InvalidReference", "requestedHostId",
                          f"{requested} is not a host in this environment")
        record = target.record
        if not self._hub.is_live(record.id) or record.state != "active":
            state = record.state if record.state != "active" else "disconnected"
            raise invalid("NoHostAvailable", "requestedHostId",
                          f"host {requested} ({record.name}) is {state}: it is not active, so "
                          "it cannot take new containers")
