"""A stack upgraded from new compose files, on the engine with a fake hub: changed services
upgraded in service, new ones made, other fields set, and finishupgrade, rollback and
cancelupgrade as Rancher has them; bad files refused before anything changes."""

from __future__ import annotations

from typing import Any

import pytest

from server import operations
from server.api.errors import ApiError
from server.store import Condition, Query, Record
from tests.unit.server.engine.harness import Engine
from tests.unit.server.engine.test_services import at_scale, containers_of, running, until

COMPOSE = """\
version: '2'
services:
  web:
    image: busybox
    command: sleep 1000
    links: [db]
  db:
    image: busybox
    command: sleep 2000
"""
RANCHER = """\
version: '2'
services:
  web:
    scale: 2
    upgrade_strategy: {batch_size: 2, interval_millis: 0}
"""
# web runs a new command, scales to 3 and links to cache too; cache is new; db is as it was.
NEW_COMPOSE = """\
version: '2'
services:
  web:
    image: busybox
    command: sleep 1001
    links: [db, cache]
  db:
    image: busybox
    command: sleep 2000
  cache:
    image: busybox
    command: sleep 3000
"""
NEW_RANCHER = """\
version: '2'
services:
  web:
    scale: 3
    upgrade_strategy: {batch_size: 2, interval_millis: 0}
"""


async def made_stack(engine: Engine) -> Record:
    await engine.add_host()
    stack = await operations.create(engine.caller, "stack", {
        "name": "shop", "dockerCompose": COMPOSE, "rancherCompose": RANCHER,
        "startOnCreate": True, "environment": {"TIER": "one"}})
    await at_scale(engine, await by_name(engine, stack, "web"), 2)
    await at_scale(engine, await by_name(engine, stack, "db"), 1)
    return stack


async def by_name(engine: Engine, stack: Record, name: str) -> Record:
    found = await engine.store.list(Query(
        types=["service"], project_id=engine.project.id, limit=2,
        conditions=[Condition("stackId", "eq", stack.id, "int"), Condition("name", "eq", name),
                    Condition("removed", "null")]))
    assert len(found) == 1, f"{len(found)} services named {name}"
    return found[0]


async def in_state(engine: Engine, record: Record, state: str, timeout: float = 30) -> Record:
    async def check() -> Record | None:
        current = await engine.get(record)
        assert current.transitioning != "error", current.transitioning_message
        return current if current.state == state else None

    found: Record = await until(check, f"{record.type} {record.name} {state}", timeout)
    return found


async def upgraded(engine: Engine, stack: Record, **body: Any) -> Record:
    await engine.act(stack, "upgrade", {"dockerCompose": NEW_COMPOSE,
                                        "rancherCompose": NEW_RANCHER, **body})
    return await in_state(engine, stack, "upgraded")


def command(record: Record) -> Any:
    """A service's launch config's command, or a container's."""
    return (record.data["launchConfig"] if record.type == "service" else record.data)["command"]


async def test_an_upgrade_upgrades_changed_services_and_makes_new_ones(engine: Engine) -> None:
    stack = await made_stack(engine)
    db_before = {c.id for c in await containers_of(engine, await by_name(engine, stack, "db"))}
    stack = await upgraded(engine, stack, environment={"TIER": "two"})

    assert stack.data["dockerCompose"] == NEW_COMPOSE
    assert stack.data["environment"] == {"TIER": "two"}
    assert stack.data["previousEnvironment"] == {"TIER": "one"}
    web = await by_name(engine, stack, "web")
    assert web.state == "upgraded"
    assert command(web) == ["sleep", "1001"]
    assert web.data["scale"] == 3
    cache = await by_name(engine, stack, "cache")
    assert set(web.data["linkedServices"]) == {"db", "cache"}
    assert web.data["linkedServices"]["cache"] == cache.id
    await in_state(engine, cache, "active")
    await at_scale(engine, cache, 1)
    # db did not change: same state, same containers.
    db = await by_name(engine, stack, "db")
    assert db.state == "active"
    assert {c.id for c in await containers_of(engine, db)} == db_before

    # web's new containers run the new command; the old ones are kept, stopped.
    async def new_web_running() -> list[Record] | None:
        found = await containers_of(engine, web)
        new = [c for c in running(found) if command(c) == ["sleep", "1001"]]
        return new if len(new) == 3 else None

    await until(new_web_running, "three web containers of the new launch config")
    old = [c for c in await containers_of(engine, web) if command(c) == ["sleep", "1000"]]
    assert [c.state for c in old] == ["stopped", "stopped"]

    await engine.act(stack, "finishupgrade")
    stack = await in_state(engine, stack, "active")
    assert stack.data.get("previousEnvironment") is None
    web = await in_state(engine, web, "active")
    await at_scale(engine, web, 3)
    assert all(command(c) == ["sleep", "1001"] for c in await containers_of(engine, web))


