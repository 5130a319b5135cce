"""Services on the fake hub: a service kept at its scale by the controller, its containers named
and labelled as Rancher's, replaced when they die, global services on every host, and the
lost timer that keeps a disconnected host's containers from being replaced too soon."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from server import operations
from server.api.errors import ValidationError
from server.engine.service_units import PRIMARY, UNIT_LABEL
from server.store import Condition, Query, Record
from shared import protocol
from tests.support.timing import seconds
from tests.unit.server.engine.harness import Engine

LAUNCH = {"imageUuid": "docker:busybox", "command": ["sleep", "1000"]}


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + seconds(timeout)
    last = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


async def stack(engine: Engine, name: str = "s1", **body: Any) -> Record:
    return await operations.create(engine.caller, "stack", {"name": name, **body})


async def service(engine: Engine, the_stack: Record, name: str = "web", **body: Any) -> Record:
    return await operations.create(engine.caller, "service", {
        "name": name, "stackId": f"1st{the_stack.id}", "launchConfig": LAUNCH,
        "startOnCreate": True, **body})


async def containers_of(engine: Engine, record: Record) -> list[Record]:
    return await engine.store.list(Query(types=["container"], project_id=engine.project.id,
                                         limit=1000, conditions=[
                                             Condition("serviceId", "eq", record.id, "int"),
                                             Condition("removed", "null")]))


def running(found: list[Record]) -> list[Record]:
    return [c for c in found if c.state == "running"]


async def at_scale(engine: Engine, record: Record, scale: int) -> list[Record]:
    async def check() -> list[Record] | None:
        found = await containers_of(engine, record)
        live = running(found)
        return live if len(live) == scale == len(found) else None

    result: list[Record] = await until(check, f"{scale} running containers")
    return result


async def test_a_service_runs_its_scale_named_and_labelled_as_rancher_s(
        engine: Engine) -> None:
    await engine.add_host()
    web = await service(engine, await stack(engine), scale=2)
    found = await at_scale(engine, web, 2)
    assert sorted(c.name or "" for c in found) == ["s1-web-1", "s1-web-2"]
    labels = found[0].data["labels"]
    assert labels["io.rancher.stack.name"] == "s1"
    assert labels["io.rancher.stack_service.name"] == "s1/web"
    assert labels["io.rancher.service.launch.config"] == PRIMARY
    assert labels[UNIT_LABEL] != found[1].data["labels"][UNIT_LABEL]
    current = await engine.get(web)
    assert current.state == "active"
    await until(lambda: _scale_shown(engine, web, 2), "currentScale 2")


async def _scale_shown(engine: Engine, record: Record, scale: int) -> bool:
    return (await engine.get(record)).data.get("currentScale") == scale


async def test_scale_changes_are_applied_up_and_down(engine: Engine) -> None:
    await engine.add_host()
    web = await service(engine, await stack(engine))
    await at_scale(engine, web, 1)
    await operations.update(engine.caller, await engine.get(web), {"scale": 5})
    await at_scale(engine, web, 5)
    await operations.update(engine.caller, await engine.get(web), {"scale": 2})
    kept = await at_scale(engine, web, 2)
    # The newest go first.
    assert sorted(c.name or "" for c in kept) == ["s1-web-1", "s1-web-2"]


async def test_a_scale_down_drains_a_container_before_it_goes(engine: Engine) -> None:
    await engine.add_host()
    web = await service(engine, await stack(engine), scale=2)
    await at_scale(engine, web, 2)
    await operations.update(engine.caller, await engine.get(web), {"scale": 1})

    async def draining() -> list[Record]:
        return [c for c in await containers_of(engine, web) if c.data.get("draining")]

    (leaving,) = await until(draining, "the surplus container to drain")
    # Out of discovery and load balancers, still running for the requests it serves.
    assert leaving.state == "running" and leaving.name == "s1-web-2"
    kept = await at_scale(engine, web, 1)
    assert [c.name for c in kept] == ["s1-web-1"]
    assert not kept[0].data.get("draining")


async def test_a_container_removed_behind_corral_s_back_is_replaced(engine: Engine) -> None:
    await engine.add_host()
    web = await service(engine, await stack(engine), scale=2)
    first, _ = await at_scale(engine, web, 2)
    await engine.store.update(first.id, {"state": "removed", "removed": 1})
    replaced = await at_scale(engine, web, 2)
    assert first.id not in {c.id for c in replaced}


async def test_a_container_that_died_is_replaced(engine: Engine) -> None:
    await engine.add_host()
    web = await service(engine, await stack(engine))
    (first,) = await at_scale(engine, web, 1)
    await engine.store.update(first.id, {"state": "stopped"})
    (second,) = await at_scale(engine, web, 1)
    assert second.id != first.id


async def test_sidekicks_run_beside_their_primary_in_one_unit(engine: Engine) -> None:
    await engine.add_host("h1")
    await engine.add_host("h2")
    web = await service(engine, await stack(engine), scale=2, secondaryLaunchConfigs=[
        {**LAUNCH, "name": "helper"}])
    found = await at_scale(engine, web, 4)
    units: dict[str, set[int]] = {}
    for container in found:
        units.setdefault(container.data["labels"][UNIT_LABEL], set()).add(
            container.data["hostId"])
    assert len(units) == 2 and all(len(hosts) == 1 for hosts in units.values())
    assert {c.name for c in found} == {"s1-web-1", "s1-web-2", "s1-web-helper-1",
                                       "s1-web-helper-2"}


async def test_a_global_service_runs_on_every_host_and_on_one_added_later(
        engine: Engine) -> None:
    h1 = await engine.add_host("h1")
    h2 = await engine.add_host("h2")
    web = await service(engine, await stack(engine), launchConfig={
        **LAUNCH, "labels": {"io.rancher.scheduler.global": "true"}})
    found = await at_scale(engine, web, 2)
    assert {c.data["hostId"] for c in found} == {h1.id, h2.id}
    h3 = await engine.add_host("h3")
    found = await at_scale(engine, web, 3)
    assert {c.data["hostId"] for c in found} == {h1.id, h2.id, h3.id}


async def test_a_disconnected_host_s_containers_wait_for_the_lost_timer(
        engine: Engine) -> None:
    h1 = await engine.add_host("h1")
    web = await service(engine, await stack(engine), scale=1)
    (first,) = await at_scale(engine, web, 1)
    await engine.add_host("h2")
    # h1 went away a moment ago: not lost yet, nothing is replaced.
    await engine.store.update(h1.id, {"state": "disconnected"}, {
        "agentState": "disconnected", "agentStateChangedAt": int(time.time() * 1000)})
    await asyncio.sleep(seconds(0.5))
    assert [c.id for c in await containers_of(engine, web)] == [first.id]
    # Away longer than the lost timer (300 s by default): replaced on the other host.
    await engine.store.update(h1.id, {}, {
        "agentStateChangedAt": int(time.time() * 1000) - 301_000})
    await engine.services.service_controller.reconcile(web.id)

    async def replaced() -> bool:
        found = await containers_of(engine, web)
        return any(c.id != first.id and c.state == "running" for c in found)

    await until(replaced, "a replacement on h2")
    # The host comes back: the service is at its scale again at once.
    await engine.store.update(h1.id, {"state": "active"}, {"agentState": "active"})
    await at_scale(engine, web, 1)


async def test_a_service_without_a_launch_config_or_with_a_bad_one_is_a_422(
        engine: Engine) -> None:
    the_stack = await stack(engine)
    with pytest.raises(ValidationError) as caught:
        await operations.create(engine.caller, "service", {
            "name": "web", "stackId": f"1st{the_stack.id}"})
    assert caught.value.field_name == "launchConfig"
    with pytest.raises(ValidationError) as caught:
        await service(engine, the_stack, launchConfig={"imageUuid": "docker:x",
                                                       "networkMode": "bogus"})
    assert caught.value.field_name == "launchConfig.networkMode"


async def test_two_services_of_one_stack_may_not_share_a_name(engine: Engine) -> None:
    the_stack = await stack(engine)
    await service(engine, the_stack, startOnCreate=False)
    with pytest.raises(ValidationError, match="already has a service named"):
        await service(engine, the_stack, startOnCreate=False)


async def test_deactivate_stops_and_remove_removes_the_containers(engine: Engine) -> None:
    await engine.add_host()
    web = await service(engine, await stack(engine), scale=2)
    await at_scale(engine, web, 2)
    await operations.act(engine.caller, await engine.get(web), "deactivate")

    async def stopped() -> bool:
        found = await containers_of(engine, web)
        return len(found) == 2 and all(c.state == "stopped" for c in found) and \
            (await engine.get(web)).state == "inactive"

    await until(stopped, "both stopped")
    await operations.remove(engine.caller, await engine.get(web))

    async def gone() -> bool:
        return not await containers_of(engine, web) and \
            (await engine.get(web)).state == "removed"

    await until(gone, "the containers removed")


async def test_a_service_s_container_found_without_its_record_is_removed_not_imported(
        engine: Engine) -> None:
    """Reconcile imports containers started outside Corral; one with a service's labels is
    Corral's own (its record lost), and importing it would make the service count it."""
    h1 = await engine.add_host()
    await engine.services.reconciler.on_inventory(h1.id, protocol.Inventory(containers=[{
        "uuid": "0b7c-lost", "dockerId": "4f2a", "name": "s1-web-7", "image": "busybox",
        "status": "running", "labels": {UNIT_LABEL: "u-1",
                                        "io.rancher.stack_service.name": "s1/web"}}]))
    await engine.hub.arrived("instance.remove")
    removed = engine.hub.calls_named("instance.remove")
    assert [c.data["uuid"] for c in removed] == ["0b7c-lost"]
    assert not await engine.store.list(Query(types=["container"], conditions=[
        Condition("name", "eq", "s1-web-7")]))


async def test_a_scale_change_holds_through_the_controller_s_own_writes(engine: Engine) -> None:
    """The controller writes currentScale and healthState on the service all the time; a PUT
    read before such a write is no conflict."""
    await engine.add_host()
    web = await service(engine, await stack(engine))
    read = await engine.get(web)
    await engine.store.update(web.id, {}, {"currentScale": 7})
    updated = await operations.update(engine.caller, read, {"scale": 3})
    assert updated.data["scale"] == 3 and updated.data["currentScale"] == 7
