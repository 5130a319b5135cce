"""Agent-scale benchmark: one real server keeping N simulated agents alive with pings.

Starts ``corral-server`` on 127.0.0.1 with a temporary data dir, measures it idle, registers
N simulated agents and connects them all from this process (each says ``hello``, waits for
``welcome``, answers pings with pongs and any ``request`` with an empty ``reply``), checks
through the API that every host is ``active``, then measures the server's memory, CPU and
database writes over a steady window of pings. Only the server process is measured.

    .venv/bin/python bench/agents.py [--agents 1000] [--duration 60] [--ping-interval 5]
                                     [--port 0] [--write-docs]

Exit status: 0 when every check passed (and the targets, where they apply), 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import datetime
import hashlib
import os
import platform
import re
import resource
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import aiohttp
import psutil
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from shared import protocol
from shared.containers import ContainerState, ContainerStatus
from shared.errors import ProtocolError

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
MARK_START, MARK_END = "<!-- bench:agents:start -->", "<!-- bench:agents:end -->"
LOOPBACK = "127.0.0.1"
ADMIN_ACCESS, ADMIN_SECRET = "benchadmin", "bench-admin-secret-not-for-production"
MIB = 1024 * 1024
CONCURRENCY = 50  # registrations, and websocket handshakes, in flight at once
SPARE_FDS = 256  # descriptors beyond one per agent: server files, HTTP client, logs
STARTUP_TIMEOUT = 30.0
PHASE_TIMEOUT = 600.0  # registering or connecting every agent
SHUTDOWN_LIMIT = 10.0
MAX_PAGES = 100
PR_SET_PDEATHSIG = 1
# The targets hold at this scale; smaller runs are smoke tests and report figures only.
TARGET_AGENTS, TARGET_PING = 1000, 5.0
TARGET_RSS_MIB, TARGET_CPU_PERCENT = 150.0, 25.0
# At ten times the agents, memory is what must stay bounded (the CPU is reported only).
LARGE_AGENTS, LARGE_RSS_MIB = 10_000, 400.0


class BenchError(Exception):
    """The benchmark could not run to the end; the message says which step failed."""


# --- the server process ------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the server child (Linux): be killed if this benchmark dies without cleaning up."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class BenchProcess:
    """A subprocess under measurement, stopped with SIGTERM and timed, killed if it hangs."""

    _proc: subprocess.Popen[bytes] | None = None

    async def stop(self) -> tuple[float | None, int | None]:
        """SIGTERM; the seconds the process took to exit (None if it had to be killed) and
        its exit status."""
        if self._proc is None or self._proc.poll() is not None:
            return None, self._proc.returncode if self._proc is not None else None
        started = time.monotonic()
        self._proc.send_signal(signal.SIGTERM)
        while time.monotonic() - started < SHUTDOWN_LIMIT:
            if self._proc.poll() is not None:
                return time.monotonic() - started, self._proc.returncode
            await asyncio.sleep(0.02)
        self.kill()
        return None, self._proc.returncode

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)


class ServerProcess(BenchProcess):
    """A ``corral-server`` subprocess on loopback, its log in a file, always stopped."""

    def __init__(self, data_dir: Path, port: int, ping_interval: float, log_path: Path,
                 log_level: str = "INFO") -> None:
        self.data_dir, self.port, self.log_path = data_dir, port, log_path
        self.log_level = log_level
        self.base_url = f"http://{LOOPBACK}:{port}"
        self._ping_interval = ping_interval
        self._proc: subprocess.Popen[bytes] | None = None

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
        env.update(CORRAL_ADMIN_ACCESS_KEY=ADMIN_ACCESS, CORRAL_ADMIN_SECRET_KEY=ADMIN_SECRET,
                   CORRAL_PING_INTERVAL=f"{self._ping_interval:g}")
        return env

    def _command(self, *args: str) -> list[str]:
        return [sys.executable, "-c", "from server.cli import main; main()", *args,
                "--data-dir", str(self.data_dir)]

    def start(self) -> psutil.Process:
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                self._command("serve", "--host", LOOPBACK, "--port", str(self.port),
                              "--log-level", self.log_level),
                cwd=ROOT, env=self._env(), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
        return psutil.Process(self._proc.pid)

    async def wait_healthy(self, http: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise BenchError("the server exited at start-up")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(f"{self.base_url}/healthz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise BenchError(f"the server did not answer /healthz within {STARTUP_TIMEOUT:g} s")

    async def registration_token(self) -> str:
        """The token, read the way an operator would: ``corral-server registration-command``."""
        proc = await asyncio.create_subprocess_exec(
            *self._command("registration-command", "--public-url", self.base_url), cwd=ROOT,
            env=self._env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), STARTUP_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise BenchError("registration-command did not finish") from None
        found = re.search(r"/v1/scripts/([A-Za-z0-9_-]+)", out.decode())
        if proc.returncode != 0 or found is None:
            raise BenchError(f"registration-command failed: {err.decode().strip()}")
        return found.group(1)

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def log_lines(self, start: int = 0, end: int | None = None) -> list[str]:
        data = self.log_path.read_bytes()[start:end]
        return data.decode(errors="replace").splitlines()


# --- measurements ------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """The server's memory and CPU over one window, sampled once a second."""

    seconds: float
    rss_peak: int
    rss_end: int
    cpu_seconds: float
    cpu_peak_second: float  # the busiest one-second sample, % of one core

    @property
    def cpu_percent(self) -> float:
        return 100.0 * self.cpu_seconds / self.seconds


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


