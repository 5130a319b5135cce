"""The HealthChecker with a scripted probe, 20 ms intervals and a fake wall clock: reported
transitions, the initializing timeout, restarts, applies that keep, restart and drop checks,
batched and chunked reports, the resync after a reconnection, the bound on concurrent probes,
and ``health.apply`` through the dispatcher."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest

from agent.dispatcher import Dispatcher, InstructionContext
from agent.facts import FactsSource
from agent.handlers import health
from agent.health import HealthChecker, HealthService, NoHealth
from agent.health.probe import ProbeResult
from shared import protocol
from shared.errors import InstructionError
from shared.health import HealthApplied, HealthApply, HealthCheck, HealthResult, HealthState
from shared.protocol import MAX_HEALTH_RESULTS
from tests.support.timing import seconds
from tests.unit.agent.fakes import FakeRuntime

INIT, UP, DOWN, REINIT = (HealthState.INITIALIZING, HealthState.HEALTHY,
                          HealthState.UNHEALTHY, HealthState.REINITIALIZING)
WAIT = seconds(3)  # reached only when something is broken
T0 = 1_795_781_000.0
CHECK = HealthCheck("c1", "10.42.1.5", 80, interval_ms=20, healthy_threshold=2,
                    unhealthy_threshold=3, started_at=T0)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Probe:
    """Answers each container as ``up`` says (a missing one is down); counts the probes."""

    def __init__(self) -> None:
        self.up: dict[str, bool] = {}
        self.calls: dict[str, int] = {}
        self.gate: asyncio.Event | None = None
        self.running = self.most_running = 0

    async def __call__(self, check: HealthCheck) -> ProbeResult:
        self.calls[check.uuid] = self.calls.get(check.uuid, 0) + 1
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if self.gate is not None:
                await self.gate.wait()
            return ProbeResult(True) if self.up.get(check.uuid) else \
                ProbeResult(False, "connection refused")
        finally:
            self.running -= 1

    def count(self, uuid: str = "c1") -> int:
        return self.calls.get(uuid, 0)


class Reports:
    """The report callback: each call's results."""

    def __init__(self) -> None:
        self.calls: list[list[HealthResult]] = []
        self.fail = False

    async def __call__(self, results: list[HealthResult]) -> None:
        if self.fail:
            raise ConnectionError("the server is unreachable")
        self.calls.append(results)

    def states(self, uuid: str = "c1") -> list[HealthState]:
        return [r.state for call in self.calls for r in call if r.uuid == uuid]

    def last(self, uuid: str = "c1") -> HealthState | None:
        """The state last reported for ``uuid`` (the snapshot runs up to a batch ahead)."""
        states = self.states(uuid)
        return states[-1] if states else None


