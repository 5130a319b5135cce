"""Gather what the scheduler needs from the store and the hub, and place a container."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from server import scheduler
from server.agents.liveness import AgentState
from server.api.errors import invalid
from server.store import Condition, Query, Record, Store
from shared.ids import format_id, parse_id

if TYPE_CHECKING:
    from server.services import Services

PAGE = 500


async def list_all(store: Store, query: Query) -> list[Record]:
    """Every record a query matches, page by page."""
    out: list[Record] = []
    offset = 0
    while True:
        page = await store.list(Query(**{**query.__dict__, "limit": PAGE, "offset": offset}))
        out.extend(page)
        if len(page) < PAGE:
            return out
        offset += PAGE


def reservation(spec: Mapping[str, Any], values: Mapping[str, Any]) -> tuple[int, int]:
    memory = spec.get("memoryReservation") or spec.get("memory") or 0
    cpu = values.get("milliCpuReservation") or 0
    return int(memory), int(cpu)


def _candidate(host: Record, containers: list[Record], live: bool) -> scheduler.HostCandidate:
    used: set[tuple[str, int, str]] = set()
    memory = cpu = 0
    placed = []
    for c in containers:
        spec = c.data.get("spec") or {}
        for port in spec.get("ports") or []:
            if port.get("hostPort"):
                used.add((port.get("hostIp") or "0.0.0.0", int(port["hostPort"]),
                          port.get("protocol") or "tcp"))
        m, p = reservation(spec, c.data)
        memory, cpu = memory + m, cpu + p
        placed.append(scheduler.PlacedContainer(name=c.name, labels=dict(c.data.get("labels")
                                                                        or {})))
    labels = dict(host.data.get("reportedLabels") or {})
    labels.update(host.data.get("userLabels") or {})
    return scheduler.HostCandidate(
        id=format_id("1h", host.id), name=host.name or host.data.get("hostname") or "",
        active=live and host.state == "active", labels=labels,
        memory=host.data.get("memory"), milli_cpu=host.data.get("milliCpu"),
        ip=str(host.data.get("agentIpAddress") or ""), used_ports=frozenset(used),
        reserved_memory=memory, reserved_milli_cpu=cpu, containers=placed)


async def place_container(services: Services, project_id: int, values: Mapping[str, Any],
                          spec: Mapping[str, Any],
                          required_host_ids: frozenset[str] | None = None) -> Record:
    """The host a new container goes to, or a 422 that says why no host can take it."""
    store = services.store
    hosts = [h for h in await list_all(store, Query(types=["host"], project_id=project_id))
             if h.removed is None]
    containers = await list_all(store, Query(types=["container"], project_id=project_id,
                                             conditions=[Condition("removed", "null")]))
    by_host: dict[int, list[Record]] = defaultdict(list)
    for c in containers:
        if isinstance(c.data.get("hostId"), int):
            by_host[c.data["hostId"]].append(c)
    candidates = [_candidate(h, by_host[h.id],
                             services.hub.agent_state(h.id) is AgentState.ACTIVE) for h in hosts]
    memory, cpu = reservation(spec, values)
    requested = values.get("requestedHostId")
    if requested is not None:
        number = parse_id(str(requested), "1h")
        target = next((h for h in hosts if h.id == number), None)
        if target is None:
            raise invalid("InvalidReference", "requestedHostId",
                          f"{requested} is not a host in this environment")
        if not services.hub.is_live(target.id) or target.state != "active":
            state = target.state if target.state != "active" else "disconnected"
            raise invalid("NoHostAvailable", "requestedHostId",
                          f"host {requested} ({target.name}) is {state}: it is not active, so "
                          "it cannot take new containers")
    request = scheduler.Request(
        requested_host_id=requested,
        ports=[(p.get("hostIp"), p.get("hostPort"), p.get("protocol") or "tcp")
               for p in spec.get("ports") or []],
        memory_reservation=memory or None, milli_cpu_reservation=cpu or None,
        labels=dict(spec.get("labels") or {}), required_host_ids=required_host_ids)
    try:
        placement = scheduler.place(request, candidates)
    except scheduler.NoHostAvailable as exc:
        field = "requestedHostId" if requested else None
        raise invalid("NoHostAvailable", field, str(exc)) from None
    except ValueError as exc:
        raise invalid("InvalidFormat", "labels", str(exc)) from None
    number = parse_id(placement.host_id, "1h")
    return next(h for h in hosts if h.id == number)
