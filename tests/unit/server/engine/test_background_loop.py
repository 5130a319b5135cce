"""The acceptance test of domain operations without a request: a background loop (a test one)
creates, starts and removes containers, and the change log names the system as the actor."""

from __future__ import annotations

import asyncio
from itertools import groupby

from server import operations
from server.caller import Caller
from server.services import Services
from server.store import Actor, ActorKind, Change, Record, Store
from tests.support.timing import seconds
from tests.unit.server.engine.harness import SLEEPER, Engine

LIFE = ["requested", "creating", "stopped", "starting", "running", "stopping", "stopped",
        "removing", "removed"]


async def changes_since(store: Store, seq: int) -> list[Change]:
    out: list[Change] = []
    while batch := await store.changes_after(seq, 500):
        out.extend(batch)
        seq = batch[-1].seq
    return out


async def settled(services: Services, records: list[Record], state: str) -> list[Record]:
    """The records once the runner is idle, each checked to be in ``state``."""
    await services.runner.idle()
    now = [await services.store.get(r.id) for r in records]
    assert [(r.state, r.transitioning) if r else None for r in now] == \
        [(state, "no")] * len(records)
    return [r for r in now if r is not None]


async def container_loop(services: Services, project: Record, count: int) -> list[Record]:
    """What a background loop of the server would do, with no request: make containers, run
    them, then take them away again, through the domain operations only."""
    caller = Caller.system(services, project)
    made = [await operations.create(caller, "container", SLEEPER) for _ in range(count)]
    stopped = await settled(services, made, "stopped")
    for record in stopped:
        await operations.act(caller, record, "start")
    running = await settled(services, made, "running")
    for record in running:
        await operations.act(caller, record, "stop")
    stopped = await settled(services, made, "stopped")
    for record in stopped:
        await operations.remove(caller, record)
    return await settled(services, made, "removed")


async def test_a_background_loop_runs_containers_and_the_change_log_names_the_system(
        engine: Engine) -> None:
    host = await engine.add_host()
    before = await engine.store.last_seq()

    loop = asyncio.create_task(container_loop(engine.services, engine.project, 3))
    removed = await asyncio.wait_for(loop, seconds(10))

    for record in removed:
        assert engine.hub.calls_about(record.uuid) == [
            "instance.create", "instance.start", "instance.stop", "instance.remove"]
    assert {c.host_id for c in engine.hub.calls} == {host.id}
    assert engine.hub.containers[host.id] == {}
    ids = {r.id for r in removed}
    logged = [c for c in await changes_since(engine.store, before) if c.record.id in ids]
    assert {c.actor for c in logged} == {"system"}
    for record in removed:
        states = [c.record.state for c in logged if c.record.id == record.id]
        assert [state for state, _ in groupby(states)] == LIFE


async def test_a_change_made_with_an_api_key_is_logged_as_that_key_and_the_runner_as_system(
        engine: Engine) -> None:
    await engine.add_host()
    before = await engine.store.last_seq()
    caller = Caller(engine.services, Actor(ActorKind.API_KEY, "1c99"), project=engine.project)

    record = await operations.create(caller, "container", SLEEPER)
    await engine.settle()

    logged = [(c.kind, c.record.state, c.actor)
              for c in await changes_since(engine.store, before) if c.record.id == record.id]
    assert logged == [("create", "requested", "apiKey:1c99"), ("update", "creating", "system"),
                      ("update", "stopped", "system")]