async def measure(proc: psutil.Process, seconds: float) -> Usage:
    started, cpu_start = time.monotonic(), _cpu(proc)
    peak = proc.memory_info().rss
    rss, last_wall, last_cpu, busiest = peak, started, cpu_start, 0.0
    deadline = started + seconds
    for _ in range(int(seconds) + 2):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        await asyncio.sleep(min(1.0, left))
        wall, cpu, rss = time.monotonic(), _cpu(proc), proc.memory_info().rss
        peak = max(peak, rss)
        busiest = max(busiest, 100.0 * (cpu - last_cpu) / max(wall - last_wall, 1e-6))
        last_wall, last_cpu = wall, cpu
    return Usage(seconds=last_wall - started, rss_peak=peak, rss_end=rss,
                 cpu_seconds=last_cpu - cpu_start, cpu_peak_second=busiest)


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def db_counters(db_path: Path) -> tuple[int, int]:
    """(rows, sum of row versions) of the resource table: every insert or update moves one."""
    uri = f"{db_path.as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as db:
        rows, versions = db.execute(
            "SELECT count(*), coalesce(sum(version), 0) FROM resource").fetchone()
    return int(rows), int(versions)


DEFAULT_POOL_HOSTS = 256  # 10.42.0.0/16 in /24s
LARGE_POOL = "10.0.0.0/8"  # 65,536 /24s


async def size_the_pool(http: aiohttp.ClientSession, base_url: str, hosts: int) -> str | None:
    """Give the managed network a subnet for every simulated host, as an operator of that
    many would (the default pool holds 256): the pool set, or None if the default does."""
    if hosts <= DEFAULT_POOL_HOSTS:
        return None
    auth = {"Authorization": basic_auth(ADMIN_ACCESS, ADMIN_SECRET)}
    async with http.get(f"{base_url}/v1/networkdrivers?name=vxlan", headers=auth) as resp:
        driver = (await resp.json())["data"][0]
    async with http.put(f"{base_url}/v1/networkdrivers/{driver['id']}", headers=auth,
                        json={"networkMetadata": {"subnetPool": LARGE_POOL}}) as resp:
        if resp.status != 200:
            raise BenchError(f"setting the managed pool: {resp.status} {await resp.text()}")
    return LARGE_POOL


