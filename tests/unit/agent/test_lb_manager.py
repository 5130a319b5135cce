"""The LbManager without HAProxy, and ``lb.apply`` through the dispatcher: refusals that need
no process (custom text that is no HAProxy sections, a missing binary) become a balancer in
``error`` with the reason; an agent without load balancers refuses; a malformed payload is
``invalidData``. The manager with the real HAProxy is in tests/e2e/test_haproxy_agent.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.dispatcher import Dispatcher
from agent.facts import FactsSource
from agent.handlers import lb
from agent.lb import LbManager, LbService, NoLb
from shared import protocol
from shared.errors import InstructionError
from shared.lb import Backend, Balancer, LbApplied, LbApply, PortRule, Server
from shared.lb_report import LbResult, LbState
from tests.support.timing import seconds
from tests.unit.agent.fakes import FakeRuntime

WAIT_MS = int(seconds(10) * 1000)
BALANCER = Balancer(uuid="u1", name="web", config_version="1",
                    rules=(PortRule(80, "http", "web"),),
                    backends=(Backend("web", "http", (Server("a", "10.42.0.1", 80),)),))


class Reports:
    def __init__(self) -> None:
        self.results: list[LbResult] = []

    async def __call__(self, results: list[LbResult]) -> None:
        self.results += results


async def test_custom_text_that_is_not_sections_is_an_error_naming_its_line(
        tmp_path: Path) -> None:
    reports = Reports()
    manager = LbManager(tmp_path, reports, haproxy="/nonexistent/haproxy")
    bad = Balancer(**{**BALANCER.__dict__, "custom_config": "defaults\n  x 1\nbogus\n"})
    assert await manager.apply(LbApply("v1", (bad,))) == LbApplied("v1")
    [result] = reports.results
    assert (result.state, result.config_version, result.pid) == (LbState.ERROR, None, None)
    assert result.message is not None and result.message.startswith(
        "customConfig line 3: 'bogus' is not a section keyword")
    assert manager.version == "v1"


async def test_a_missing_haproxy_binary_is_an_error_saying_so(tmp_path: Path) -> None:
    reports = Reports()
    manager = LbManager(tmp_path, reports, haproxy="/nonexistent/haproxy")
    await manager.apply(LbApply("v1", (BALANCER,)))
    assert [r.state for r in reports.results] == [LbState.ERROR]
    assert "cannot run /nonexistent/haproxy" in (reports.results[0].message or "")
    await manager.apply(LbApply("v1", (BALANCER,)))
    assert len(reports.results) == 1  # the same state again is not reported again


async def test_a_new_session_gets_every_state_again(tmp_path: Path) -> None:
    reports = Reports()
    manager = LbManager(tmp_path, reports, haproxy="/nonexistent/haproxy")
    await manager.apply(LbApply("v1", (BALANCER,)))
    manager.reconnected()
    for _ in range(100):
        if len(reports.results) == 2:
            break
        await asyncio.sleep(0.01)
    assert [r.uuid for r in reports.results] == ["u1", "u1"]


async def test_a_balancer_no_longer_listed_is_reported_stopped_and_its_directory_goes(
        tmp_path: Path) -> None:
    reports = Reports()
    manager = LbManager(tmp_path, reports, haproxy="/nonexistent/haproxy")
    await manager.apply(LbApply("v1", (BALANCER,)))
    assert (tmp_path / "u1").is_dir()
    (tmp_path / "stray").mkdir()  # left by an agent that crashed
    await manager.apply(LbApply("v2", ()))
    assert reports.results[-1].state is LbState.STOPPED
    assert _entries(tmp_path) == [] and manager.results() == []


async def test_lb_apply_reaches_the_manager_through_the_dispatcher(tmp_path: Path) -> None:
    reports = Reports()
    manager = LbManager(tmp_path, reports, haproxy="/nonexistent/haproxy")
    assert isinstance(manager, LbService)
    runtime = FakeRuntime()
    dispatcher = Dispatcher({"lb.apply": lb.apply}, runtime, FactsSource(runtime, {}, None),
                            lb=manager)
    sent = await _handle(dispatcher, LbApply.of((BALANCER,)).dump())
    assert isinstance(sent, protocol.Reply) and sent.error is None
    assert sent.data == {"version": LbApply.of((BALANCER,)).version}
    assert [r.uuid for r in manager.results()] == ["u1"]


async def test_an_agent_without_load_balancers_refuses_lb_apply() -> None:
    with pytest.raises(InstructionError, match="does not run load balancers"):
        await NoLb().apply(LbApply())
    runtime = FakeRuntime()
    dispatcher = Dispatcher({"lb.apply": lb.apply}, runtime, FactsSource(runtime, {}, None))
    reply = await _handle(dispatcher, {"balancers": []})
    assert isinstance(reply, protocol.Reply) and reply.error is not None
    assert reply.error.code == "runtimeError"


async def test_a_malformed_lb_apply_is_invalid_data() -> None:
    runtime = FakeRuntime()
    dispatcher = Dispatcher({"lb.apply": lb.apply}, runtime, FactsSource(runtime, {}, None))
    data = LbApply.of((BALANCER,)).dump()
    data["balancers"][0]["rules"][0]["protocol"] = "udp"
    reply = await _handle(dispatcher, data)
    assert isinstance(reply, protocol.Reply) and reply.error is not None
    assert reply.error.code == "invalidData"
    assert "protocol udp cannot be balanced by HAProxy" in reply.error.message


def _entries(directory: Path) -> list[Path]:
    return list(directory.iterdir())


async def _handle(dispatcher: Dispatcher, data: dict[str, object]) -> protocol.AgentMessage:
    sent: list[protocol.AgentMessage] = []

    async def send(message: protocol.AgentMessage) -> None:
        sent.append(message)

    await dispatcher.handle(protocol.Request(id="r1", name="lb.apply", resource_type="host",
                                             resource_id="1h1", data=data,
                                             timeout_ms=WAIT_MS), send)
    return sent[-1]
