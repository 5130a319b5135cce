"""The fake hub answers container instructions as the real agent's handlers do, so that the
engine's tests mean what they say about the real thing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from server.agents.liveness import AgentState
from shared.errors import ErrorCode, HostNotConnected, InstructionError
from tests.support.fake_hub import FakeHub
from tests.support.timing import seconds

HOST = 7
SPEC: dict[str, Any] = {"uuid": "c-1", "name": "web", "image": "busybox:latest",
                        "labels": {"tier": "web"},
                        "ports": [{"hostIp": "10.0.0.5", "hostPort": 8080,
                                   "containerPort": 80, "protocol": "tcp"}]}


async def send(hub: FakeHub, name: str, data: dict[str, Any]) -> dict[str, Any]:
    return await hub.call(HOST, name, "container", "1i1", data)


@pytest.fixture
def hub() -> FakeHub:
    hub = FakeHub()
    hub.connect(HOST)
    return hub


async def test_a_resent_create_returns_the_container_the_first_one_made(hub: FakeHub) -> None:
    first = await send(hub, "instance.create", {"container": SPEC})
    again = await send(hub, "instance.create", {"container": SPEC})

    assert again == first
    assert (first["uuid"], first["status"], first["name"]) == ("c-1", "created", "web")
    assert first["labels"]["io.rancher.container.uuid"] == "c-1"
    assert list(hub.containers[HOST]) == ["c-1"]


async def test_start_stop_and_restart_answer_the_container_state_summary(hub: FakeHub) -> None:
    await send(hub, "instance.create", {"container": SPEC})

    running = await send(hub, "instance.start", {"uuid": "c-1"})
    stopped = await send(hub, "instance.stop", {"uuid": "c-1", "timeout": 10})
    restarted = await send(hub, "instance.restart", {"uuid": "c-1", "timeout": 10})

    assert running["status"] == "running" and running["ports"][0]["hostPort"] == 8080
    assert running["ipAddress"] and running["startedAt"]
    assert (stopped["status"], stopped["ports"], stopped["ipAddress"]) == ("exited", [], None)
    assert restarted["status"] == "running"


async def test_remove_answers_nothing_also_when_the_container_is_gone(hub: FakeHub) -> None:
    await send(hub, "instance.create", {"container": SPEC})

    assert await send(hub, "instance.remove", {"uuid": "c-1", "removeVolumes": True}) == {}
    assert await send(hub, "instance.remove", {"uuid": "c-1", "removeVolumes": True}) == {}
    assert hub.containers[HOST] == {}


async def test_an_unknown_container_is_not_found(hub: FakeHub) -> None:
    with pytest.raises(InstructionError) as caught:
        await send(hub, "instance.start", {"uuid": "nobody"})

    assert caught.value.code is ErrorCode.NOT_FOUND


async def test_a_host_that_is_not_live_is_refused_at_once_and_recorded_so(
        hub: FakeHub) -> None:
    hub.disconnect(HOST)

    with pytest.raises(HostNotConnected):
        await send(hub, "instance.create", {"container": SPEC})

    assert (hub.calls, [c.name for c in hub.refused]) == ([], ["instance.create"])
    assert not hub.is_live(HOST) and hub.agent_state(HOST) is AgentState.DISCONNECTED
    assert hub.agent_state(HOST + 1) is None  # a host it never saw


async def test_a_failure_given_by_the_test_fails_the_next_instruction_only(
        hub: FakeHub) -> None:
    hub.fail("instance.create", InstructionError("pull failed", ErrorCode.RUNTIME_ERROR))

    with pytest.raises(InstructionError, match="pull failed"):
        await send(hub, "instance.create", {"container": SPEC})
    assert hub.containers[HOST] == {}
    assert (await send(hub, "instance.create", {"container": SPEC}))["uuid"] == "c-1"


async def test_a_held_instruction_answers_once_its_gate_opens(hub: FakeHub) -> None:
    gate = hub.hold("instance.create")
    reply = asyncio.create_task(send(hub, "instance.create", {"container": SPEC}))
    await hub.arrived("instance.create")
    assert hub.containers[HOST] == {} and not reply.done()

    gate.set()

    assert (await asyncio.wait_for(reply, seconds(5)))["uuid"] == "c-1"


async def test_a_held_instruction_fails_when_its_host_disconnects(hub: FakeHub) -> None:
    hub.hold("instance.create", acted=True)
    reply = asyncio.create_task(send(hub, "instance.create", {"container": SPEC}))
    await hub.arrived("instance.create")
    assert list(hub.containers[HOST]) == ["c-1"]  # acted: only the reply is held

    hub.disconnect(HOST)

    with pytest.raises(HostNotConnected):
        await asyncio.wait_for(reply, seconds(5))
