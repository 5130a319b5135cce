"""``network.apply`` through the real dispatcher and handler table, and ``instance.create`` of a
container on the managed network waiting for that network (FakeHost, FakeRuntime)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent.dispatcher import Dispatcher
from agent.facts import FactsSource
from agent.handlers import HANDLERS, instances
from agent.network.manager import NetworkManager
from agent.network.overlay import Overlay
from shared import protocol
from shared.instructions import parse_reply
from shared.overlay import NetworkApplied
from tests.support.timing import seconds
from tests.unit.agent.fakes import FakeRuntime, blank_spec
from tests.unit.agent.test_overlay_plan import FRESH_PLAN, FakeHost

WAIT = seconds(5)  # reached only when something is broken
UUID = "0b7c5f3e-1d2a-4c6b-9e8f-a1b2c3d4e5f6"
APPLY: dict[str, Any] = {
    "subnet": "10.42.1.0/24", "underlayIp": "10.99.0.1", "pool": "10.42.0.0/16", "vni": 42,
    "port": 4789, "mtu": 1450, "version": "v7",
    "peers": [{"subnet": "10.42.2.0/24", "underlayIp": "10.99.0.2"},
              {"subnet": "10.42.3.0/24", "underlayIp": "10.99.0.3"}],
    "policy": {"defaultAction": "allow", "entries": []}}


class Agent:
    """The real handler table and dispatcher, with a NetworkManager on a FakeHost."""

    def __init__(self, *, network: bool = True) -> None:
        self.runtime = FakeRuntime()
        self.host = FakeHost()
        self.network = NetworkManager(Overlay(self.host))
        self.dispatcher = Dispatcher(HANDLERS, self.runtime, FactsSource(self.runtime, {}, None),
                                     network=self.network if network else None)
        self.count = 0

    async def call(self, name: str, data: dict[str, Any], resource: str = "1h1"
                   ) -> protocol.Reply:
        self.count += 1
        sent: list[protocol.AgentMessage] = []

        async def send(message: protocol.AgentMessage) -> None:
            sent.append(message)

        await self.dispatcher.handle(protocol.Request(
            id=f"r-{self.count}", name=name, resource_type="host", resource_id=resource,
            data=data, timeout_ms=int(WAIT * 1000)), send)
        replies = [m for m in sent if isinstance(m, protocol.Reply)]
        assert len(replies) == 1
        protocol.parse(protocol.dump(replies[0]))  # fits the wire
        return replies[0]


def create_data(**spec: Any) -> dict[str, Any]:
    return {"container": blank_spec(uuid=UUID, image="corral-test/busybox:latest", **spec)}


async def test_network_apply_programs_the_host_and_answers_version_and_changes() -> None:
    agent = Agent()
    reply = await agent.call("network.apply", APPLY)
    assert reply.error is None
    assert parse_reply("network.apply", reply.data) == NetworkApplied("v7", len(FRESH_PLAN))
    assert agent.host.ran == FRESH_PLAN
    again = await agent.call("network.apply", APPLY)
    assert again.data == {"version": "v7", "changes": 0}


async def test_a_malformed_or_impossible_payload_is_invalid_data() -> None:
    agent = Agent()
    missing = await agent.call("network.apply", {k: v for k, v in APPLY.items()
                                                 if k != "subnet"})
    assert missing.error is not None and missing.error.code == "invalidData"
    wrong = await agent.call("network.apply", {**APPLY, "subnet": "10.43.1.0/24"})
    assert wrong.error is not None and wrong.error.code == "invalidData"
    assert "is not a subnet of the pool 10.42.0.0/16" in wrong.error.message
    assert agent.host.ran == []


async def test_an_agent_without_a_network_says_so() -> None:
    reply = await Agent(network=False).call("network.apply", APPLY)
    assert reply.error is not None and reply.error.code == "runtimeError"
    assert "does not manage an overlay network" in reply.error.message


async def test_a_container_on_the_managed_network_waits_for_it() -> None:
    agent = Agent()
    create = asyncio.create_task(agent.call(
        "instance.create", create_data(networkMode="managed", ipAddress="10.42.1.9"), "1i1"))
    await asyncio.sleep(0.05)
    assert not create.done() and "create_container" not in agent.runtime.calls
    assert (await agent.call("network.apply", APPLY)).error is None
    reply = await asyncio.wait_for(create, WAIT)
    assert reply.error is None and "create_container" in agent.runtime.calls


async def test_a_container_on_a_managed_network_never_set_up_is_not_created(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(instances, "MANAGED_NETWORK_WAIT", 0.05)
    agent = Agent()
    reply = await agent.call("instance.create", create_data(networkMode="managed"), "1i1")
    assert reply.error is not None and reply.error.code == "runtimeError"
    assert "managed network is not set up on this host yet" in reply.error.message
    assert "create_container" not in agent.runtime.calls


async def test_a_container_on_another_network_does_not_wait() -> None:
    agent = Agent(network=False)
    reply = await agent.call("instance.create", create_data(), "1i1")
    assert reply.error is None
