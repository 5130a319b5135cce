"""The NetworkManager on the simulated host of test_overlay_plan: a network.apply payload
becomes the overlay, errors become instruction errors, the latest apply wins, the loop repairs
drift and retries failures (warning once), wait_ready, teardown, and the exit that triggers it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import pytest

from agent.connection import _final_close
from agent.network.errors import CommandFailed
from agent.network.manager import NetworkManager, read_request
from agent.network.overlay import Overlay
from shared.errors import ErrorCode, InstructionError
from shared.overlay import NetworkApplied, NetworkApply, OverlayPeer, OverlayPolicy, PolicyEntry
from shared.protocol import CloseCode
from tests.support.timing import seconds
from tests.unit.agent.test_overlay_plan import CONFIG, FRESH_PLAN, P2, P3, FakeHost

INTERVAL = 0.02
WAIT = seconds(5)  # reached only when something is broken


def payload(version: str = "v1", **overrides: Any) -> NetworkApply:
    fields: dict[str, Any] = {
        "subnet": "10.42.1.0/24", "underlay_ip": "10.99.0.1", "pool": "10.42.0.0/16",
        "vni": 42, "port": 4789, "mtu": 1450,
        "peers": (OverlayPeer("10.42.3.0/24", "10.99.0.3"), OverlayPeer("10.42.2.0/24",
                                                                         "10.99.0.2")),
        "version": version}
    fields.update(overrides)
    return NetworkApply(**fields)


class FailingHost(FakeHost):
    """A host whose ``docker network create`` fails until ``fail`` is cleared."""

    def __init__(self) -> None:
        super().__init__()
        self.fail: str | None = "Cannot connect to the Docker daemon"

    def execute(self, c: tuple[str, ...]) -> None:
        if self.fail and c[:3] == ("docker", "network", "create"):
            self.ran.append(c)
            raise CommandFailed(c, 1, self.fail)
        super().execute(c)


class GatedHost(FakeHost):
    """A host whose first ``ip link add`` waits for ``gate``."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def run(self, argv: Sequence[str]) -> str:
        if tuple(argv[:3]) == ("ip", "link", "add") and not self.gate.is_set():
            self.entered.set()
            await self.gate.wait()
        return await super().run(argv)


async def until(check: Any, what: str) -> None:
    """Poll the simulated host (it has no events to wait on) until ``check`` holds."""
    try:
        async with asyncio.timeout(WAIT):
            while not check():  # noqa: ASYNC110
                await asyncio.sleep(INTERVAL / 2)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def test_a_payload_becomes_the_overlay_settings_peers_and_policy() -> None:
    config, peers = read_request(payload(policy=OverlayPolicy("deny", (
        PolicyEntry("allow", ("10.42.2.5",), ("10.42.1.3",)),))))
    assert (config.subnet, config.underlay_ip, config.pool) == (
        CONFIG.subnet, CONFIG.underlay_ip, CONFIG.pool)
    assert peers == [P2, P3]
    assert config.policy.default_deny and len(config.policy.rules) == 1


async def test_apply_programs_the_host_and_answers_the_version_and_the_changes() -> None:
    host = FakeHost()
    manager = NetworkManager(Overlay(host))
    assert await manager.apply(payload("v1")) == NetworkApplied("v1", len(FRESH_PLAN))
    assert host.ran == FRESH_PLAN
    assert await manager.apply(payload("v2")) == NetworkApplied("v2", 0)
    assert manager.version == "v2" and manager.last_error is None


async def test_a_policy_in_the_payload_reaches_the_host() -> None:
    host = FakeHost()
    manager = NetworkManager(Overlay(host))
    await manager.apply(payload(policy=OverlayPolicy("deny")))
    assert host.tables["filter"]["CORRAL-POLICY"][-1] == (
        "-s", "10.42.0.0/16", "-d", "10.42.1.0/24", "-j", "DROP")
    assert (await manager.apply(payload())).changes == 3  # back to open: jump, flush, delete
    assert "CORRAL-POLICY" not in host.tables["filter"]


@pytest.mark.parametrize(("overrides", "message"), [
    ({"subnet": "10.42.1.5/24"}, "host bits set"),
    ({"pool": "nonsense"}, "Pool 'nonsense' is not an IPv4 network"),
    ({"peers": (OverlayPeer("10.42.1.0/24", "10.99.0.9"),)}, "overlaps this host's subnet"),
    ({"policy": OverlayPolicy("deny", (PolicyEntry("allow", ("x",), ("10.42.1.3",)),))},
     "Policy source 'x' is not an IPv4 address"),
])
async def test_settings_that_can_never_work_are_invalid_data_and_change_nothing(
        overrides: dict[str, Any], message: str) -> None:
    host = FakeHost()
    manager = NetworkManager(Overlay(host))
    with pytest.raises(InstructionError, match=message) as caught:
        await manager.apply(payload(**overrides))
    assert caught.value.code is ErrorCode.INVALID_DATA
    assert host.ran == [] and manager.version is None


async def test_a_failing_command_is_a_runtime_error_with_its_own_message() -> None:
    host = FailingHost()
    manager = NetworkManager(Overlay(host))
    with pytest.raises(InstructionError) as caught:
        await manager.apply(payload())
    assert caught.value.code is ErrorCode.RUNTIME_ERROR
    assert str(caught.value).startswith("Command `docker network create --driver bridge")
    assert str(caught.value).endswith("failed (exit 1): Cannot connect to the Docker daemon.")
    assert manager.last_error == str(caught.value)


