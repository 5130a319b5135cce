"""agent.facts.FactsSource: the ``agentIp`` it reports, asked for or detected."""

from __future__ import annotations

from agent.facts import FactsSource
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


async def test_without_one_the_detected_address_is_reported_detected_once() -> None:
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
