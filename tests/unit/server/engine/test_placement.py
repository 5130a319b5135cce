"""Placement through the domain operations, on every backend: the view of an environment's
hosts is loaded once and then follows the change feed; the plan spreads containers and is
only a proposal, which the commit re-checks against the store, so that concurrent creates
never share a host port or overcommit memory, even when the view is behind."""

from __future__ import annotations

import asyncio
import builtins
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, cast

import pytest

from server import operations
from server.api.errors import ValidationError
from server.config import Settings
from server.store import Condition, NewRecord, Query, Record, Store, Transaction
from server.store.interface import Actor, Work
from server.store.sql import SqlStore, sqlite_url
from shared.ids import format_id
from tests.unit.server.engine.harness import Engine

T = Any


class RecordingTransaction:
    """A transaction that notes every query it lists, then runs it on the real one."""

    def __init__(self, inner: Transaction, queries: list[Query]) -> None:
        self._inner = inner
        self._queries = queries

    async def list(self, query: Query) -> builtins.list[Record]:
        self._queries.append(query)
        return await self._inner.list(query)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class RecordingStore:
    """A store that notes every query listed on it or in its transactions while
    ``recording``; everything else goes straight to the real store."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.queries: list[Query] = []
        self.recording = False

    def _sink(self) -> list[Query]:
        return self.queries if self.recording else []

    async def list(self, query: Query) -> builtins.list[Record]:
        self._sink().append(query)
        return await self._inner.list(query)

    async def transact(self, work: Work[T], *, actor: Actor | None = None) -> T:
        sink = self._sink()

        async def recorded(tx: Transaction) -> T:
            return await work(cast(Transaction, RecordingTransaction(tx, sink)))

        if actor is None:
            return await self._inner.transact(recorded)
        return await self._inner.transact(recorded, actor=actor)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def ports_of(record: Record) -> list[int]:
    return [int(p["hostPort"]) for p in record.data["spec"]["ports"] if p.get("hostPort")]


async def create(engine: Engine, **body: Any) -> Record:
    """A container created through the operations (not settled: the runner carries on)."""
    return await operations.create(engine.caller, "container",
                                   {"imageUuid": "docker:busybox", "startOnCreate": False,
                                    **body})


async def containers_of(engine: Engine) -> list[Record]:
    return await engine.store.list(Query(
        types=["container"], project_id=engine.project.id, limit=1000,
        conditions=[Condition("removed", "null")]))


async def view_ports(engine: Engine, host: Record) -> set[int]:
    """The host ports the placement view counts as taken on ``host``."""
    project = await engine.services.placer.view.hosts(engine.project.id)
    return {port for _, port, _ in project.hosts[host.id].candidate(True).used_ports}


def no_host(error: BaseException) -> bool:
    return isinstance(error, ValidationError) and error.code == "NoHostAvailable"


# --- the view follows the change feed ---------------------------------------------------


async def test_a_host_added_after_the_first_placement_takes_the_next_container(
        engine: Engine) -> None:
    first = await engine.add_host("host-1")
    on_first = await create(engine, ports=["80:80"])
    second = await engine.add_host("host-2")

    on_second = await create(engine, ports=["80:80"])
    await engine.settle()

    assert (on_first.data["hostId"], on_second.data["hostId"]) == (first.id, second.id)


async def test_a_removed_host_takes_no_more_containers(engine: Engine) -> None:
    first = await engine.add_host("host-1")
    second = await engine.add_host("host-2")
    await create(engine)  # the view of the environment is loaded
    await engine.settle()
    await engine.store.update(second.id, {"state": "removed",
                                          "removed": int(time.time() * 1000)})

    placed = [await create(engine) for _ in range(3)]
    await engine.settle()

    assert {c.data["hostId"] for c in placed} == {first.id}


async def test_a_removed_container_frees_its_host_port_for_the_next_create(
        engine: Engine) -> None:
    host = await engine.add_host()
    container = await engine.container(ports=["80:80"])
    with pytest.raises(ValidationError) as caught:
        await create(engine, ports=["80:80"])
    assert caught.value.code == "NoHostAvailable"

    await operations.remove(engine.caller, container)
    await engine.settle()
    again = await create(engine, ports=["80:80"])
    await engine.settle()

    assert again.data["hostId"] == host.id and ports_of(again) == [80]


async def test_a_change_older_than_the_version_the_view_holds_is_ignored(
        engine: Engine) -> None:
    host = await engine.add_host()
    container = await engine.container(ports=["80:80"])
    created = next(c for c in await engine.store.changes_after(0, 10_000)
                   if c.record.id == container.id and c.kind == "create")
    await operations.remove(engine.caller, container)
    await engine.settle()
    view = engine.services.placer.view
    await view.sync()
    assert await view_ports(engine, host) == set()

    view.apply(created)  # a late duplicate of the container's first version

    assert await view_ports(engine, host) == set()
    again = await create(engine, ports=["80:80"])
    assert again.data["hostId"] == host.id


async def test_a_change_newer_than_the_version_the_view_holds_is_applied(
        engine: Engine) -> None:
    """The counterpart of the test above: the same old change, with a newer version, counts."""
    host = await engine.add_host()
    container = await engine.container(ports=["80:80"])
    created = next(c for c in await engine.store.changes_after(0, 10_000)
                   if c.record.id == container.id and c.kind == "create")
    await operations.remove(engine.caller, container)
    await engine.settle()
    view = engine.services.placer.view
    await view.sync()
    removed = await engine.get(container)

    view.apply(replace(created, seq=created.seq + 10_000,
                       record=replace(created.record, version=removed.version + 1)))

    assert await view_ports(engine, host) == {80}


# --- spreading and refusing ---------------------------------------------------------------


async def test_sequential_creates_spread_so_host_counts_differ_by_at_most_one(
        engine: Engine) -> None:
    hosts = [await engine.add_host(f"host-{n}") for n in range(3)]

    placed = [await create(engine) for _ in range(8)]
    await engine.settle()

    counts = Counter(c.data["hostId"] for c in placed)
    assert set(counts) == {h.id for h in hosts}
    assert max(counts.values()) - min(counts.values()) <= 1


async def test_a_port_taken_on_every_host_is_a_422_naming_the_port_for_each_host(
        engine: Engine) -> None:
    hosts = [await engine.add_host(f"host-{n}") for n in range(3)]
    for _ in hosts:
        await create(engine, ports=["8080:80"])
    await engine.settle()

    with pytest.raises(ValidationError) as caught:
        await create(engine, ports=["8080:80"])

    assert (caught.value.status, caught.value.code) == (422, "NoHostAvailable")
    message = str(caught.value)
    for host in hosts:
        assert f"{format_id('1h', host.id)} ({host.name}): port 8080/tcp is already used" \
            in message


# --- concurrency: the commit re-checks ------------------------------------------------------


async def test_concurrent_creates_of_one_host_port_get_one_container_per_host(
        engine: Engine) -> None:
    hosts = [await engine.add_host(f"host-{n}") for n in range(3)]

    results = await asyncio.gather(*(create(engine, ports=["8080:80"]) for _ in range(20)),
                                   return_exceptions=True)
    await engine.settle()

    placed = [r for r in results if isinstance(r, Record)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert sorted(c.data["hostId"] for c in placed) == sorted(h.id for h in hosts)
    assert len(refused) == 17 and all(no_host(e) for e in refused), refused
    assert all("port 8080/tcp is already used" in str(e) for e in refused)
    stored = await containers_of(engine)
    assert sorted(c.data["hostId"] for c in stored) == sorted(h.id for h in hosts)


@pytest.mark.parametrize("field", ["memory", "memoryReservation"])
async def test_concurrent_creates_never_overcommit_host_memory(
        engine: Engine, field: str) -> None:
    """add_host gives each host 4096 MiB: two containers of 1500 MiB fit, a third does not."""
    hosts = [await engine.add_host(f"host-{n}") for n in range(3)]

    results = await asyncio.gather(*(create(engine, **{field: "1500m"}) for _ in range(10)),
                                   return_exceptions=True)
    await engine.settle()

    placed = [r for r in results if isinstance(r, Record)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(placed) == 6 and len(refused) == 4, results
    assert all(no_host(e) and "memory" in str(e) for e in refused), refused
    assert Counter(c.data["hostId"] for c in placed) == {h.id: 2 for h in hosts}


async def test_a_memory_reservation_the_host_cannot_hold_is_refused(engine: Engine) -> None:
    await engine.add_host()  # 4096 MiB
    await create(engine, memoryReservation="1500m")
    await create(engine, memoryReservation="1500m")

    with pytest.raises(ValidationError) as caught:
        await create(engine, memoryReservation="1500m")
    await engine.settle()

    assert caught.value.code == "NoHostAvailable" and "memory" in str(caught.value)


async def test_the_commit_refuses_a_port_the_view_has_not_seen_taken(
        engine: Engine, settings: Settings) -> None:
    first = await engine.add_host("host-1")
    second = await engine.add_host("host-2")
    await create(engine)  # the view of the environment is loaded
    await engine.settle()
    # Taken by a writer this process hears nothing from (another server process): the plan
    # would choose host-1 (the lowest id) for it.
    other = await SqlStore.open(settings.database_url or sqlite_url(settings.data_dir),
                                owner=False)
    try:
        await other.create(NewRecord(
            type="container", kind="container", state="stopped",
            project_id=engine.project.id,
            data={"hostId": first.id, "spec": {"ports": [
                {"hostIp": None, "hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}}))
    finally:
        await other.close()
    assert await view_ports(engine, first) == set()

    around = await create(engine, ports=["8080:80"])
    with pytest.raises(ValidationError) as caught:
        await create(engine, ports=["8080:80"])
    await engine.settle()

    assert around.data["hostId"] == second.id
    assert caught.value.code == "NoHostAvailable"
    assert str(caught.value).count("port 8080/tcp is already used") == 2


# --- the cost of a plan ---------------------------------------------------------------------


def container_queries(queries: list[Query]) -> list[Query]:
    return [q for q in queries if "container" in q.types]


def host_queries(queries: list[Query]) -> list[Query]:
    return [q for q in queries if "host" in q.types]


def conditions(query: Query) -> Mapping[str, tuple[str, Any]]:
    return {c.field: (c.op, c.value) for c in query.conditions}


async def test_the_first_placement_loads_the_environment_and_later_ones_list_nothing(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan never lists the environment's containers: after the first placement loaded the
    view, a placement whose view holds every committed change lists no container at all."""
    hosts = [await engine.add_host(f"host-{n}") for n in range(3)]
    recorder = RecordingStore(engine.store)
    monkeypatch.setattr(engine.services.placer.view, "_store", recorder)
    monkeypatch.setattr(engine.services, "store", recorder)

    recorder.recording = True
    await create(engine)
    recorder.recording = False
    loaded = recorder.queries[:]
    for _ in range(5):
        await create(engine)
    await engine.settle()
    recorder.queries.clear()
    recorder.recording = True
    placed = await create(engine)
    recorder.recording = False
    await engine.settle()

    project_wide = [q for q in container_queries(loaded) if q.project_id is not None]
    assert len(host_queries(loaded)) == 1 and len(project_wide) == 1
    later = recorder.queries
    assert host_queries(later) == [] and container_queries(later) == []
    assert placed.data["hostId"] in {h.id for h in hosts}


async def test_a_commit_behind_the_log_reads_the_containers_of_its_host_only(
        engine: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    await engine.add_host("host-1")
    await engine.add_host("host-2")
    await create(engine)
    await engine.settle()
    recorder = RecordingStore(engine.store)
    monkeypatch.setattr(engine.services, "store", recorder)
    other = await SqlStore.open(settings.database_url or sqlite_url(settings.data_dir),
                                owner=False)
    try:  # a change this process has not heard of yet: the view may be behind the log
        await other.create(NewRecord(type="widget", kind="widget", state="active"))
    finally:
        await other.close()

    recorder.recording = True
    placed = await create(engine)
    recorder.recording = False
    await engine.settle()

    assert [conditions(q) for q in container_queries(recorder.queries)] == [
        {"hostId": ("eq", placed.data["hostId"]), "removed": ("null", None)}]

