"""agent.facts.FactsSource: the ``agentIp`` it reports, asked for or detected."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from agent import facts as facts_module
from agent.facts import FactsSource
from agent.host_facts import gather_facts
from tests.unit.agent.fakes import FakeRuntime

SERVER = "http://127.0.0.1:8080"


class Detector:
    """Records the server URLs it is asked about and answers ``address``."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self.asked: list[str] = []

    def __call__(self, server_url: str) -> str | None:
        self.asked.append(server_url)
        return self.address


async def test_the_address_asked_for_is_reported_and_nothing_is_detected() -> None:
    detect = Detector("192.168.1.20")
    facts = FactsSource(FakeRuntime(), {}, "10.0.0.9", server_url=SERVER, detect=detect)
    assert (await facts.current())["agentIp"] == "10.0.0.9"
    assert detect.asked == []


async def test_without_one_the_detected_address_is_reported_detected_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The machine's own facts (free memory) may change between two gatherings: hold them still,
    # so that only the address could be reported again.
    first: list[dict[str, Any]] = []

    def still(*args: Any) -> dict[str, Any]:
        if not first:
            first.append(gather_facts(*args))
        return copy.deepcopy(first[0])

    monkeypatch.setattr(facts_module, "gather_facts", still)
    detect = Detector("192.168.1.20")
    facts = FactsSource(FakeRuntime(), {}, None, server_url=SERVER, detect=detect)
    assert (await facts.current())["agentIp"] == "192.168.1.20"
    assert await facts.changes() == {}
    assert detect.asked == [SERVER]


async def test_nothing_detected_reports_no_agent_ip_and_the_server_uses_what_it_sees() -> None:
    detect = Detector(None)
    facts = FactsSource(FakeRuntime(), {}, None, server_url=SERVER, detect=detect)
    assert "agentIp" not in await facts.current()
    await facts.current()
    assert detect.asked == [SERVER]
    assert "agentIp" not in await FactsSource(FakeRuntime(), {}, None).current()