async def host_states(http: aiohttp.ClientSession, base_url: str) -> dict[str, str]:
    """Every host's ``agentState``, read page by page through the API as the admin."""
    auth = {"Authorization": basic_auth(ADMIN_ACCESS, ADMIN_SECRET)}
    url: str | None = f"{base_url}/v1/hosts?limit=1000"
    states: dict[str, str] = {}
    for _ in range(MAX_PAGES):
        if url is None:
            break
        async with http.get(url, headers=auth) as resp:
            if resp.status != 200:
                raise BenchError(f"GET {url} answered {resp.status}: {await resp.text()}")
            body = await resp.json()
        states.update({h["id"]: str(h.get("agentState")) for h in body["data"]})
        url = body["pagination"]["next"]
    return states


# --- simulated agents --------------------------------------------------------------------


@dataclass
class SimAgent:
    """One simulated host: its key, its credentials, and once connected its session."""

    index: int
    key: str
    host_id: str = ""
    auth: str = ""
    agent_url: str = ""
    ws: ClientConnection | None = None
    task: asyncio.Task[None] | None = None
    closed_early: bool = False
    replies: int = 0
    bad_messages: list[str] = field(default_factory=list)


def _facts(index: int) -> dict[str, object]:
    """Small but realistic facts, shaped like the real agent's (agent/host_facts.py)."""
    return {"hostname": f"sim-{index}", "labels": {}, "info": {
        "osInfo": {"operatingSystem": "Debian GNU/Linux 12 (bookworm)", "distribution": "debian",
                   "version": "12", "kernelVersion": "6.1.0-18-amd64",
                   "dockerVersion": "24.0.7"},
        "cpuInfo": {"count": 2, "mhz": 2400.0, "modelName": "Simulated CPU",
                    "loadAvg": [0.1, 0.05, 0.01]},
        "memoryInfo": {"memTotal": 7821, "memAvailable": 6120, "swapTotal": 0},
        "diskInfo": {"mountPoints": {"/": {"total": 51200, "used": 10240, "free": 40960,
                                           "percentage": 20.0}}},
        "dockerInfo": {"version": "24.0.7", "apiVersion": "1.43", "containers": 0,
                       "containersRunning": 0, "images": 0, "rootDir": "/var/lib/docker"}}}


# What a container is after each instruction that reports one, as Docker would have it.
_STATUS_AFTER = {"instance.create": ContainerStatus.CREATED,
                 "instance.start": ContainerStatus.RUNNING,
                 "instance.restart": ContainerStatus.RUNNING,
                 "instance.stop": ContainerStatus.EXITED}


def _answer(request: protocol.Request) -> protocol.JsonObject:
    """A reply a real agent could give at once: the container state after a container
    instruction, nothing for any other."""
    status = _STATUS_AFTER.get(request.name)
    if status is None:
        return {}
    spec = request.data.get("container") or {}
    uuid = str(spec.get("uuid") or request.data.get("uuid") or request.resource_id)
    return ContainerState(docker_id=hashlib.sha256(uuid.encode()).hexdigest(), uuid=uuid,
                          name=spec.get("name"), image=spec.get("image"),
                          status=status).dump()


