"""The placement view: per environment, each host and what its containers take (ports,
memory, CPU, names and labels for affinity rules), with host ids in spread order.

It is loaded once per environment and then kept up to date from the change feed, so the cost
of a placement does not grow with the number of containers in the environment. It may lag
behind the store by a moment, so a plan made on it is only a proposal (see ``placement``).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from server import scheduler
from server.api.errors import ValidationError
from server.feed import FeedClosed, ResumeTooOld
from server.resources.container_spec import reserved_memory
from server.store import Change, Condition, Query, Record, Store
from server.store.paging import list_all
from shared.ids import format_id

if TYPE_CHECKING:
    from server.feed import ChangeFeed

log = logging.getLogger(__name__)


def reservation(spec: Mapping[str, Any], values: Mapping[str, Any]) -> tuple[int, int]:
    """(memory in bytes, milli-CPU) that a container reserves on its host."""
    try:
        memory = reserved_memory(values) or spec.get("memory") or 0
    except ValidationError:  # a record from before the values were checked: its limit
        memory = spec.get("memory") or 0
    cpu = values.get("milliCpuReservation") or 0
    return int(memory), int(cpu)


@dataclass(frozen=True)
class Taken:
    """What one container takes on its host."""

    ports: frozenset[tuple[str, int, str]]
    memory: int
    milli_cpu: int
    placed: scheduler.PlacedContainer

    @classmethod
    def of(cls, record: Record) -> Taken:
        spec = record.data.get("spec") or {}
        ports = frozenset(
            (p.get("hostIp") or scheduler.ANY_IP, int(p["hostPort"]), p.get("protocol") or "tcp")
            for p in spec.get("ports") or [] if p.get("hostPort"))
        memory, cpu = reservation(spec, record.data)
        return cls(ports, memory, cpu, scheduler.PlacedContainer(
            name=record.name, labels=dict(record.data.get("labels") or {})))


@dataclass(eq=False)
class HostView:
    """A host and what its containers take; its scheduler candidate is built when needed."""

    record: Record
    taken: dict[int, Taken] = field(default_factory=dict)
    _candidate: scheduler.HostCandidate | None = None

    def candidate(self, active: bool) -> scheduler.HostCandidate:
        if self._candidate is None:
            self._candidate = candidate(self.record, self.taken.values(), True)
        if self._candidate.active != active:
            return replace(self._candidate, active=active)
        return self._candidate


class ProjectView:
    """One environment's hosts, and their ids in spread order (fewest containers first),
    kept sorted as containers come and go so that a plan need not rank every host."""

    def __init__(self) -> None:
        self.hosts: dict[int, HostView] = {}
        self._order: list[tuple[int, float, list[str | int], int]] = []
        self._keys: dict[int, tuple[int, float, list[str | int], int]] = {}
        self._reservations = 0  # keys of plans being committed: negative, never a record id

    def ordered(self) -> list[int]:
        return [entry[-1] for entry in self._order]

    def put_host(self, record: Record) -> None:
        view = self.hosts.get(record.id)
        if view is None:
            view = self.hosts[record.id] = HostView(record)
        else:
            view.record = record
        self.changed(view)

    def drop_host(self, host_id: int) -> None:
        self.hosts.pop(host_id, None)
        self._unrank(host_id)

    def reserve(self, host_id: int, taken: Taken) -> int:
        """Count ``taken`` on the host until ``unreserve``; the reservation's key."""
        self._reservations -= 1
        view = self.hosts[host_id]
        view.taken[self._reservations] = taken
        self.changed(view)
        return self._reservations

    def unreserve(self, host_id: int, key: int) -> None:
        view = self.hosts.get(host_id)
        if view is not None and view.taken.pop(key, None) is not None:
            self.changed(view)

    def changed(self, view: HostView) -> None:
        view._candidate = None
        self._unrank(view.record.id)
        key = (*scheduler.spread_key(view.candidate(True)), view.record.id)
        bisect.insort(self._order, key)
        self._keys[view.record.id] = key

    def _unrank(self, host_id: int) -> None:
        key = self._keys.pop(host_id, None)
        if key is not None:
            index = bisect.bisect_left(self._order, key)
            if index < len(self._order) and self._order[index] == key:
                del self._order[index]


def candidate(host: Record, taken: Any, active: bool) -> scheduler.HostCandidate:
    used: set[tuple[str, int, str]] = set()
    memory = cpu = 0
    placed = []
    for item in taken:
        used |= item.ports
        memory, cpu = memory + item.memory, cpu + item.milli_cpu
        placed.append(item.placed)
    labels = dict(host.data.get("reportedLabels") or {})
    labels.update(host.data.get("userLabels") or {})
    return scheduler.HostCandidate(
        id=format_id("1h", host.id), name=host.name or host.data.get("hostname") or "",
        active=active and host.state == "active", labels=labels,
        memory=host.data.get("memory"), milli_cpu=host.data.get("milliCpu"),
        ip=str(host.data.get("agentIpAddress") or ""), used_ports=frozenset(used),
        reserved_memory=memory, reserved_milli_cpu=cpu, containers=placed)