async def test_the_latest_apply_wins_and_a_skipped_one_answers_what_is_in_effect() -> None:
    host = GatedHost()
    manager = NetworkManager(Overlay(host))
    first = asyncio.create_task(manager.apply(payload("v1")))
    await asyncio.wait_for(host.entered.wait(), WAIT)
    second = asyncio.create_task(manager.apply(payload("v2", peers=())))
    third = asyncio.create_task(manager.apply(payload("v3", peers=(OverlayPeer(
        "10.42.2.0/24", "10.99.0.2"),))))
    await asyncio.sleep(INTERVAL)
    host.gate.set()
    results = await asyncio.wait_for(asyncio.gather(first, second, third), WAIT)
    assert results[0] == NetworkApplied("v1", len(FRESH_PLAN))
    assert results[1] == results[2] == NetworkApplied("v3", 3)  # P3's entries removed
    assert set(host.routes) == {"10.42.2.0/24"}


async def test_the_loop_repairs_what_a_docker_restart_removed(
        caplog: pytest.LogCaptureFixture) -> None:
    host = FakeHost()
    manager = NetworkManager(Overlay(host), verify_interval=INTERVAL)
    await manager.apply(payload())
    manager.start()
    try:
        caplog.set_level(logging.INFO)
        del host.networks["corral-managed"]
        host.tables["filter"]["DOCKER-USER"] = [("-j", "RETURN")]
        await until(lambda: "corral-managed" in host.networks, "the network to be back")
        await until(lambda: ("-j", "CORRAL-FORWARD") in host.tables["filter"]["DOCKER-USER"],
                    "the jump to be back")
    finally:
        await manager.stop()
    assert any("does not match version v1; repairing" in r.message and
               "docker network create" in r.message for r in caplog.records)
    assert await Overlay(host).pending(*read_request(payload())) == []


async def test_the_loop_retries_a_failed_apply_and_warns_once_per_message(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    host = FailingHost()
    manager = NetworkManager(Overlay(host), verify_interval=INTERVAL)
    with pytest.raises(InstructionError):
        await manager.apply(payload())
    manager.start()
    try:
        await until(lambda: len(host.ran) > len(FRESH_PLAN) + 3, "a few retries")
        host.fail = "another error"
        await until(lambda: "another error" in (manager.last_error or ""), "the new error")
        await asyncio.sleep(INTERVAL * 3)
        host.fail = None
        await manager.wait_ready(WAIT)
    finally:
        await manager.stop()
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "another error" in warnings[1]
    assert manager.last_error is None
    assert any("set up again" in r.message for r in caplog.records)


async def test_wait_ready_says_why_the_network_is_not_there_yet() -> None:
    manager = NetworkManager(Overlay(FailingHost()))
    with pytest.raises(InstructionError, match=r"managed network is not set up on this host "
                                               r"yet \(the server has not sent its settings"):
        await manager.wait_ready(0.01)
    with pytest.raises(InstructionError):
        await manager.apply(payload())
    with pytest.raises(InstructionError, match=r"not set up on this host yet \(the last "
                                               r"attempt failed: Command `docker network"):
        await manager.wait_ready(0.01)


async def test_wait_ready_returns_once_an_apply_has_succeeded() -> None:
    manager = NetworkManager(Overlay(FakeHost()))
    waiting = asyncio.create_task(manager.wait_ready(WAIT))
    await asyncio.sleep(0)
    await manager.apply(payload())
    await asyncio.wait_for(waiting, WAIT)
    await manager.wait_ready(0)


async def test_teardown_removes_the_overlay_and_forgets_the_desired_state() -> None:
    host = FakeHost()
    manager = NetworkManager(Overlay(host), verify_interval=INTERVAL)
    await manager.apply(payload(policy=OverlayPolicy("deny")))
    manager.start()
    assert len(await manager.teardown()) == 10
    assert host.tables == FakeHost().tables and not host.networks
    assert manager.version is None
    await manager.verify()
    assert not host.networks
    await manager.stop()


async def test_a_failed_teardown_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    host = FakeHost()
    await Overlay(host).apply(CONFIG, [P2])

    class InUse(FakeHost):
        async def run(self, argv: Sequence[str]) -> str:
            if tuple(argv[:3]) == ("docker", "network", "rm"):
                raise CommandFailed(argv, 1, "network has active endpoints")
            return await host.run(argv)

    assert await NetworkManager(Overlay(InUse())).teardown() == []
    assert "could not remove all of the managed network" in caplog.text
    assert "corral-vx" not in host.links


def test_only_a_removed_host_ends_the_agent_with_its_overlay_removed() -> None:
    removed = _final_close(CloseCode.HOST_REMOVED, "host removed")
    assert removed is not None and removed.host_removed
    superseded = _final_close(CloseCode.SUPERSEDED, "")
    assert superseded is not None and not superseded.host_removed


def test_the_hosts_own_entry_in_the_environments_peer_list_is_left_out() -> None:
    own = OverlayPeer("10.42.1.0/24", "10.99.0.1")
    _, peers = read_request(payload(peers=(*payload().peers, own)))
    assert [str(p.subnet) for p in peers] == ["10.42.2.0/24", "10.42.3.0/24"]
    # Its subnet under another address is no entry of its own: a conflict, refused.
    with pytest.raises(ValueError, match="overlaps this host's subnet"):
        read_request(payload(peers=(OverlayPeer("10.42.1.0/24", "10.99.0.9"),)))
