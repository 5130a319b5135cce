"""The runner: one operation at a time per resource, claimed in the store, resumed from the
recorded state after a restart or when a host returns, and the newest step wins."""

from __future__ import annotations

import pytest

from server import operations
from server.config import Settings
from server.engine import instances
from server.resources.containers import CONTAINER_LIFECYCLE
from shared.errors import ErrorCode, InstructionError
from tests.support.fake_hub import FakeHub
from tests.unit.server.engine.harness import SLEEPER, Engine, engine_running

CLAIM_MS = 60_000


async def test_an_operation_submitted_three_times_runs_once(engine: Engine) -> None:
    await engine.add_host()
    container = await engine.container()
    gate = engine.hub.hold("instance.start")

    await engine.act(container, "start")  # submits once
    engine.services.runner.submit(container.id)
    engine.services.runner.submit(container.id)
    await engine.hub.arrived("instance.start")
    gate.set()
    await engine.settle()

    assert (await engine.get(container)).state == "running"
    assert len(engine.hub.calls_named("instance.start")) == 1


async def test_each_entry_into_a_transitional_state_runs_its_operation_once(
        engine: Engine) -> None:
    await engine.add_host()
    container = await engine.container()

    for _ in range(2):
        await engine.act(container, "start")
        engine.services.runner.submit(container.id)
        await engine.settle()
        await engine.act(container, "stop")
        engine.services.runner.submit(container.id)
        await engine.settle()

    assert engine.hub.calls_about(container.uuid) == [
        "instance.create", "instance.start", "instance.stop", "instance.start", "instance.stop"]
    assert (await engine.get(container)).state == "stopped"


async def test_an_operation_under_way_when_the_services_stop_is_resumed_when_they_start_again(
        settings: Settings, hub: FakeHub) -> None:
    async with engine_running(settings, hub) as engine:
        host = await engine.add_host()
        # The agent creates the container, but its reply is lost with the server.
        gate = hub.hold("instance.create", acted=True)
        record = await operations.create(engine.caller, "container", SLEEPER)
        await hub.arrived("instance.create")
        left = await engine.get(record)
        assert (left.state, left.transitioning) == ("creating", "yes")
    gate.set()

    async with engine_running(settings, hub) as engine:
        await engine.settle()
        after = await engine.get(record)

    assert (hub.started, hub.stopped) == (2, 2)  # the services really stopped and started
    assert (after.state, after.transitioning) == ("stopped", "no")
    assert after.data["externalId"] == hub.containers[host.id][record.uuid].docker_id
    assert len(hub.calls_named("instance.create")) == 2
    assert list(hub.containers[host.id]) == [record.uuid]  # the re-sent create made no other


async def test_a_claim_another_server_holds_keeps_this_runner_from_the_operation(
        engine: Engine) -> None:
    await engine.add_host()
    container = await engine.container()
    assert await engine.store.claim(container.id, "other-server", "start", CLAIM_MS)

    await engine.act(container, "start")
    await engine.settle()

    waiting = await engine.get(container)
    assert (waiting.state, waiting.transitioning) == ("starting", "yes")
    assert engine.hub.calls_named("instance.start") == []

    await engine.store.release(container.id, "other-server")
    await engine.services.runner.resume()
    await engine.settle()
    assert (await engine.get(container)).state == "running"


async def test_an_expired_claim_of_another_server_does_not_stop_the_runner(
        engine: Engine) -> None:
    await engine.add_host()
    container = await engine.container()
    assert await engine.store.claim(container.id, "other-server", "start", -CLAIM_MS)

    await engine.act(container, "start")
    await engine.settle()

    assert (await engine.get(container)).state == "running"
    assert len(engine.hub.calls_named("instance.start")) == 1


async def test_a_failed_create_leaves_the_error_state_with_the_agent_message(
        engine: Engine) -> None:
    await engine.add_host()
    message = "pull access denied for busybox"
    engine.hub.fail("instance.create", InstructionError(message, ErrorCode.RUNTIME_ERROR))

    failed = await engine.container()

    assert (failed.state, failed.transitioning, failed.transitioning_message) == (
        "error", "error", message)


async def test_a_failed_start_leaves_the_container_stopped_and_can_be_asked_again(
        engine: Engine) -> None:
    await engine.add_host()
    container = await engine.container()
    message = "container exited: no such file: sleep"
    engine.hub.fail("instance.start", InstructionError(message, ErrorCode.RUNTIME_ERROR))

    await engine.act(container, "start")
    await engine.settle()
    failed = await engine.get(container)
    assert (failed.state, failed.transitioning, failed.transitioning_message) == (
        "stopped", "error", message)

    await engine.act(failed, "start")
    await engine.settle()
    again = await engine.get(container)
    assert (again.state, again.transitioning, again.transitioning_message) == (
        "running", "no", None)


async def test_an_operation_whose_host_goes_away_waits_and_completes_when_it_returns(
        engine: Engine) -> None:
    host = await engine.add_host()
    gate = engine.hub.hold("instance.create")
    record = await operations.create(engine.caller, "container", SLEEPER)
    await engine.hub.arrived("instance.create")

    engine.hub.disconnect(host.id)  # the held instruction fails as a closed session's does
    await engine.settle()
    waiting = await engine.get(record)
    assert (waiting.state, waiting.transitioning) == ("creating", "yes")
    assert (waiting.transitioning_message or "").startswith("waiting for the host")

    engine.hub.connect(host.id)
    gate.set()
    await engine.services.runner.resume(host.id)
    await engine.settle()

    done = await engine.get(record)
    assert (done.state, done.transitioning, done.transitioning_message) == (
        "stopped", "no", None)
    assert list(engine.hub.containers[host.id]) == [record.uuid]


async def test_a_stop_asked_while_a_start_is_under_way_runs_after_it_and_wins(
        engine: Engine) -> None:
    host = await engine.add_host()
    container = await engine.container()
    gate = engine.hub.hold("instance.start")
    await engine.act(container, "start")
    await engine.hub.arrived("instance.start")

    stopping = await engine.act(container, "stop")
    assert stopping.state == "stopping"
    gate.set()
    await engine.settle()

    final = await engine.get(container)
    assert (final.state, final.transitioning) == ("stopped", "no")
    assert engine.hub.calls_about(container.uuid) == [
        "instance.create", "instance.start", "instance.stop"]
    assert engine.hub.containers[host.id][container.uuid].status == "exited"


async def test_a_container_created_to_start_on_create_is_running_when_its_create_ends(
        engine: Engine) -> None:
    await engine.add_host()

    created = await engine.container(startOnCreate=True)

    assert engine.hub.calls_about(created.uuid) == ["instance.create", "instance.start"]
    assert (created.state, created.transitioning) == ("running", "no")


async def test_the_runner_refuses_an_operation_table_that_does_not_match_the_lifecycle(
        engine: Engine) -> None:
    with pytest.raises(ValueError, match="do not match"):
        engine.services.runner.register("container", CONTAINER_LIFECYCLE,
                                        {"start": instances.start})
