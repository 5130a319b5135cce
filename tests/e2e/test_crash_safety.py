"""A server killed (SIGKILL) in the middle of concurrent writes loses no acknowledged write,
shows nothing half-written after it restarts, and its change stream resumes where a client
left it, with every change exactly once.

The writes are REST calls of mixed types (create, update, actions) made by several workers at
once. Each resource is written only by the worker that created it, so its writes have an
order: the store must hold each field's last acknowledged value, or the value of the worker's
final write if that one was cut off by the kill and landed anyway (an unacknowledged write
may or may not be stored; both are fine).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from sqlalchemy.engine import make_url

from server.store.urls import SQLITE_FILE
from tests.conftest import ADMIN
from tests.support import databases
from tests.support.databases import SQLITE, backends, postgres_base
from tests.support.processes import ServerProcess, free_port
from tests.support.timing import seconds

pytestmark = pytest.mark.integration

WRITES = 500  # acknowledged writes, then the kill
WORKERS = 12
# Bounds the traffic should the kill never come (then the test fails: too few acks).
ATTEMPTS_PER_WORKER = 3 * WRITES // WORKERS
WARMUP = 4  # changes the first subscriber reads before it goes away
MAX_EVENTS = 10 * WRITES  # bounds every read of the stream
COLLECTIONS = {"project": "projects", "apiKey": "apikeys",
               "registrationToken": "registrationtokens", "account": "accounts"}
TOGGLED = ("apiKey", "registrationToken")  # the types whose actions the workers call
ACTIONS = {"deactivate": "inactive", "activate": "active"}  # action -> state it leaves
COMPARED = ("state", "name", "description")
Event = dict[str, Any]


@dataclass
class Write:
    """One REST write: the fields it set, and whether the server acknowledged it (a 2xx
    response read in full)."""

    op: str  # "create", "update" or the action's name
    values: dict[str, str]
    acknowledged: bool = False


@dataclass
class Resource:
    """A resource a worker created (acknowledged), with its writes in the order made."""

    type: str
    id: str
    writes: list[Write] = field(default_factory=list)

    def allowed(self, name: str) -> set[str]:
        """Values the store may hold for field ``name``: the last acknowledged one, or that
        of a later write that was cut off."""
        found: set[str] = set()
        for write in reversed(self.writes):
            if name in write.values:
                found.add(write.values[name])
                if write.acknowledged:
                    break
        if name == "state" and "registering" in found:
            found.add("active")  # the runner activates what was created registering
        return found

    def state(self) -> str:
        return next(w.values["state"] for w in reversed(self.writes) if "state" in w.values)

    @property
    def path(self) -> str:
        return f"/{COLLECTIONS[self.type]}/{self.id}"


@dataclass
class Ledger:
    """What the workers wrote and what the server answered; kills the server at the
    ``WRITES``-th acknowledgement."""

    server: ServerProcess
    resources: dict[str, Resource] = field(default_factory=dict)
    acknowledged: int = 0
    cut_off: int = 0  # requests that got no complete answer
    refused: list[str] = field(default_factory=list)  # answers other than 2xx
    misshown: list[str] = field(default_factory=list)  # 2xx answers not showing the write

    def acknowledge(self) -> None:
        self.acknowledged += 1
        if self.acknowledged == WRITES:
            self.server.kill()


@dataclass
class Planned:
    """A write about to be sent; ``resource`` is None for a create."""

    type: str
    resource: Resource | None
    method: str
    path: str
    write: Write
    body: dict[str, str]


def plan(rng: random.Random, owned: list[Resource], tag: str) -> Planned:
    """A worker's next write: a create of any type, an update of the name or description, or
    an action on one of its own resources. Every value written is unique to this write."""
    if not owned or rng.random() < 0.35:
        rtype = rng.choice(list(COLLECTIONS))
        values = {"name": f"{tag}-name", "description": f"{tag}-description"}
        # As in Rancher, accounts and credentials are created registering (then active).
        state = "active" if rtype == "project" else "registering"
        return Planned(rtype, None, "POST", f"/{COLLECTIONS[rtype]}",
                       Write("create", {**values, "state": state}), values)
    resource = rng.choice(owned)
    if resource.type in TOGGLED and rng.random() < 0.3:
        action = "activate" if resource.state() == "inactive" else "deactivate"
        return Planned(resource.type, resource, "POST", f"{resource.path}?action={action}",
                       Write(action, {"state": ACTIONS[action]}), {})
    names = rng.choice((("name",), ("description",), ("name", "description")))
    values = {name: f"{tag}-{name}" for name in names}
    return Planned(resource.type, resource, "PUT", resource.path, Write("update", values),
                   values)


async def write_until_killed(worker: int, session: aiohttp.ClientSession,
                             ledger: Ledger) -> None:
    """Write, one request at a time, until a request goes unanswered (the kill)."""
    rng = random.Random(worker)
    owned: list[Resource] = []
    for attempt in range(ATTEMPTS_PER_WORKER):
        planned = plan(rng, owned, f"w{worker}-{attempt}")
        write, resource = planned.write, planned.resource
        if resource is not None:
            resource.writes.append(write)
        request = f"{planned.method} {planned.path}"
        try:
            async with session.request(planned.method, ledger.server.url + planned.path,
                                       json=planned.body) as resp:
                if resp.status >= 300:
                    refusal = await resp.text()
                    ledger.refused.append(f"{request}: {resp.status} {refusal[:300]}")
                    return
                answer: dict[str, Any] = await resp.json()
        except (aiohttp.ClientError, TimeoutError):  # the server died before answering
            ledger.cut_off += 1
            return
        write.acknowledged = True
        if resource is None:
            resource = Resource(planned.type, str(answer["id"]), [write])
            owned.append(resource)
            ledger.resources[resource.id] = resource
        shown = {name: answer.get(name) for name in write.values}
        if shown != write.values:
            ledger.misshown.append(f"{request} wrote {write.values}, answer {shown}")
        ledger.acknowledge()


async def read_events(ws: aiohttp.ClientWebSocketResponse,
                      done: Callable[[list[Event]], bool]) -> list[Event]:
    """Change events from ``ws`` until ``done`` says so (bounded in count and time)."""
    events: list[Event] = []
    deadline = time.monotonic() + seconds(30)
    while not done(events):
        assert len(events) < MAX_EVENTS, f"no end after {len(events)} events"
        assert time.monotonic() < deadline, f"no end after {seconds(30):g} s of events"
        try:
            msg = await ws.receive(timeout=seconds(10))
        except TimeoutError:
            raise AssertionError(f"the stream went quiet after {len(events)} events") from None
        assert msg.type is aiohttp.WSMsgType.TEXT, f"the stream ended: {msg.type} {msg.data}"
        event = json.loads(msg.data)
        assert event["name"] == "resource.change", event
        events.append(event)
    return events


async def logged_sequences(backend: str, db_url: str | None, data_dir: Path, after: int,
                           through: int) -> list[int]:
    """Sequence numbers of the change log's entries for our resource types, read from the
    database itself: what the stream must have sent, each once."""
    types = sorted(COLLECTIONS)

    def query(mark: Callable[[int], str]) -> str:
        listed = ", ".join(mark(n) for n in range(3, 3 + len(types)))
        return (f"SELECT seq FROM change_log WHERE seq > {mark(1)} AND seq <= {mark(2)} "
                f"AND resource_type IN ({listed}) ORDER BY seq")

    if backend == SQLITE:
        with contextlib.closing(sqlite3.connect(data_dir / SQLITE_FILE)) as db:
            rows = db.execute(query(lambda _: "?"), (after, through, *types)).fetchall()
        return [int(row[0]) for row in rows]
    base = postgres_base()
    assert base is not None and db_url is not None
    schema = str(make_url(db_url).query["schema"])
    conn = await asyncpg.connect(base, server_settings={"search_path": schema})
    try:
        records = await conn.fetch(query(lambda n: f"${n}"), after, through, *types)
    finally:
        await conn.close()
    return [int(record["seq"]) for record in records]


def unmatched(resource: Resource, events: list[Event]) -> list[Write]:
    """Acknowledged writes of ``resource`` with no change event of their own, in order: its
    events (oldest first) must show each write, one event per write."""
    shown = [e["data"]["resource"] for e in events]
    missing: list[Write] = []
    position = 0
    for write in resource.writes:
        match = next((i for i in range(position, len(shown))
                      if all(shown[i].get(k) == v for k, v in write.values.items())), None)
        if match is not None:
            position = match + 1
        elif write.acknowledged:
            missing.append(write)
    return missing


async def first_changes(server: ServerProcess, session: aiohttp.ClientSession) -> int:
    """Subscribe, write a few changes, read them, leave: the last sequence number seen."""
    async with session.ws_connect(f"{server.url}/subscribe?eventNames=resource.change") as ws:
        for n in range(WARMUP):
            async with session.post(f"{server.url}/projects",
                                    json={"name": f"warmup-{n}"}) as resp:
                assert resp.status == 201, await resp.text()
        events = await read_events(ws, lambda seen: len(seen) >= WARMUP)
    return int(events[-1]["sequence"])


async def crash_during_writes(session: aiohttp.ClientSession, ledger: Ledger) -> None:
    workers = [write_until_killed(n, session, ledger) for n in range(WORKERS)]
    await asyncio.wait_for(asyncio.gather(*workers), seconds(60))
    ledger.server.kill()  # already dead, unless too few writes were acknowledged
    assert ledger.acknowledged >= WRITES, f"only {ledger.acknowledged} writes acknowledged"
    assert not ledger.refused, f"writes refused before the kill: {ledger.refused[:5]}"
    assert not ledger.misshown, f"answers not showing their write: {ledger.misshown[:5]}"
    assert ledger.cut_off > 0, "the kill cut off no write in flight"


async def current(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url) as resp:
        assert resp.status == 200, f"GET {url}: {resp.status} {await resp.text()}"
        return dict(await resp.json())


@pytest.mark.parametrize("backend", backends())
async def test_a_killed_server_keeps_every_acknowledged_write_and_resumes_its_change_stream(
        backend: str, tmp_path: Path) -> None:
    async with databases.test_database(backend) as db_url:
        server = ServerProcess(data_dir=tmp_path / "data", port=free_port(),
                               database_url=db_url)
        await asyncio.to_thread(server.start)
        try:
            async with aiohttp.ClientSession(
                    headers=ADMIN, timeout=aiohttp.ClientTimeout(total=seconds(10)),
                    connector=aiohttp.TCPConnector(limit=WORKERS + 4)) as session:
                since = await first_changes(server, session)
                ledger = Ledger(server)
                await crash_during_writes(session, ledger)
                await asyncio.to_thread(server.restart_after_kill)
                await check_after_restart(backend, db_url, server, session, ledger, since)
        finally:
            await asyncio.to_thread(server.stop)


async def check_after_restart(backend: str, db_url: str | None, server: ServerProcess,
                              session: aiohttp.ClientSession, ledger: Ledger,
                              since: int) -> None:
    # (a) every acknowledged write is stored, or overwritten by a later write of its own.
    stored = dict(zip(ledger.resources, await asyncio.gather(*(
        current(session, server.url + r.path) for r in ledger.resources.values())),
                      strict=True))
    lost = [(r.id, name, stored[r.id][name], r.allowed(name))
            for r in ledger.resources.values() for name in COMPARED
            if stored[r.id][name] not in r.allowed(name)]
    assert not lost, f"{len(lost)} fields lost their acknowledged value, e.g. {lost[:5]}"

    # (c) resuming after ``since``: every change after it once, in order, up to a new one.
    marker = f"after-restart-{uuid.uuid4().hex[:8]}"
    async with session.ws_connect(f"{server.url}/subscribe?eventNames=resource.change"
                                  f"&since={since}") as ws:
        async with session.post(f"{server.url}/projects", json={"name": marker}) as resp:
            assert resp.status == 201, await resp.text()
            marker_id = (await resp.json())["id"]
        events = await read_events(
            ws, lambda seen: bool(seen) and seen[-1]["resourceId"] == marker_id)
    sequences = [int(e["sequence"]) for e in events]
    assert sequences[0] > since, f"resumed at {sequences[0]}, not after {since}"
    assert all(a < b for a, b in itertools.pairwise(sequences)), \
        "the resumed stream repeats or reorders changes"
    ours = [e for e in events if e["resourceType"] in COLLECTIONS]
    logged = await logged_sequences(backend, db_url, server.data_dir, since, sequences[-1])
    sent = [int(e["sequence"]) for e in ours]
    assert sent == logged, (f"the stream sent {len(sent)} changes, the log holds "
                            f"{len(logged)}; missing {sorted(set(logged) - set(sent))[:10]}")
    by_resource: dict[str, list[Event]] = {}
    for event in ours:
        by_resource.setdefault(str(event["resourceId"]), []).append(event)
    unshown = [(r.id, w.op, w.values) for r in ledger.resources.values()
               for w in unmatched(r, by_resource.get(r.id, []))]
    assert not unshown, f"{len(unshown)} acknowledged writes have no change, e.g. {unshown[:5]}"

    # (b) the change log agrees with the store: each resource's latest change shows what GET
    # does now (this includes resources whose creation was cut off but landed).
    for resource_id in by_resource.keys() - stored.keys():
        rtype = by_resource[resource_id][-1]["resourceType"]
        stored[resource_id] = await current(
            session, f"{server.url}/{COLLECTIONS[rtype]}/{resource_id}")
    disagree = [(rid, {k: evs[-1]["data"]["resource"][k] for k in COMPARED},
                 {k: stored[rid][k] for k in COMPARED})
                for rid, evs in by_resource.items()
                if any(evs[-1]["data"]["resource"][k] != stored[rid][k] for k in COMPARED)]
    assert not disagree, f"latest change differs from the store: {disagree[:5]}"