async def test_a_rollback_undoes_the_upgrade(engine: Engine) -> None:
    stack = await made_stack(engine)
    stack = await upgraded(engine, stack)
    cache = await by_name(engine, stack, "cache")

    await engine.act(stack, "rollback")
    stack = await in_state(engine, stack, "active")
    assert stack.data["dockerCompose"] == COMPOSE
    assert stack.data["rancherCompose"] == RANCHER
    web = await in_state(engine, await by_name(engine, stack, "web"), "active")
    assert command(web) == ["sleep", "1000"]
    assert web.data["scale"] == 2
    assert set(web.data["linkedServices"]) == {"db"}
    assert (await engine.get(cache)).state in ("removing", "removed")
    kept = await at_scale(engine, web, 2)
    assert all(command(c) == ["sleep", "1000"] for c in kept)
    # The files are the old ones again: exporting gives them back.
    exported = await operations.act(engine.caller, stack, "exportconfig", {})
    assert isinstance(exported, dict)
    assert "cache" not in exported["dockerComposeConfig"]


async def test_an_upgrade_canceled_midway_can_be_rolled_back(engine: Engine) -> None:
    stack = await made_stack(engine)
    # One unit a batch, a minute apart: the upgrade is under way when it is canceled.
    slow = NEW_RANCHER.replace("batch_size: 2, interval_millis: 0",
                               "batch_size: 1, interval_millis: 60000")
    await engine.act(stack, "upgrade", {"dockerCompose": NEW_COMPOSE, "rancherCompose": slow})
    web = await in_state(engine, await by_name(engine, stack, "web"), "upgrading")
    await engine.act(stack, "cancelupgrade")
    await in_state(engine, stack, "canceled-upgrade")
    await in_state(engine, web, "canceled-upgrade")

    await engine.act(stack, "rollback")
    await in_state(engine, stack, "active")
    web = await in_state(engine, web, "active")
    assert command(web) == ["sleep", "1000"]
    kept = await at_scale(engine, web, 2)
    assert all(command(c) == ["sleep", "1000"] for c in kept)


async def test_an_upgrade_that_changes_nothing_ends_upgraded_at_once(engine: Engine) -> None:
    stack = await made_stack(engine)
    await engine.act(stack, "upgrade", {})  # the same files
    stack = await in_state(engine, stack, "upgraded")
    assert (await by_name(engine, stack, "web")).state == "active"
    await engine.act(stack, "finishupgrade")
    await in_state(engine, stack, "active")


@pytest.mark.parametrize("body, field, words", [
    ({"dockerCompose": "services:\n  web: [\n"}, "dockerCompose", "line"),
    ({"dockerCompose": COMPOSE.replace("links: [db]", "links: [nowhere]")}, "dockerCompose",
     "no service nowhere"),
    ({"dockerCompose": COMPOSE.replace("image: busybox\n    command: sleep 2000",
                                       "image: rancher/dns-service")},
     "dockerCompose", "remove it first"),
])
async def test_bad_files_are_a_422_and_change_nothing(engine: Engine, body: dict[str, Any],
                                                      field: str, words: str) -> None:
    stack = await made_stack(engine)
    with pytest.raises(ApiError) as caught:
        await engine.act(stack, "upgrade", body)
    assert caught.value.status == 422
    assert caught.value.field_name == field
    assert words in (caught.value.message or ""), caught.value.message
    current = await engine.get(stack)
    assert current.state == "active"
    assert current.data["dockerCompose"] == COMPOSE


async def test_an_upgraded_stack_takes_no_second_upgrade(engine: Engine) -> None:
    stack = await upgraded(engine, await made_stack(engine))
    with pytest.raises(ApiError) as caught:
        await engine.act(stack, "upgrade", {})
    assert caught.value.code == "ActionNotAvailable"


async def test_a_stack_put_is_no_conflict_after_corral_wrote_the_stack(engine: Engine) -> None:
    stack = await operations.create(engine.caller, "stack", {"name": "quiet"})
    await engine.store.update(stack.id, {}, {"healthState": "healthy"})  # the controller
    renamed = await operations.update(engine.caller, stack, {"description": "the shop"})
    assert renamed.description == "the shop"
    assert renamed.data["healthState"] == "healthy"


async def test_a_stack_renamed_to_a_taken_name_is_a_422(engine: Engine) -> None:
    await operations.create(engine.caller, "stack", {"name": "one"})
    two = await operations.create(engine.caller, "stack", {"name": "two"})
    with pytest.raises(ApiError) as caught:
        await operations.update(engine.caller, two, {"name": "one"})
    assert (caught.value.status, caught.value.field_name) == (422, "name")
