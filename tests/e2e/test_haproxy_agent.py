"""The agent's load balancers on the real HAProxy: traffic spread over backends, server
changes without a reload, reloads and server changes under load without a failed request,
a refused config leaving the old one serving, removal, adoption after an agent restart, a
master that dies started again, and every golden config accepted by ``haproxy -c``.

Backends are aiohttp servers on 127.0.0.1 answering with their name; no Docker is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import NameOID

from agent.lb import LbManager
from agent.lb.process import Processes, command
from shared.lb import Backend, Balancer, Certificate, LbApply, PortRule, Server
from shared.lb_report import LbResult, LbState
from tests.support.processes import free_port
from tests.support.timing import seconds
from tests.unit.shared.test_lb_config import GOLDEN_BASE, GOLDEN_DIR, certificate_pem

pytestmark = pytest.mark.integration

HAPROXY = os.environ.get("CORRAL_HAPROXY", "/usr/sbin/haproxy")
UUID = "lb-e2e-1"
T = TypeVar("T")


async def until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds(timeout)
    last: T | None = None
    while loop.time() < deadline:
        last = check()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {seconds(timeout):g} s waiting for {what} "
                         f"(last: {last!r})")


@dataclass
class Target:
    name: str
    port: int
    runner: web.AppRunner


@pytest.fixture
async def targets() -> AsyncIterator[list[Target]]:
    """Four HTTP servers answering with their own name."""
    out: list[Target] = []
    for i in range(4):
        name = f"t{i}"

        async def hello(request: web.Request, name: str = name) -> web.Response:
            return web.Response(text=name)

        app = web.Application()
        app.router.add_get("/{tail:.*}", hello)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        out.append(Target(name, port, runner))
    yield out
    for target in out:
        await target.runner.cleanup()


def _kill_leftovers(base: Path) -> None:
    """Whatever a failed test left running under ``base`` (each master leads its own
    process group, with its workers)."""
    for pid_file in base.glob("*/haproxy.pid"):
        with contextlib.suppress(ValueError, OSError):
            pid = int(pid_file.read_text().split()[0])
            os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


@pytest.fixture
def base() -> Iterator[Path]:
    # Short: unix socket paths under it must stay within 107 bytes.
    directory = Path(tempfile.mkdtemp(prefix="lb", dir="/tmp"))
    try:
        yield directory
    finally:
        _kill_leftovers(directory)
        shutil.rmtree(directory, ignore_errors=True)


class Reports:
    def __init__(self) -> None:
        self.results: list[LbResult] = []

    async def __call__(self, results: list[LbResult]) -> None:
        self.results += results

    def last(self, uuid: str = UUID) -> LbResult | None:
        return next((r for r in reversed(self.results) if r.uuid == uuid), None)


def new_manager(base: Path, reports: Reports) -> LbManager:
    return LbManager(base, reports, haproxy=HAPROXY, drain_seconds=0.3, stop_grace=2.0)


@pytest.fixture
async def reports() -> Reports:
    return Reports()


@pytest.fixture
async def manager(base: Path, reports: Reports) -> AsyncIterator[LbManager]:
    lb = new_manager(base, reports)
    try:
        yield lb
    finally:
        await lb.stop_all()
        await lb.stop()


def balancer(port: int, servers: list[tuple[str, int]], version: str = "1", *,
             draining: frozenset[str] = frozenset(), custom: str = "",
             paths: tuple[str, ...] = ()) -> Balancer:
    rules = [PortRule(port, "http", "web")] + [PortRule(port, "http", "web", path=p)
                                               for p in paths]
    return Balancer(
        uuid=UUID, name="web", config_version=version, bind_address="127.0.0.1",
        rules=tuple(rules),
        backends=(Backend("web", "http", tuple(
            Server(name, "127.0.0.1", p, draining=name in draining) for name, p in servers)),),
        custom_config=custom)


def servers_of(targets: list[Target], *names: str) -> list[tuple[str, int]]:
    return [(t.name, t.port) for t in targets if t.name in names]


async def get(session: aiohttp.ClientSession, port: int) -> str:
    async with session.get(f"http://127.0.0.1:{port}/") as response:
        assert response.status == 200, response.status
        return await response.text()


def running(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


async def show_proc(manager: LbManager) -> Processes:
    return Processes.parse(await command(manager.files(UUID).master_socket, "show proc"))


async def served(port: int, count: int) -> set[str]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        return {await get(s, port) for _ in range(count)}


async def test_a_balancer_spreads_requests_over_its_servers(
        manager: LbManager, reports: Reports, targets: list[Target]) -> None:
    port = free_port()
    await manager.apply(LbApply.of((balancer(port, servers_of(targets, "t0", "t1", "t2")),)))
    result = await until(lambda: reports.last(), 10, "a report")
    assert (result.state, result.config_version) == (LbState.RUNNING, "1")
    assert result.pid is not None
    assert await served(port, 30) == {"t0", "t1", "t2"}


async def test_a_change_of_servers_goes_through_the_runtime_api_without_a_reload(
        manager: LbManager, reports: Reports, targets: list[Target], base: Path) -> None:
    port = free_port()
    await manager.apply(LbApply.of((balancer(port, servers_of(targets, "t0", "t1", "t2")),)))
    before = await show_proc(manager)
    # t2 goes, t3 comes, t1 drains.
    changed = balancer(port, servers_of(targets, "t0", "t1", "t3"), "2",
                       draining=frozenset({"t1"}))
    await manager.apply(LbApply.of((changed,)))
    after = await show_proc(manager)
    assert (after.master, after.reloads) == (before.master, before.reloads)
    assert after.current == before.current
    await until(lambda: (r := reports.last()) and r.config_version == "2", 10, "version 2")
    assert await served(port, 30) == {"t0", "t3"}
    state = await command(manager.files(UUID).admin_socket, "show servers state web")
    assert " t3 " in state
    assert "web/t2" not in (base / UUID / "haproxy.cfg").read_text()
    assert "server t1 127.0.0.1" in (base / UUID / "haproxy.cfg").read_text()


async def test_a_servers_address_changes_at_runtime(
        manager: LbManager, targets: list[Target], base: Path) -> None:
    port = free_port()
    await manager.apply(LbApply.of((balancer(port, [("a", targets[0].port)]),)))
    before = await show_proc(manager)
    await manager.apply(LbApply.of((balancer(port, [("a", targets[1].port)], "2"),)))
    assert (await show_proc(manager)).reloads == before.reloads
    assert await served(port, 5) == {"t1"}


async def _client(port: int, keep_alive: bool, stop: asyncio.Event,
                  counts: dict[str, int], errors: list[str]) -> None:
    connector = aiohttp.TCPConnector(force_close=not keep_alive, limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        while not stop.is_set():
            try:
                await get(session, port)
                counts["ok"] += 1
            except (aiohttp.ClientError, AssertionError, OSError) as exc:
                counts["failed"] += 1
                errors.append(f"{type(exc).__name__}: {exc}")


async def test_reloads_and_server_changes_under_load_fail_no_request(
        manager: LbManager, reports: Reports, targets: list[Target], base: Path) -> None:
    port = free_port()
    await manager.apply(LbApply.of((balancer(port, servers_of(targets, "t0", "t1", "t2"),
                                             paths=("/p",)),)))
    stop = asyncio.Event()
    counts = {"ok": 0, "failed": 0}
    errors: list[str] = []
    clients = [asyncio.create_task(_client(port, i % 2 == 0, stop, counts, errors))
               for i in range(20)]
    chosen, draining, paths = ["t0", "t1", "t2"], frozenset[str](), ("/p",)
    try:
        for i in range(2, 22):
            if i % 2:  # servers only: through the runtime API
                chosen = ["t0", "t1", "t3"] if i % 4 == 1 else ["t0", "t1", "t2"]
                draining = frozenset({"t1"}) if i % 3 == 0 else frozenset()
            else:  # the frontend changes: a reload
                paths = (f"/p{i}",)
            wanted = balancer(port, servers_of(targets, *chosen), str(i), draining=draining,
                              paths=paths)
            await manager.apply(LbApply.of((wanted,)))
            assert (r := reports.last()) is not None and r.state is LbState.RUNNING, r
            await asyncio.sleep(0.1)
        await until(lambda: counts["ok"] > 200, 20, "requests served")
    finally:
        stop.set()
        await asyncio.gather(*clients)
    processes = await show_proc(manager)
    assert (processes.reloads, processes.failed) == (10, 0)  # the other 10 at runtime
    assert counts["failed"] == 0, errors[:5]


async def test_a_refused_custom_config_leaves_the_old_one_serving(
        manager: LbManager, reports: Reports, targets: list[Target], base: Path) -> None:
    port = free_port()
    await manager.apply(LbApply.of((balancer(port, servers_of(targets, "t0")),)))
    good = (base / UUID / "haproxy.cfg").read_text()
    bad = balancer(port, servers_of(targets, "t1"), "2",
                   custom="backend web\n    no-such-keyword 1\n")
    await manager.apply(LbApply.of((bad,)))
    result = reports.last()
    assert result is not None and result.state is LbState.ERROR
    assert result.config_version == "1"
    assert result.message is not None and "no-such-keyword" in result.message
    assert (base / UUID / "haproxy.cfg").read_text() == good
    assert await served(port, 5) == {"t0"}
    unstructured = replace(bad, config_version="3", custom_config="maxconn 10\n")
    await manager.apply(LbApply.of((unstructured,)))
    result = reports.last()
    assert result is not None and result.state is LbState.ERROR
    assert result.message is not None and "line 1" in result.message
    await manager.apply(LbApply.of((balancer(port, servers_of(targets, "t0"), "4"),)))
    assert (r := reports.last()) is not None and (r.state, r.config_version) == (
        LbState.RUNNING, "4")


async def test_a_balancer_no_longer_listed_is_stopped_and_removed(
        manager: LbManager, reports: Reports, targets: list[Target], base: Path) -> None:
    port = free_port()
    await manager.apply(LbApply.of((balancer(port, servers_of(targets, "t0")),)))
    processes = await show_proc(manager)
    pids = [processes.master, *(w.pid for w in processes.workers)]
    await manager.apply(LbApply.of(()))
    assert (r := reports.last()) is not None and r.state is LbState.STOPPED
    assert not (base / UUID).exists()
    await until(lambda: not any(running(pid) for pid in pids), 10,
                "the processes to end")


async def test_a_restarted_agent_adopts_the_running_master(
        base: Path, targets: list[Target]) -> None:
    port = free_port()
    first_reports, second_reports = Reports(), Reports()
    first = new_manager(base, first_reports)
    wanted = LbApply.of((balancer(port, servers_of(targets, "t0", "t1")),))
    await first.apply(wanted)
    await first.stop()  # the agent leaves; HAProxy goes on
    before = await show_proc(first)
    second = new_manager(base, second_reports)
    try:
        await second.start()
        assert [(r.state, r.pid) for r in second.results()] == [
            (LbState.RUNNING, before.master)]
        assert await served(port, 10) == {"t0", "t1"}
        await second.apply(wanted)
        after = await show_proc(second)
        assert (after.master, after.reloads) == (before.master, before.reloads)
        await second.apply(LbApply.of((balancer(port, servers_of(targets, "t2"), "2"),)))
        assert await served(port, 5) == {"t2"}
    finally:
        await second.stop_all()
        await second.stop()
    assert not running(before.master)


async def test_a_master_that_dies_is_reported_and_started_again(
        manager: LbManager, reports: Reports, targets: list[Target], base: Path) -> None:
    port = free_port()
    await manager.apply(LbApply.of((balancer(port, servers_of(targets, "t0")),)))
    first = (await show_proc(manager)).master
    os.killpg(first, signal.SIGKILL)
    error = await until(lambda: (r := reports.last()) and r.state is LbState.ERROR and r, 10,
                        "the error report")
    assert error.message is not None and "exited unexpectedly" in error.message
    again = await until(lambda: (r := reports.last()) and r.state is LbState.RUNNING and r, 20,
                        "the restart")
    assert again.pid not in (None, first) and again.config_version == "1"
    assert await served(port, 3) == {"t0"}


async def _served_certificate(port: int, server_name: str | None) -> str:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context,
                                              server_hostname=server_name)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(
        NameOID.COMMON_NAME)
    return str(names[0].value)


async def test_https_serves_the_certificate_the_client_names_and_the_default_otherwise(
        manager: LbManager, reports: Reports, targets: list[Target], base: Path) -> None:
    port = free_port()
    plain = balancer(port, servers_of(targets, "t0"))
    secure = replace(plain, rules=(PortRule(port, "https", "web"),), certificates=(
        Certificate("www", certificate_pem("www.example.com")),
        Certificate("api", certificate_pem("api.example.com"))), default_certificate="www")
    await manager.apply(LbApply.of((secure,)))
    assert (r := reports.last()) is not None and r.state is LbState.RUNNING, r
    assert await _served_certificate(port, "api.example.com") == "api.example.com"
    assert await _served_certificate(port, "www.example.com") == "www.example.com"
    assert await _served_certificate(port, "other.example.org") == "www.example.com"
    certificates = sorted(p for p in (base / UUID).rglob("*.pem"))
    assert len(certificates) == 2 and all(p.stat().st_mode & 0o077 == 0 for p in certificates)


@pytest.mark.parametrize("golden", sorted(p.name for p in GOLDEN_DIR.glob("*.cfg")))
def test_every_golden_config_is_accepted_by_haproxy(golden: str, base: Path) -> None:
    text = (GOLDEN_DIR / golden).read_text().replace(GOLDEN_BASE, str(base))
    for word in text.split():
        if word.startswith(f"{base}/certs") and word.endswith(".pem"):
            Path(word).parent.mkdir(parents=True, exist_ok=True)
            Path(word).write_text(certificate_pem(Path(word).stem))
        elif word.startswith(f"{base}/certs") and word.endswith("/"):
            Path(word).mkdir(parents=True, exist_ok=True)
            (Path(word) / "extra.pem").write_text(certificate_pem("extra.example.com"))
    config = base / "haproxy.cfg"
    config.write_text(text)
    result = subprocess.run([HAPROXY, "-c", "-q", "-f", str(config)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