class Fleet:
    """N simulated agents driven from this process, a bounded number of handshakes at once."""

    def __init__(self, count: int, base_url: str, token: str, compression: str | None) -> None:
        run = secrets.token_hex(8)
        self._compression = compression
        self.agents = [SimAgent(i, f"bench-{run}-{i:06d}-{secrets.token_hex(8)}")
                       for i in range(count)]
        self._base_url, self._token = base_url, token
        self._gate = asyncio.Semaphore(CONCURRENCY)

    async def register(self, http: aiohttp.ClientSession) -> None:
        auth = {"Authorization": basic_auth("registrationToken", self._token)}

        async def one(agent: SimAgent) -> None:
            async with self._gate, http.post(f"{self._base_url}/v1/register", headers=auth,
                                             json={"key": agent.key}) as resp:
                if resp.status != 200:
                    raise BenchError(f"registering agent {agent.index} answered {resp.status}:"
                                     f" {await resp.text()}")
                body = await resp.json()
            agent.auth = basic_auth(body["accessKey"], body["secretKey"])
            agent.host_id, agent.agent_url = body["hostId"], body["agentUrl"]
            if not agent.agent_url.startswith(f"ws://{LOOPBACK}:"):
                raise BenchError(f"the server handed out a non-loopback URL {agent.agent_url}")

        await asyncio.wait_for(asyncio.gather(*(one(a) for a in self.agents)), PHASE_TIMEOUT)

    async def connect(self) -> None:
        async def one(agent: SimAgent) -> None:
            async with self._gate:
                ws = await connect(agent.agent_url, ping_interval=None, open_timeout=60,
                                   close_timeout=5, max_size=protocol.MAX_FRAME_BYTES,
                                   compression=self._compression,
                                   additional_headers={"Authorization": agent.auth})
                agent.ws = ws
                await ws.send(protocol.dump(protocol.Hello(agent_version="bench",
                                                           facts=_facts(agent.index))))
                welcome = protocol.parse(await asyncio.wait_for(ws.recv(), 60))
            if not isinstance(welcome, protocol.Welcome) or welcome.host_id != agent.host_id:
                raise BenchError(f"agent {agent.index} got {welcome!r} instead of its welcome")
            agent.task = asyncio.create_task(self._serve(agent, ws))

        await asyncio.wait_for(asyncio.gather(*(one(a) for a in self.agents)), PHASE_TIMEOUT)

    async def _serve(self, agent: SimAgent, ws: ClientConnection) -> None:
        """Answer instructions; pongs are sent by the websockets library as pings arrive."""
        try:
            async for text in ws:
                try:
                    message = protocol.parse(text)
                except ProtocolError as exc:
                    agent.bad_messages.append(str(exc))
                    continue
                if isinstance(message, protocol.Request):
                    await ws.send(protocol.dump(protocol.Reply(request_id=message.id,
                                                               data=_answer(message))))
                    agent.replies += 1
        except ConnectionClosed:
            pass
        agent.closed_early = True

    @property
    def dropped(self) -> int:
        return sum(a.closed_early for a in self.agents)

    @property
    def bad_messages(self) -> list[str]:
        return [m for a in self.agents for m in a.bad_messages]

    async def close(self) -> None:
        for agent in self.agents:
            if agent.task is not None:
                agent.task.cancel()
        sockets = [a.ws for a in self.agents if a.ws is not None]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(ws.close() for ws in sockets),
                                                  return_exceptions=True), 30)


