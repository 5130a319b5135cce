"""``dns.apply`` through the real dispatcher and handler table: the reply names the version in
effect, a malformed table is invalidData, an agent without discovery DNS says so, and the
instruction is listed in the host facts."""

from __future__ import annotations

from typing import Any

from agent.dispatcher import Dispatcher
from agent.dns.manager import DnsManager
from agent.facts import FactsSource
from agent.handlers import HANDLERS
from agent.network.manager import NoNetwork
from shared import protocol
from shared.discovery import DnsApplied
from shared.instructions import parse_reply
from tests.support.timing import seconds
from tests.unit.agent.fakes import FakeRuntime
from tests.unit.agent.test_dns_manager import TABLE, FakeResponder

WAIT = seconds(5)


class Agent:
    """The real handler table and dispatcher, with a DnsManager on a FakeResponder."""

    def __init__(self, *, dns: bool = True) -> None:
        self.runtime = FakeRuntime()
        self.responder = FakeResponder()
        self.dns = DnsManager(NoNetwork(), self.responder)
        self.dispatcher = Dispatcher(HANDLERS, self.runtime, FactsSource(self.runtime, {}, None),
                                     dns=self.dns if dns else None)
        self.count = 0

    async def call(self, data: dict[str, Any]) -> protocol.Reply:
        self.count += 1
        sent: list[protocol.AgentMessage] = []

        async def send(message: protocol.AgentMessage) -> None:
            sent.append(message)

        await self.dispatcher.handle(protocol.Request(
            id=f"r-{self.count}", name="dns.apply", resource_type="host", resource_id="1h1",
            data=data, timeout_ms=int(WAIT * 1000)), send)
        replies = [m for m in sent if isinstance(m, protocol.Reply)]
        assert len(replies) == 1
        protocol.parse(protocol.dump(replies[0]))  # fits the wire
        return replies[0]


async def test_dns_apply_swaps_the_table_in_and_answers_its_version() -> None:
    agent = Agent()
    reply = await agent.call(TABLE)
    assert reply.error is None
    assert parse_reply("dns.apply", reply.data) == DnsApplied("v1")
    again = await agent.call({**TABLE, "version": "v2"})
    assert again.data == {"version": "v2"}
    assert [t.version for t in agent.responder.tables] == ["v1", "v2"]
    assert agent.dns.version == "v2"


async def test_a_malformed_table_is_invalid_data_and_changes_nothing() -> None:
    agent = Agent()
    reply = await agent.call({**TABLE, "names": {"db": {"addresses": ["10.42.0.300"]}}})
    assert reply.error is not None and reply.error.code == "invalidData"
    assert "data.names['db'].addresses[0] must be an IPv4 address" in reply.error.message
    assert agent.responder.tables == [] and agent.dns.version is None


async def test_an_agent_without_discovery_dns_says_so() -> None:
    reply = await Agent(dns=False).call(TABLE)
    assert reply.error is not None and reply.error.code == "runtimeError"
    assert "does not run the service discovery DNS" in reply.error.message


async def test_the_host_facts_list_dns_apply_among_the_instructions() -> None:
    runtime = FakeRuntime()
    facts = await FactsSource(runtime, {}, None, instructions=HANDLERS).current()
    assert "dns.apply" in facts["instructions"] and "network.apply" in facts["instructions"]