async def eventually(condition: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while loop.time() < deadline:
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out after {WAIT:g} s waiting for {what}")


class Rig:
    def __init__(self, **options: object) -> None:
        self.clock, self.probe, self.reports = Clock(), Probe(), Reports()
        self.checker = HealthChecker(self.reports, clock=self.clock, probe=self.probe,
                                     batch_delay=0.01, **options)  # type: ignore[arg-type]

    async def apply(self, *checks: HealthCheck, version: str = "v1") -> HealthApplied:
        return await self.checker.apply(HealthApply(version, checks))

    def state(self, uuid: str = "c1") -> HealthState | None:
        return next((r.state for r in self.checker.snapshot() if r.uuid == uuid), None)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    rig = Rig()
    rig.checker.start()
    yield rig
    await rig.checker.stop()


async def test_a_new_check_reports_initializing_then_healthy(rig: Rig) -> None:
    rig.probe.up["c1"] = True
    assert await rig.apply(CHECK) == HealthApplied("v1")
    await eventually(lambda: rig.reports.states() == [INIT, UP], "initializing, then healthy")
    assert rig.checker.snapshot() == [HealthResult("c1", UP, None, T0)]
    assert rig.checker.version == "v1"


async def test_healthy_becomes_unhealthy_after_the_threshold_and_recovers(rig: Rig) -> None:
    rig.probe.up["c1"] = True
    await rig.apply(CHECK)
    await eventually(lambda: rig.state() is UP, "healthy")
    rig.probe.up["c1"] = False
    await eventually(lambda: rig.reports.states() == [INIT, UP, DOWN], "unhealthy")
    assert rig.reports.calls[-1][-1].message == "connection refused"
    rig.probe.up["c1"] = True
    await eventually(lambda: rig.reports.states() == [INIT, UP, DOWN, UP], "healthy again")


async def test_only_transitions_are_reported(rig: Rig) -> None:
    rig.probe.up["c1"] = True
    await rig.apply(CHECK)
    await eventually(lambda: rig.state() is UP, "healthy")
    probes = rig.probe.count()
    await eventually(lambda: rig.probe.count() >= probes + 5, "more probes")
    assert rig.reports.states() == [INIT, UP]


async def test_failures_are_forgiven_until_the_initializing_timeout(rig: Rig) -> None:
    await rig.apply(replace(CHECK, initializing_timeout_ms=60_000))
    await eventually(lambda: rig.probe.count() >= 6, "six failed probes")
    assert rig.state() is INIT
    rig.clock.now = T0 + 61
    await eventually(lambda: rig.reports.states() == [INIT, DOWN],
                     "unhealthy once the window has passed")


async def test_a_new_started_at_makes_it_reinitializing_without_a_new_task(rig: Rig) -> None:
    rig.probe.up["c1"] = True
    await rig.apply(CHECK)
    await eventually(lambda: rig.reports.last() is UP, "healthy")
    rig.probe.up["c1"] = False
    await rig.apply(replace(CHECK, started_at=T0 + 100), version="v2")
    assert rig.state() is REINIT
    rig.probe.up["c1"] = True
    await eventually(lambda: rig.reports.states() == [INIT, UP, REINIT, UP],
                     "healthy after restarting")
    assert [t.get_name() for t in asyncio.all_tasks()].count("health-c1") == 1


async def test_apply_keeps_unchanged_checks_and_drops_removed_ones(rig: Rig) -> None:
    other = replace(CHECK, uuid="c2")
    rig.probe.up.update(c1=True, c2=True)
    await rig.apply(CHECK, other)
    await eventually(lambda: rig.reports.last("c1") is UP and rig.reports.last("c2") is UP,
                     "both healthy")
    await rig.apply(CHECK, version="v2")
    assert [r.uuid for r in rig.checker.snapshot()] == ["c1"]
    assert rig.state("c1") is UP
    stopped_at = rig.probe.count("c2")
    probes = rig.probe.count("c1")
    await eventually(lambda: rig.probe.count("c1") >= probes + 3, "c1 still probed")
    assert rig.probe.count("c2") == stopped_at
    assert rig.reports.states("c1") == [INIT, UP]
    assert "health-c2" not in [t.get_name() for t in asyncio.all_tasks()]


async def test_a_check_whose_probe_changed_starts_over(rig: Rig) -> None:
    rig.probe.up["c1"] = True
    await rig.apply(CHECK)
    await eventually(lambda: rig.reports.last() is UP, "healthy")
    await rig.apply(replace(CHECK, port=8080), version="v2")
    assert rig.state() is INIT
    await eventually(lambda: rig.reports.states() == [INIT, UP, INIT, UP], "healthy again")


async def test_applying_the_same_list_again_reports_nothing(rig: Rig) -> None:
    rig.probe.up["c1"] = True
    await rig.apply(CHECK)
    await eventually(lambda: rig.reports.last() is UP, "healthy")
    calls = len(rig.reports.calls)
    await rig.apply(CHECK)
    await asyncio.sleep(0.05)
    assert len(rig.reports.calls) == calls


async def test_results_of_many_checks_go_in_one_report() -> None:
    rig = Rig(first_delay=lambda interval: 3600.0)  # no probe: only the initial states
    rig.checker.start()
    try:
        await rig.apply(*(replace(CHECK, uuid=f"c{i}") for i in range(50)))
        await eventually(lambda: bool(rig.reports.calls), "a report")
        await asyncio.sleep(0.05)
        assert len(rig.reports.calls) == 1
        assert [r.uuid for r in rig.reports.calls[0]] == [f"c{i}" for i in range(50)]
    finally:
        await rig.checker.stop()


async def test_a_report_never_holds_more_results_than_a_message_may() -> None:
    rig = Rig(first_delay=lambda interval: 3600.0)
    rig.checker.start()
    try:
        count = MAX_HEALTH_RESULTS + 1
        await rig.apply(*(replace(CHECK, uuid=f"c{i}") for i in range(count)))
        await eventually(lambda: sum(map(len, rig.reports.calls)) == count, "every result")
        assert [len(call) for call in rig.reports.calls] == [MAX_HEALTH_RESULTS, 1]
    finally:
        await rig.checker.stop()


async def test_after_a_reconnection_the_next_apply_reports_every_state(rig: Rig) -> None:
    rig.probe.up["c1"] = True
    await rig.apply(CHECK, replace(CHECK, uuid="c2"))
    await eventually(lambda: rig.reports.last("c1") is UP and rig.reports.last("c2") is DOWN,
                     "settled")
    rig.reports.calls.clear()
    rig.checker.reconnected()
    await rig.apply(CHECK, replace(CHECK, uuid="c2"))
    await eventually(lambda: bool(rig.reports.calls), "a report")
    assert {(r.uuid, r.state) for r in rig.reports.calls[0]} == {("c1", UP), ("c2", DOWN)}
    rig.reports.calls.clear()
    await rig.apply(CHECK, replace(CHECK, uuid="c2"))  # once only
    await asyncio.sleep(0.05)
    assert rig.reports.calls == []


async def test_a_report_that_fails_is_dropped_and_checking_goes_on(rig: Rig) -> None:
    rig.reports.fail = True
    rig.probe.up["c1"] = True
    await rig.apply(CHECK)
    await eventually(lambda: rig.state() is UP, "healthy all the same")
    rig.reports.fail = False
    rig.probe.up["c1"] = False
    await eventually(lambda: rig.reports.last() is DOWN, "the next transition reported")
    assert INIT not in rig.reports.states()  # dropped, not sent again


async def test_no_more_probes_run_at_once_than_the_bound() -> None:
    rig = Rig(max_concurrent=3)
    rig.probe.gate = asyncio.Event()
    rig.checker.start()
    try:
        await rig.apply(*(replace(CHECK, uuid=f"c{i}") for i in range(10)))
        await eventually(lambda: rig.probe.running == 3, "three probes running")
        await asyncio.sleep(0.05)
        assert rig.probe.most_running == 3
        rig.probe.gate.set()
        await eventually(lambda: all(rig.probe.count(f"c{i}") for i in range(10)),
                         "every check probed")
        assert rig.probe.most_running == 3
    finally:
        await rig.checker.stop()


async def test_checks_applied_before_start_wait_for_it_and_stop_ends_probing() -> None:
    rig = Rig()
    rig.probe.up["c1"] = True
    await rig.apply(CHECK)
    await asyncio.sleep(0.05)
    assert rig.probe.count() == 0 and rig.reports.calls == []
    rig.checker.start()
    await eventually(lambda: rig.reports.states() == [INIT, UP], "healthy once started")
    await rig.checker.stop()
    probes = rig.probe.count()
    await asyncio.sleep(0.05)
    assert rig.probe.count() == probes
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("health-")]