def _placed(record: Record) -> bool:
    return record.type == "container" and record.removed is None and \
        isinstance(record.data.get("hostId"), int)


class PlacementView:
    """Hosts and what their containers take, per environment, kept from the change feed."""

    def __init__(self, store: Store, feed: ChangeFeed) -> None:
        self._store = store
        self._feed = feed
        self._projects: dict[int, ProjectView] = {}
        self._loading: dict[int, asyncio.Lock] = {}
        # Where each container is counted: (project, host); and the version of what we hold.
        self._where: dict[int, tuple[int, int]] = {}
        self._versions: dict[int, int] = {}
        self._task: asyncio.Task[None] | None = None
        self.applied = 0
        self._advanced = asyncio.Event()

    def start(self) -> None:
        self.applied = self._feed.position
        self._task = asyncio.create_task(self._follow(self._feed.position))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def sync(self, timeout: float = 2.0) -> None:
        """Wait until the view holds every change this process committed so far (read your
        own writes: a host that just became active can be chosen). Bounded: a view that lags
        is still only a plan, which the commit checks; other servers' changes arrive with
        the feed's next poll."""
        target = self._feed.committed
        if self.applied >= target:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.applied < target and self._task is not None \
                        and not self._task.done():
                    advanced = self._advanced
                    await advanced.wait()

    async def hosts(self, project_id: int) -> ProjectView:
        """The environment's hosts, loaded from the store the first time."""
        loaded = self._projects.get(project_id)
        if loaded is not None:
            return loaded
        lock = self._loading.setdefault(project_id, asyncio.Lock())
        async with lock:
            if project_id not in self._projects:
                await self._load(project_id)
        return self._projects[project_id]

    async def _load(self, project_id: int) -> None:
        hosts = await list_all(self._store, Query(types=["host"], project_id=project_id,
                                                  conditions=[Condition("removed", "null")]))
        containers = await list_all(self._store, Query(
            types=["container"], project_id=project_id,
            conditions=[Condition("removed", "null"), Condition("hostId", "notnull")]))
        project = ProjectView()
        for h in hosts:
            project.put_host(h)
            self._versions[h.id] = max(self._versions.get(h.id, 0), h.version)
        self._projects[project_id] = project
        for c in containers:
            self._apply_container(c)

    def catch_up(self) -> None:
        """Take what the feed already holds, without waiting: in a commit, the view is then
        as fresh as this process knows."""
        while batch := self._feed.ready_after(self.applied):
            self._take(batch)

    def taken_on(self, project_id: int, host_id: int) -> list[Taken] | None:
        """What the host's containers take as the view holds it (not the reservations of
        plans being committed), or None if the view does not hold the host."""
        project = self._projects.get(project_id)
        view = project.hosts.get(host_id) if project is not None else None
        if view is None:
            return None
        return [taken for key, taken in view.taken.items() if key > 0]

    async def _follow(self, since: int) -> None:
        cursor = self._feed.follow(since)
        while True:
            cursor.seq = max(cursor.seq, self.applied)  # ``catch_up`` may have gone ahead
            try:
                batch = await cursor.next_batch()
            except (FeedClosed, asyncio.CancelledError):
                return
            except ResumeTooOld:
                log.warning("placement view fell behind the change log; reloading")
                self._projects.clear()
                self._where.clear()
                self._versions.clear()
                cursor = self._feed.follow()
                continue
            self._take(batch)

    def _take(self, batch: list[Change]) -> None:
        fresh = [change for change in batch if change.seq > self.applied]
        if not fresh:
            return
        for change in fresh:
            self.apply(change)
        self.applied = fresh[-1].seq
        advanced, self._advanced = self._advanced, asyncio.Event()
        advanced.set()

    def apply(self, change: Change) -> None:
        """Take one change into the view (older versions than the one held are ignored)."""
        record = change.record
        if record.type not in ("host", "container") or record.project_id not in self._projects:
            return
        if self._versions.get(record.id, 0) >= record.version:
            return
        self._versions[record.id] = record.version
        if record.type == "host":
            project = self._projects[record.project_id]
            if record.removed is not None:
                project.drop_host(record.id)
            else:
                project.put_host(record)
            return
        self._apply_container(record)

    def _apply_container(self, record: Record) -> None:
        self._versions[record.id] = max(self._versions.get(record.id, 0), record.version)
        before = self._where.pop(record.id, None)
        if before is not None:
            project = self._projects.get(before[0])
            old = project.hosts.get(before[1]) if project is not None else None
            if project is not None and old is not None and \
                    old.taken.pop(record.id, None) is not None:
                project.changed(old)
        if not _placed(record) or record.project_id is None:
            return
        host_id = int(record.data["hostId"])
        project = self._projects.get(record.project_id)
        view = project.hosts.get(host_id) if project is not None else None
        if project is None or view is None:
            return
        view.taken[record.id] = Taken.of(record)
        project.changed(view)
        self._where[record.id] = (record.project_id, host_id)