# --- one run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """Everything one run found; ``rows``, ``checks`` and ``targets`` render it."""

    agents: int
    ping_interval: float
    compression: str
    baseline: Usage
    rss_registered: int
    steady: Usage
    register_seconds: float
    connect_seconds: float
    active_before: int
    active_after: int
    dropped: int
    rows_written: int
    versions_written: int
    liveness_changes: list[str]
    shutdown_seconds: float | None
    exit_status: int | None
    problems: list[str]
    bad_messages: list[str]
    bench_cpu_percent: float

    @property
    def rss_per_agent_kib(self) -> float:
        return (self.steady.rss_peak - self.baseline.rss_peak) / 1024 / self.agents

    @property
    def targets_apply(self) -> bool:
        return self.agents >= TARGET_AGENTS and self.ping_interval <= TARGET_PING

    def checks(self) -> list[tuple[str, bool]]:
        """Correctness checks; every run must pass them."""
        n = self.agents
        return [(f"all {n} hosts active after connecting", self.active_before == n),
                (f"all {n} hosts still active after the window", self.active_after == n),
                ("no agent session closed by the server", self.dropped == 0),
                ("no liveness change during the window", not self.liveness_changes),
                ("no database write during the window", self.versions_written == 0),
                (f"server exits within {SHUTDOWN_LIMIT:g} s of SIGTERM",
                 self.shutdown_seconds is not None),
                ("server exit status 0", self.exit_status == 0),
                ("no ERROR or Traceback in the server log", not self.problems),
                ("every server message parsed", not self.bad_messages)]

    def targets(self) -> list[tuple[str, bool]]:
        rss = self.steady.rss_peak / MIB
        if self.agents >= LARGE_AGENTS:
            return [(f"server RSS under {LARGE_RSS_MIB:g} MiB ({rss:.1f} MiB)",
                     rss < LARGE_RSS_MIB)]
        return [(f"server RSS under {TARGET_RSS_MIB:g} MiB ({rss:.1f} MiB)",
                 rss < TARGET_RSS_MIB),
                (f"server CPU under {TARGET_CPU_PERCENT:g}% of one core "
                 f"({self.steady.cpu_percent:.1f}%)",
                 self.steady.cpu_percent < TARGET_CPU_PERCENT)]

    def passed(self) -> bool:
        verdicts = self.checks() + (self.targets() if self.targets_apply else [])
        return all(ok for _, ok in verdicts)

    def rows(self) -> list[tuple[str, str]]:
        b, s = self.baseline, self.steady
        shutdown = f"{self.shutdown_seconds:.2f} s" if self.shutdown_seconds is not None \
            else f"did not exit within {SHUTDOWN_LIMIT:g} s (killed)"
        shutdown += f", exit status {self.exit_status}"
        return [
            ("Agents", f"{self.agents:,}"),
            ("Ping interval", f"{self.ping_interval:g} s"),
            ("Websocket compression offered", self.compression),
            ("Steady window", f"{s.seconds:.0f} s (~{s.seconds / self.ping_interval:.0f} "
                              f"ping rounds)"),
            ("Idle RSS (0 agents, peak)", f"{b.rss_peak / MIB:.1f} MiB"),
            ("Idle CPU (0 agents)", f"{b.cpu_percent:.2f}% of one core over {b.seconds:.0f} s"),
            ("RSS after registering, before connecting", f"{self.rss_registered / MIB:.1f} MiB"),
            ("RSS with agents (peak / end)", f"{s.rss_peak / MIB:.1f} / {s.rss_end / MIB:.1f} MiB"),
            ("RSS per agent", f"{self.rss_per_agent_kib:.1f} KiB ((peak - idle) / N)"),
            ("RSS with agents / idle", f"{s.rss_peak / b.rss_peak:.2f}x"),
            ("CPU with agents", f"{s.cpu_percent:.2f}% of one core "
                                f"(busiest second {s.cpu_peak_second:.1f}%)"),
            ("Registration", f"{self.register_seconds:.2f} s "
                             f"({self.agents / self.register_seconds:.0f}/s, "
                             f"{CONCURRENCY} at a time)"),
            ("Connection (handshake, hello, welcome)",
             f"{self.connect_seconds:.2f} s ({self.agents / self.connect_seconds:.0f}/s, "
             f"{CONCURRENCY} at a time)"),
            ("DB writes in the window", f"{self.versions_written} row versions, "
                                        f"{self.rows_written} new rows"),
            ("Hosts active (before / after)", f"{self.active_before} / {self.active_after}"),
            ("Shutdown after SIGTERM (agents connected)", shutdown),
            ("Load generator CPU (not the server)", f"{self.bench_cpu_percent:.1f}% of one core"),
        ]