async def test_a_probe_that_raises_is_logged_and_checking_goes_on(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    failures = 0

    async def broken(check: HealthCheck) -> ProbeResult:
        nonlocal failures
        failures += 1
        if failures <= 2:
            raise RuntimeError("bug")
        return ProbeResult(True)

    checker = HealthChecker(rig.reports, clock=rig.clock, probe=broken, batch_delay=0.01)
    checker.start()
    try:
        await checker.apply(HealthApply("v1", (CHECK,)))
        await eventually(lambda: rig.reports.states() == [INIT, UP], "healthy after the bug")
    finally:
        await checker.stop()
    assert "probing container c1 failed unexpectedly" in caplog.text


# the instruction


def test_the_checker_is_a_health_service() -> None:
    assert isinstance(HealthChecker(Reports()), HealthService)
    assert isinstance(NoHealth(), HealthService)


async def test_health_apply_runs_the_checks_of_its_payload(rig: Rig) -> None:
    async def send(message: protocol.AgentMessage) -> None:
        pass

    runtime = FakeRuntime()
    ctx = InstructionContext(
        protocol.Request(id="r1", name="health.apply", resource_type="host", resource_id="1h1",
                         data={"version": "v9", "checks": [CHECK.dump()]}),
        runtime, FactsSource(runtime, {}, None), send)
    ctx.health = rig.checker  # type: ignore[attr-defined]  # until the context has one
    assert await health.apply(ctx) == HealthApplied("v9")
    assert [r.uuid for r in rig.checker.snapshot()] == ["c1"]


async def test_an_agent_without_a_checker_refuses_health_apply() -> None:
    with pytest.raises(InstructionError, match="does not run health checks"):
        await NoHealth().apply(HealthApply("v1", ()))
    dispatcher = Dispatcher({"health.apply": health.apply}, FakeRuntime(),
                            FactsSource(FakeRuntime(), {}, None))
    sent: list[protocol.AgentMessage] = []

    async def send(message: protocol.AgentMessage) -> None:
        sent.append(message)

    await dispatcher.handle(protocol.Request(
        id="r1", name="health.apply", resource_type="host", resource_id="1h1",
        data={"checks": []}, timeout_ms=int(WAIT * 1000)), send)
    reply = sent[-1]
    assert isinstance(reply, protocol.Reply) and reply.error is not None
    assert reply.error.code == "runtimeError"


async def test_a_malformed_health_apply_is_invalid_data() -> None:
    dispatcher = Dispatcher({"health.apply": health.apply}, FakeRuntime(),
                            FactsSource(FakeRuntime(), {}, None))
    sent: list[protocol.AgentMessage] = []

    async def send(message: protocol.AgentMessage) -> None:
        sent.append(message)

    await dispatcher.handle(protocol.Request(
        id="r1", name="health.apply", resource_type="host", resource_id="1h1",
        data={"checks": [{**CHECK.dump(), "port": 0}]}, timeout_ms=int(WAIT * 1000)), send)
    reply = sent[-1]
    assert isinstance(reply, protocol.Reply) and reply.error is not None
    assert reply.error.code == "invalidData"
