"""The container rules of ``ContainerType``: a step needs its host's agent, except a remove,
which is recorded at once when the host is away; actions only in the states the table allows;
a new container only where a host can take it."""

from __future__ import annotations

import pytest

from server import operations
from server.api.errors import Unavailable, ValidationError
from tests.unit.server.engine.harness import SLEEPER, Engine


async def test_removing_a_created_container_whose_host_is_away_is_recorded_at_once(
        engine: Engine) -> None:
    host = await engine.add_host()
    container = await engine.container()
    assert container.state == "stopped" and container.data["externalId"]
    engine.hub.disconnect(host.id)
    sent = len(engine.hub.calls)

    removed = await operations.remove(engine.caller, container)
    await engine.settle()

    assert (removed.state, removed.transitioning) == ("removed", "no")
    assert (await engine.get(container)).removed is not None
    assert engine.hub.calls[sent:] == []
    assert engine.hub.refused == []  # not even tried: the host removes it when it returns


async def test_stopping_a_container_whose_host_is_away_is_a_503_host_not_connected(
        engine: Engine) -> None:
    host = await engine.add_host()
    container = await engine.act(await engine.container(), "start")
    await engine.settle()
    container = await engine.get(container)
    assert container.state == "running"
    engine.hub.disconnect(host.id)

    with pytest.raises(Unavailable) as caught:
        await operations.act(engine.caller, container, "stop")

    assert (caught.value.status, caught.value.code) == (503, "HostNotConnected")
    assert (await engine.get(container)).state == "running"
    assert engine.hub.calls_named("instance.stop") == []
    assert engine.hub.refused == []


async def test_an_action_the_current_state_does_not_allow_is_a_422_action_not_available(
        engine: Engine) -> None:
    await engine.add_host()
    container = await engine.container()
    assert container.state == "stopped"

    with pytest.raises(ValidationError) as caught:
        await operations.act(engine.caller, container, "stop")

    assert (caught.value.status, caught.value.code) == (422, "ActionNotAvailable")
    assert (await engine.get(container)).state == "stopped"


async def test_creating_a_container_with_no_host_is_a_422_no_host_available(
        engine: Engine) -> None:
    with pytest.raises(ValidationError) as caught:
        await operations.create(engine.caller, "container", SLEEPER)

    assert (caught.value.status, caught.value.code) == (422, "NoHostAvailable")


async def test_creating_a_container_when_the_only_host_is_away_is_a_422_no_host_available(
        engine: Engine) -> None:
    await engine.add_host(live=False)

    with pytest.raises(ValidationError) as caught:
        await operations.create(engine.caller, "container", SLEEPER)

    assert (caught.value.status, caught.value.code) == (422, "NoHostAvailable")
    assert engine.hub.calls == []