def raise_fd_limit(agents: int) -> None:
    """One descriptor per websocket here, and one per agent in the server (it inherits this)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    available = hard if hard != resource.RLIM_INFINITY else sys.maxsize
    if available < agents + SPARE_FDS:
        raise BenchError(f"{agents} agents need {agents + SPARE_FDS} open files but the hard "
                         f"limit is {hard}; raise it (ulimit -Hn) or run fewer agents")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _liveness_changes(lines: list[str]) -> list[str]:
    return [line for line in lines if re.search(r"agent \w+ -> \w+", line)]


def _problems(lines: list[str]) -> list[str]:
    return [line for line in lines if "ERROR" in line or "Traceback" in line]


async def run(args: argparse.Namespace, log_path: Path) -> Report:
    raise_fd_limit(args.agents)
    task = asyncio.current_task()
    assert task is not None
    # SIGTERM (like Ctrl-C) cancels the run, so that the server is still stopped.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    me = psutil.Process()
    fleet: Fleet | None = None
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        server = ServerProcess(Path(tmp) / "data", args.port or free_port(),
                               args.ping_interval, log_path)
        try:
            proc = server.start()
            timeout = aiohttp.ClientTimeout(total=60)
            connector = aiohttp.TCPConnector(limit=CONCURRENCY)
            async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
                await server.wait_healthy(http)
                token = await server.registration_token()
                print(f"server pid {proc.pid} on {server.base_url}; idle for "
                      f"{args.baseline:g} s", flush=True)
                baseline = await measure(proc, args.baseline)

                compression = None if args.compression == "none" else args.compression
                await size_the_pool(http, server.base_url, args.agents)
                fleet = Fleet(args.agents, server.base_url, token, compression)
                started = time.monotonic()
                await fleet.register(http)
                registered = time.monotonic()
                rss_registered = proc.memory_info().rss
                await fleet.connect()
                connected = time.monotonic()
                print(f"{args.agents} agents registered in {registered - started:.1f} s, "
                      f"connected in {connected - registered:.1f} s", flush=True)
                wanted = {a.host_id for a in fleet.agents}
                states = await host_states(http, server.base_url)
                active_before = sum(states.get(h) == "active" for h in wanted)

                db_path = server.data_dir / "corral.db"
                rows0, versions0 = db_counters(db_path)
                log_mark = server.log_size()
                print(f"steady window of {args.duration:g} s", flush=True)
                me_cpu = _cpu(me)
                steady = await measure(proc, args.duration)
                bench_cpu = 100.0 * (_cpu(me) - me_cpu) / steady.seconds
                rows1, versions1 = db_counters(db_path)
                window_lines = server.log_lines(log_mark, server.log_size())
                states = await host_states(http, server.base_url)
                active_after = sum(states.get(h) == "active" for h in wanted)
                dropped, bad_messages = fleet.dropped, fleet.bad_messages
            # With every agent still connected: the server closes each session itself.
            shutdown, exit_status = await server.stop()
            await fleet.close()
            fleet = None
        finally:
            if fleet is not None:
                await fleet.close()
            server.kill()
    return Report(
        agents=args.agents, ping_interval=args.ping_interval, compression=args.compression,
        baseline=baseline, rss_registered=rss_registered, steady=steady,
        register_seconds=registered - started, connect_seconds=connected - registered,
        active_before=active_before, active_after=active_after, dropped=dropped,
        rows_written=rows1 - rows0, versions_written=versions1 - versions0,
        liveness_changes=_liveness_changes(window_lines), shutdown_seconds=shutdown,
        exit_status=exit_status,
        problems=_problems(server.log_lines()), bad_messages=bad_messages,
        bench_cpu_percent=bench_cpu)


# --- output ------------------------------------------------------------------------------


def _machine() -> str:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = psutil.virtual_memory().total / 1024**3
    return (f"{os.cpu_count()} cores ({model}), {memory:.0f} GiB RAM, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}")


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_summary(report: Report) -> None:
    print()
    print(f"Agents benchmark: {_machine()}")
    width = max(len(label) for label, _ in report.rows())
    for label, value in report.rows():
        print(f"  {label:<{width}}  {value}")
    print("Checks:")
    for name, ok in report.checks():
        print(f"  {_verdict(ok)}  {name}")
    heading = "Targets (1,000 agents at 5 s pings):" if report.targets_apply else \
        f"Targets (apply to {TARGET_AGENTS:,} agents at {TARGET_PING:g} s pings; shown only):"
    print(heading)
    for name, ok in report.targets():
        print(f"  {_verdict(ok) if report.targets_apply else 'n/a '}  {name}")
    for line in report.liveness_changes[:10]:
        print(f"  liveness change: {line}")
    for line in report.problems[:20]:
        print(f"  server log: {line}")
    for text in report.bad_messages[:5]:
        print(f"  bad message from the server: {text}")


INTRO = """# Benchmarks

Scripts in `bench/` start a real `corral-server` on 127.0.0.1 with a temporary data dir and
drive it from outside the process. They measure the processes under test from outside (RSS and
CPU time read with psutil, rows written to the SQLite database): the server, and for containers
also the agent and the Docker engine it drives. Run one with `--write-docs` to
replace its own section below, kept between `<!-- bench:NAME:start -->` and
`<!-- bench:NAME:end -->` markers so that each benchmark owns one section.

- **Agents** (`bench/agents.py`): the server keeping N simulated agents alive with websocket
  pings. It measures the idle and loaded RSS and CPU, RSS per agent, registration and
  connection times, database writes during the steady window (there should be none: liveness
  lives in memory) and the shutdown time, and checks that no host dropped out of `active`.
  Run `.venv/bin/python bench/agents.py [--agents 1000] [--duration 60] [--ping-interval 5]
  [--write-docs]` (about two minutes); `--agents 50 --duration 10` is a quick check.
- **Agents at scale**: the same script with `--agents 10000` writes a section of its own: RSS
  under 400 MiB and a clean exit within 10 s of SIGTERM with every agent connected.
- **Placement** (`bench/placement.py`): containers created through the API over N simulated
  hosts (their agents answer every instruction at once) until the environment holds C of them.
  It reports creates accepted per second while filling, containers carried out to the end
  (created and started) per second, the cost of one placement (median of creates one at a
  time, with the engine idle) at 1,000 and at C containers, and how evenly they spread. Run
  `.venv/bin/python bench/placement.py [--agents 1000] [--containers 10000] [--write-docs]`.

The figures are absolutes and ratios from one run on the machine named in each section (a
2-core machine, where the load generator shares the cores with the server). Compare runs on
the same machine; the ratios (loaded / idle) and per-agent figures travel better than the
absolutes.
"""


def _marks(agents: int) -> tuple[str, str]:
    """The section of the docs a run writes: one for 1,000 agents, one for 10,000."""
    if agents >= LARGE_AGENTS:
        return "<!-- bench:agents-large:start -->", "<!-- bench:agents-large:end -->"
    return MARK_START, MARK_END


def docs_section(report: Report, args: argparse.Namespace) -> str:
    today = datetime.date.today().isoformat()
    start, end = _marks(report.agents)
    title = "## Agents at scale: one server, 10,000 simulated agents" \
        if report.agents >= LARGE_AGENTS else "## Agents: one server, N simulated agents"
    lines = [start, title, "",
             f"Measured {today} in one run of `bench/agents.py --agents {report.agents} "
             f"--duration {args.duration:g} --ping-interval {report.ping_interval:g} "
             f"--compression {report.compression}`",
             f"on {_machine()}."
             + (f" The managed network's pool is set to {LARGE_POOL} first, so that every host "
                "gets a subnet (the default pool holds 256)."
                if report.agents > DEFAULT_POOL_HOSTS else ""),
             "MiB = 2^20 bytes; CPU is the server's CPU time over wall time, in % of one core.",
             "",
             "| Figure | Value |", "| --- | --- |"]
    lines += [f"| {label} | {value} |" for label, value in report.rows()]
    lines += ["", "| Check | Result |", "| --- | --- |"]
    lines += [f"| {name} | {_verdict(ok)} |" for name, ok in report.checks()]
    scope = "" if report.targets_apply else \
        " (they apply to 1,000 agents at 5 s pings; this run is smaller, so not judged)"
    if report.agents >= LARGE_AGENTS:
        lines += ["", f"Targets: server RSS under {LARGE_RSS_MIB:g} MiB with "
                      f"{LARGE_AGENTS:,} agents, and a clean exit within {SHUTDOWN_LIMIT:g} s "
                      "of SIGTERM (a check above)."]
    else:
        lines += ["", f"Targets: server RSS under {TARGET_RSS_MIB:g} MiB and under "
                      f"{TARGET_CPU_PERCENT:g}% of one core with 1,000 agents at 5 s "
                      f"pings{scope}."]
    lines += ["", "| Target | Result |", "| --- | --- |"]
    lines += [f"| {name} | {_verdict(ok) if report.targets_apply else 'n/a'} |"
              for name, ok in report.targets()]
    return "\n".join([*lines, end])


def write_section(section: str, start_mark: str, end_mark: str,
                  prepare: Callable[[str], str] = lambda text: text) -> None:
    """Replace one benchmark's section of the docs (between its markers), or append it."""
    text = prepare(DOCS.read_text() if DOCS.exists() else INTRO)
    start, end = text.find(start_mark), text.find(end_mark)
    if start != -1 and end > start:
        text = text[:start] + section + text[end + len(end_mark):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text(text)


def write_docs(section: str, agents: int) -> None:
    write_section(section, *_marks(agents))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=1000, help="simulated agents (1000)")
    parser.add_argument("--duration", type=float, default=60.0,
                        help="seconds of the steady window (60)")
    parser.add_argument("--ping-interval", type=float, default=5.0,
                        help="the server's ping interval in seconds (5)")
    parser.add_argument("--compression", choices=["deflate", "none"], default="deflate",
                        help="websocket compression the agents offer (deflate, as the real "
                             "agent does with websockets' defaults)")
    parser.add_argument("--baseline", type=float, default=10.0,
                        help="seconds of the idle measurement (10)")
    parser.add_argument("--port", type=int, default=0, help="server port (0: pick a free one)")
    parser.add_argument("--write-docs", action="store_true",
                        help=f"replace the agents section of {DOCS.relative_to(ROOT)}")
    return parser


R = TypeVar("R")


def run_benchmark(prog: str, run: Callable[[Path], Awaitable[R]]) -> tuple[R, Path, float]:
    """Run ``run`` with a temporary server log: its result, the log, and when it began.
    A run that cannot finish exits with one line (after the log's last lines)."""
    fd, name = tempfile.mkstemp(prefix="corral-bench-server-", suffix=".log")
    os.close(fd)
    log_path = Path(name)
    began = time.monotonic()
    try:
        return asyncio.run(run(log_path)), log_path, began
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit(f"{prog}: interrupted (server log: {log_path})")
    except BenchError as exc:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        if tail:
            print("\n".join(["last lines of the server log:", *tail]), file=sys.stderr)
        sys.exit(f"{prog}: {exc} (server log: {log_path})")


def finish(passed: bool, log_path: Path, began: float) -> None:
    """Keep the server log of a run that failed a check, and say so in the exit status."""
    print(f"Run time {time.monotonic() - began:.0f} s; server log {log_path}")
    if not passed:
        sys.exit(1)
    log_path.unlink()


def main() -> None:
    args = _parser().parse_args()
    if args.agents < 1 or args.duration < 1 or args.baseline < 1 or args.ping_interval <= 0:
        sys.exit("bench/agents.py: --agents, --duration and --baseline must be at least 1")
    report, log_path, began = run_benchmark("bench/agents.py", lambda log: run(args, log))
    print_summary(report)
    if args.write_docs:
        write_docs(docs_section(report, args), report.agents)
        print(f"wrote the agents section of {DOCS}")
    finish(report.passed(), log_path, began)


if __name__ == "__main__":
    main()
