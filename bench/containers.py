"""Container-start benchmark: time from an API call to a running container, against ``docker run``.

Starts ``corral-server`` on 127.0.0.1 with a temporary data dir and a real ``corral-agent`` for
this machine's Docker engine (temporary state dir), waits for the host to be active and makes
sure the test image is present (built locally, never pulled). Then it starts ``--count``
containers through the API, one after another: each ``POST /v1/containers`` is timed until
``GET /v1/containers/<id>``, polled every 10 ms, shows ``state == running``. In the same run, in
alternating batches so that machine noise falls on both alike, it starts ``--count``
containers with ``docker run -d`` (the CLI, as a subprocess), each timed until the command
returns, when the container runs. Docker's own ``StartedAt`` and the durations the agent and
the server log for each instruction show where the API's time goes.

    .venv/bin/python bench/containers.py [--count 50] [--batch 10] [--warmup 1] [--write-docs]

Every container carries the label ``corral.bench=<run id>`` and is removed at the end
(``docker rm -f``), as the agent and the server are stopped, also when the run fails.
Exit status: 0 when every check and target passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil

# Run as a script (``python bench/containers.py``), so bench/ itself is on sys.path.
from agents import (
    ADMIN_ACCESS,
    ADMIN_SECRET,
    MIB,
    SHUTDOWN_LIMIT,
    STARTUP_TIMEOUT,
    BenchError,
    BenchProcess,
    ServerProcess,
    _cpu,
    _die_with_parent,
    _machine,
    _verdict,
    basic_auth,
    free_port,
    write_section,
)

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
MARK_START, MARK_END = "<!-- bench:containers:start -->", "<!-- bench:containers:end -->"
IMAGE = "corral-test/busybox:latest"
# Exits promptly on SIGTERM (a bare `sleep` as pid 1 ignores it); as in tests/e2e/cluster.py.
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
LABEL = "corral.bench"
POLL_INTERVAL = 0.010
CONTAINER_TIMEOUT = 30.0  # one container, from the call to running
DOCKER_TIMEOUT = 60.0  # one docker CLI command
CLEANUP_TIMEOUT = 120.0
PING_INTERVAL = 5.0  # the server's default
WRAP = 96  # prose width in docs/benchmarks.md
TARGET_RATIO, TARGET_P99 = 1.5, 1.0
FAILED_STATES = frozenset({"error", "stopped", "removed", "purged"})
# "instance.create on container 1i5 took 41 ms" (server) and
# "instruction instance.create container 1i5: ok in 38 ms" (agent), both at INFO.
SERVER_CALL = re.compile(r"(instance\.\w+) on container (\w+) took (\d+) ms")
AGENT_CALL = re.compile(r"instruction (instance\.\w+) container (\w+): ok in (\d+) ms")


# --- the agent process -------------------------------------------------------------------


class AgentProcess(BenchProcess):
    """A ``corral-agent`` subprocess for this machine's Docker engine, its log in a file."""

    def __init__(self, state_dir: Path, log_path: Path) -> None:
        self.state_dir, self.log_path = state_dir, log_path
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, registration_url: str) -> psutil.Process:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", "from agent.cli import main; main()", registration_url,
                 "--state-dir", str(self.state_dir), "--log-level", "DEBUG"],
                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
        return psutil.Process(self._proc.pid)

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()


# --- docker and the API ------------------------------------------------------------------


async def docker(*args: str, timeout: float = DOCKER_TIMEOUT) -> str:
    """Run the docker CLI and return its output; BenchError if it fails or overruns."""
    proc = await asyncio.create_subprocess_exec(
        "docker", *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        raise BenchError(f"docker {args[0]} did not finish within {timeout:g} s") from None
    finally:
        if proc.returncode is None:  # timed out, or the run was cancelled: leave no CLI behind
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise BenchError(f"docker {' '.join(args[:2])} failed: {err.decode().strip()}")
    return out.decode().strip()


async def remove_labelled(run_id: str) -> int:
    """Remove every container of this run; how many are left afterwards (0 when all went)."""
    label = f"label={LABEL}={run_id}"
    ids = (await docker("ps", "-aq", "--filter", label)).split()
    if ids:
        await docker("rm", "-f", *ids, timeout=CLEANUP_TIMEOUT)
    return len((await docker("ps", "-aq", "--filter", label)).split())


async def api_json(http: aiohttp.ClientSession, method: str, url: str,
                   body: dict[str, Any] | None = None) -> dict[str, Any]:
    async with http.request(method, url, json=body) as resp:
        if resp.status >= 300:
            raise BenchError(f"{method} {url} answered {resp.status}: {await resp.text()}")
        answer: dict[str, Any] = await resp.json()
        return answer


async def registration_url(http: aiohttp.ClientSession, api: str) -> str:
    tokens = (await api_json(http, "GET", f"{api}/registrationtokens"))["data"]
    active = [t for t in tokens if t.get("state") == "active" and t.get("registrationUrl")]
    if not active:
        raise BenchError("the Default environment has no active registration token")
    return str(active[0]["registrationUrl"])


async def wait_host_active(http: aiohttp.ClientSession, api: str, agent: AgentProcess) -> str:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if not agent.running():
            raise BenchError("the agent exited at start-up")
        hosts = (await api_json(http, "GET", f"{api}/hosts"))["data"]
        active = [h for h in hosts if h.get("state") == "active"]
        if active:
            return str(active[0]["id"])
        await asyncio.sleep(0.1)
    raise BenchError(f"no host became active within {STARTUP_TIMEOUT:g} s")


# --- samples and statistics --------------------------------------------------------------


def docker_time(value: object) -> float | None:
    """Docker's RFC 3339 time (nanoseconds, ``Z``) as epoch seconds; None for none."""
    if not isinstance(value, str) or not value or value.startswith("0001-01-01"):
        return None
    found = re.fullmatch(r"(.+T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", value)
    if found is None:
        return None
    whole, fraction, zone = found.groups()
    stamp = datetime.datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    return stamp.timestamp() + float(f"0.{fraction or 0}")


@dataclass(frozen=True)
class ApiSample:
    """One container through the API: seconds from just before the POST."""

    container_id: str
    post: float  # the POST answered (record created, not yet on the host)
    running: float  # the first GET that showed state == running
    docker_started: float | None  # Docker's StartedAt
    polls: int


@dataclass(frozen=True)
class DockerSample:
    """One ``docker run -d``: seconds from just before the CLI was started."""

    docker_id: str
    returned: float  # the command returned: the container runs
    docker_started: float | None  # Docker's StartedAt, read after the run


async def api_run(http: aiohttp.ClientSession, api: str, run_id: str) -> ApiSample:
    """Create one container and poll it until it runs."""
    body = {"imageUuid": f"docker:{IMAGE}", "command": SLEEPER, "labels": {LABEL: run_id}}
    wall, began = time.time(), time.monotonic()
    created = await api_json(http, "POST", f"{api}/containers", body)
    posted = time.monotonic() - began
    url, polls, next_poll = f"{api}/containers/{created['id']}", 0, time.monotonic()
    while True:
        record = await api_json(http, "GET", url)
        seen, polls = time.monotonic() - began, polls + 1
        if record.get("state") == "running":
            started = docker_time(record.get("startedAt"))
            return ApiSample(str(created["id"]), posted, seen,
                             None if started is None else started - wall, polls)
        if record.get("state") in FAILED_STATES or record.get("transitioning") == "error":
            raise BenchError(f"container {created['id']} ended {record.get('state')}: "
                             f"{record.get('transitioningMessage')}")
        if seen > CONTAINER_TIMEOUT:
            raise BenchError(f"container {created['id']} was not running after "
                             f"{CONTAINER_TIMEOUT:g} s (state {record.get('state')})")
        next_poll = max(next_poll + POLL_INTERVAL, time.monotonic())
        await asyncio.sleep(next_poll - time.monotonic())


async def docker_run(run_id: str) -> tuple[str, float, float]:
    """One ``docker run -d``: (its id, the wall time it began, seconds until it returned)."""
    wall, began = time.time(), time.monotonic()
    docker_id = await docker("run", "-d", "--label", f"{LABEL}={run_id}", IMAGE, *SLEEPER)
    return docker_id, wall, time.monotonic() - began


async def with_started_at(runs: list[tuple[str, float, float]]) -> list[DockerSample]:
    """Read every run's StartedAt in one ``docker inspect``, after the measurement."""
    if not runs:
        return []
    out = await docker("inspect", "--format", "{{.Id}} {{.State.StartedAt}}",
                       *(docker_id for docker_id, _, _ in runs))
    started = dict(line.split(" ", 1) for line in out.splitlines())
    samples = []
    for docker_id, wall, returned in runs:
        at = docker_time(started.get(docker_id))
        samples.append(DockerSample(docker_id, returned, None if at is None else at - wall))
    return samples


@dataclass(frozen=True)
class Stats:
    """Order statistics of one series, in seconds; percentiles interpolate linearly."""

    count: int
    median: float
    p90: float
    p99: float
    max: float
    min: float
    mean: float

    @classmethod
    def of(cls, values: list[float]) -> Stats:
        if not values:
            raise BenchError("no samples to summarise")
        cuts = statistics.quantiles(values, n=100, method="inclusive") \
            if len(values) > 1 else [values[0]] * 99
        return cls(len(values), statistics.median(values), cuts[89], cuts[98], max(values),
                   min(values), statistics.fmean(values))


def median_of(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def instruction_ms(lines: list[str], pattern: re.Pattern[str]) -> dict[tuple[str, str], float]:
    """{(instruction, container id): ms} from log lines; the last one wins."""
    found: dict[tuple[str, str], float] = {}
    for line in lines:
        match = pattern.search(line)
        if match is not None:
            found[(match.group(1), match.group(2))] = float(match.group(3))
    return found


# --- one run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """Everything one run found; ``rows``, ``checks`` and ``targets`` render it."""

    count: int
    batch: int
    warmup: int
    docker_version: str
    api: list[ApiSample]
    docker: list[DockerSample]
    server_ms: dict[tuple[str, str], float]
    agent_ms: dict[tuple[str, str], float]
    rss: dict[str, tuple[int, int]]  # process → (after the host came up, at the end)
    cpu: dict[str, float]  # process → CPU seconds during the measurement
    measure_seconds: float
    load: tuple[float, float]  # 1-minute load average before and after the measurement
    running_at_end: int
    left_over: int
    exits: dict[str, tuple[float | None, int | None]]
    problems: list[str]

    @property
    def api_stats(self) -> Stats:
        return Stats.of([s.running for s in self.api])

    @property
    def docker_stats(self) -> Stats:
        return Stats.of([s.returned for s in self.docker])

    @property
    def ratio(self) -> float:
        return self.api_stats.median / self.docker_stats.median

    def checks(self) -> list[tuple[str, bool]]:
        """Correctness checks; every run must pass them."""
        total = 2 * (self.count + self.warmup)
        verdicts = [(f"all {total} bench containers still running at the end",
                     self.running_at_end == total),
                    ("every bench container removed afterwards", self.left_over == 0)]
        for name, (seconds, status) in self.exits.items():
            verdicts += [(f"{name} exits within {SHUTDOWN_LIMIT:g} s of SIGTERM, status 0",
                          seconds is not None and status == 0)]
        return [*verdicts, ("no ERROR or Traceback in the server and agent logs",
                            not self.problems)]

    def targets(self) -> list[tuple[str, bool]]:
        p99 = self.api_stats.p99
        return [(f"median(API) / median(docker run) at most {TARGET_RATIO:g} "
                 f"({self.ratio:.2f})", self.ratio <= TARGET_RATIO),
                (f"p99 API under {TARGET_P99 * 1000:.0f} ms ({p99 * 1000:.0f} ms)",
                 p99 < TARGET_P99)]

    def passed(self) -> bool:
        return all(ok for _, ok in self.checks() + self.targets())

    def stats_rows(self) -> list[tuple[str, str, str]]:
        a, d = self.api_stats, self.docker_stats
        return [(name, f"{getattr(a, name) * 1000:.0f} ms", f"{getattr(d, name) * 1000:.0f} ms")
                for name in ("median", "p90", "p99", "max", "min", "mean")]

    def breakdown(self) -> list[tuple[str, str]]:
        """Medians of the API's steps, each from its own clock: they need not add up."""

        def ms(value: float | None) -> str:
            return "n/a" if value is None else f"{value * 1000:.0f} ms"

        def logged(source: dict[tuple[str, str], float], name: str) -> float | None:
            found = [source.get((name, s.container_id)) for s in self.api]
            return median_of([None if v is None else v / 1000 for v in found])

        def rest(sample: ApiSample) -> float | None:
            if sample.docker_started is None:
                return None
            return sample.running - sample.docker_started

        return [
            ("POST answered (record created)", ms(median_of([s.post for s in self.api]))),
            ("server: instance.create round trip", ms(logged(self.server_ms, "instance.create"))),
            ("agent: instance.create (find, image check, docker create, inspect)",
             ms(logged(self.agent_ms, "instance.create"))),
            ("server: instance.start round trip", ms(logged(self.server_ms, "instance.start"))),
            ("agent: instance.start (find, docker start, inspect)",
             ms(logged(self.agent_ms, "instance.start"))),
            ("Docker StartedAt, after the POST",
             ms(median_of([s.docker_started for s in self.api]))),
            ("running seen through the API, after StartedAt", ms(median_of(
                [rest(s) for s in self.api]))),
            ("GET polls per container", f"{statistics.median(s.polls for s in self.api):.0f}"),
            ("docker run: StartedAt after the command began",
             ms(median_of([s.docker_started for s in self.docker]))),
            ("docker run: returned after StartedAt", ms(median_of(
                [s.returned - s.docker_started if s.docker_started is not None else None
                 for s in self.docker]))),
        ]

    def rows(self) -> list[tuple[str, str]]:
        def exit_text(name: str) -> str:
            seconds, status = self.exits[name]
            stopped = f"{seconds:.2f} s" if seconds is not None else "killed"
            return f"{stopped}, exit status {status}"

        return [
            ("Containers per series", f"{self.count} (after {self.warmup} warm-up each, "
                                      f"in alternating batches of {self.batch})"),
            ("Docker engine", self.docker_version),
            ("Measurement", f"{self.measure_seconds:.1f} s for both series"),
            ("Load average (1 min) before / after", f"{self.load[0]:.2f} / {self.load[1]:.2f}"),
            ("Slowest API container", self._slowest()),
            ("Server RSS (host up / end)", self._rss("server")),
            ("Agent RSS (host up / end)", self._rss("agent")),
            ("Server CPU during the measurement", f"{self.cpu['server']:.1f} s "
             f"({sum(s.polls + 1 for s in self.api)} requests in the API series)"),
            ("Agent CPU during the measurement", f"{self.cpu['agent']:.1f} s"),
            ("Agent shutdown after SIGTERM", exit_text("agent")),
            ("Server shutdown after SIGTERM", exit_text("server")),
        ]

    def _slowest(self) -> str:
        """The slowest API container and how long the agent took over its two instructions."""
        worst = max(self.api, key=lambda s: s.running)
        steps = [f"agent {name.split('.')[1]} {self.agent_ms[(name, worst.container_id)]:.0f} ms"
                 for name in ("instance.create", "instance.start")
                 if (name, worst.container_id) in self.agent_ms]
        return ", ".join([f"{worst.container_id}: {worst.running * 1000:.0f} ms", *steps])

    def _rss(self, name: str) -> str:
        start, end = self.rss[name]
        return f"{start / MIB:.1f} / {end / MIB:.1f} MiB"


def _problems(lines: list[str]) -> list[str]:
    return [line for line in lines if "ERROR" in line or "Traceback" in line]


async def measure(args: argparse.Namespace, http: aiohttp.ClientSession, api: str,
                  run_id: str) -> tuple[list[ApiSample], list[tuple[str, float, float]]]:
    """Warm-ups, then alternating batches of API and docker runs until both have ``count``."""
    for _ in range(args.warmup):
        await api_run(http, api, run_id)
        await docker_run(run_id)
    api_samples: list[ApiSample] = []
    runs: list[tuple[str, float, float]] = []
    while len(api_samples) < args.count or len(runs) < args.count:
        for _ in range(min(args.batch, args.count - len(api_samples))):
            api_samples.append(await api_run(http, api, run_id))
        for _ in range(min(args.batch, args.count - len(runs))):
            runs.append(await docker_run(run_id))
        print(f"  {len(api_samples)} API, {len(runs)} docker run", flush=True)
    return api_samples, runs


async def run(args: argparse.Namespace, logs: tuple[Path, Path]) -> Report:
    task = asyncio.current_task()
    assert task is not None
    # SIGTERM (like Ctrl-C) cancels the run, so that the cleanup below still runs.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    run_id = f"b-{secrets.token_hex(5)}"
    print("making sure the test image is present (built locally, never pulled)", flush=True)
    await asyncio.to_thread(subprocess.run, ["bash", str(ROOT / "scripts/build-test-image.sh")],
                            check=True, timeout=300, stdout=subprocess.DEVNULL)
    docker_version = await docker("version", "--format", "{{.Server.Version}}")
    cleaned = False
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        # DEBUG: the per-instruction durations it reads are instruction traffic.
        server = ServerProcess(Path(tmp) / "data", args.port or free_port(), PING_INTERVAL,
                               logs[0], log_level="DEBUG")
        agent = AgentProcess(Path(tmp) / "agent-state", logs[1])
        try:
            procs = {"server": server.start()}
            headers = {"Authorization": basic_auth(ADMIN_ACCESS, ADMIN_SECRET),
                       "Accept": "application/json"}
            timeout = aiohttp.ClientTimeout(total=30)
            async with aiohttp.ClientSession(headers=headers, timeout=timeout) as http:
                await server.wait_healthy(http)
                api = f"{server.base_url}/v1"
                procs["agent"] = agent.start(await registration_url(http, api))
                host = await wait_host_active(http, api, agent)
                print(f"server pid {procs['server'].pid} on {server.base_url}, agent pid "
                      f"{procs['agent'].pid}, host {host} active; run {run_id}", flush=True)
                rss0 = {name: p.memory_info().rss for name, p in procs.items()}
                cpu0 = {name: _cpu(p) for name, p in procs.items()}
                load, began = os.getloadavg()[0], time.monotonic()
                api_samples, runs = await measure(args, http, api, run_id)
                measure_seconds, load_after = time.monotonic() - began, os.getloadavg()[0]
                cpu = {name: _cpu(p) - cpu0[name] for name, p in procs.items()}
                rss = {name: (rss0[name], p.memory_info().rss) for name, p in procs.items()}
                docker_samples = await with_started_at(runs)
                running = len((await docker("ps", "-q", "--filter", f"label={LABEL}={run_id}",
                                            "--filter", "status=running")).split())
            exits = {"agent": await agent.stop(), "server": await server.stop()}
            left_over = await remove_labelled(run_id)
            cleaned = True
        finally:
            agent.kill()
            server.kill()
            if not cleaned:
                with contextlib.suppress(BenchError):
                    await remove_labelled(run_id)
        server_lines, agent_lines = server.log_lines(), agent.log_lines()
    return Report(
        count=args.count, batch=args.batch, warmup=args.warmup, docker_version=docker_version,
        api=api_samples, docker=docker_samples,
        server_ms=instruction_ms(server_lines, SERVER_CALL),
        agent_ms=instruction_ms(agent_lines, AGENT_CALL), rss=rss, cpu=cpu,
        measure_seconds=measure_seconds, load=(load, load_after), running_at_end=running,
        left_over=left_over, exits=exits, problems=_problems(server_lines) + _problems(agent_lines))


# --- output ------------------------------------------------------------------------------


def print_summary(report: Report) -> None:
    print()
    print(f"Containers benchmark: {_machine()}")
    print(f"  {'':<8}  {'API':>8}  {'docker':>8}")
    for name, api, docker_cli in report.stats_rows():
        print(f"  {name:<8}  {api:>8}  {docker_cli:>8}")
    width = max(len(label) for label, _ in report.breakdown() + report.rows())
    print("Where the API's time goes (medians):")
    for label, value in report.breakdown():
        print(f"  {label:<{width}}  {value}")
    for label, value in report.rows():
        print(f"  {label:<{width}}  {value}")
    print("Checks:")
    for name, ok in report.checks():
        print(f"  {_verdict(ok)}  {name}")
    print("Targets:")
    for name, ok in report.targets():
        print(f"  {_verdict(ok)}  {name}")
    for line in report.problems[:20]:
        print(f"  log: {line}")


ABOUT = """\
- **Containers** (`bench/containers.py`): the time from `POST /v1/containers` to the container
  showing `running` in the API (polled every 10 ms), against `docker run -d` of the same image
  and command on the same engine, with a real agent process driving that engine. Both series
  run one container at a time, in alternating batches; the script reports their median, p90,
  p99 and max, medians of each step of the API's path (from Docker's `StartedAt` and the
  durations the server and the agent log per instruction) and the server's and the agent's
  RSS. Run `.venv/bin/python bench/containers.py [--count 50] [--write-docs]` where a Docker
  engine answers (about a minute); it builds the test image locally when it is missing.
"""

MEASURED = f"""What is measured. API: from just before `POST /v1/containers` (the image, a
sleeper command, a label) to the first `GET /v1/containers/<id>` that shows `state == running`,
polled every {POLL_INTERVAL * 1000:.0f} ms (the polling adds up to one interval and one GET, and
loads the server). docker: the wall time of `docker run -d --label ... IMAGE sh -c ...`, the CLI
as a subprocess, until it returns, when the container runs. Both series start one container at a
time, in alternating batches of one run, so that machine noise falls on both alike; the warm-ups
are not counted. Corral runs throughout: its agent also sees the `docker run` containers, and the
server records them as native containers."""
BREAKDOWN = """Where the API's time goes (medians over the API containers; each figure comes from
its own clock, so they do not add up exactly):"""


def docs_section(report: Report) -> str:
    today = datetime.date.today().isoformat()
    lines = [MARK_START, "## Containers: API call to a running container, against docker run", "",
             f"Measured {today} in one run of `bench/containers.py --count {report.count} "
             f"--batch {report.batch} --warmup {report.warmup}`",
             f"on {_machine()},", f"Docker engine {report.docker_version}, image `{IMAGE}`.",
             "", *textwrap.wrap(MEASURED, WRAP), "",
             "| Statistic | API (POST → running) | docker run -d |", "| --- | --- | --- |"]
    lines += [f"| {name} | {api} | {docker_cli} |" for name, api, docker_cli
              in report.stats_rows()]
    lines += ["", *textwrap.wrap(BREAKDOWN, WRAP), "",
              "| Step | Median |", "| --- | --- |"]
    lines += [f"| {label} | {value} |" for label, value in report.breakdown()]
    lines += ["", "| Figure | Value |", "| --- | --- |"]
    lines += [f"| {label} | {value} |" for label, value in report.rows()]
    lines += ["", "| Check | Result |", "| --- | --- |"]
    lines += [f"| {name} | {_verdict(ok)} |" for name, ok in report.checks()]
    lines += ["", f"Targets: the API's median at most {TARGET_RATIO:g}x `docker run`'s, and "
                  f"its p99 under {TARGET_P99 * 1000:.0f} ms.", "",
              "| Target | Result |", "| --- | --- |"]
    lines += [f"| {name} | {_verdict(ok)} |" for name, ok in report.targets()]
    return "\n".join([*lines, MARK_END])


def _list_item(lines: list[str], head: str) -> tuple[int, int] | None:
    """Where the intro's list item starting with ``head`` begins and ends (exclusive)."""
    start = next((i for i, line in enumerate(lines) if line.startswith(head)), None)
    if start is None:
        return None
    end = start + 1
    while end < len(lines) and lines[end].startswith("  "):
        end += 1
    return start, end


def _with_about(text: str) -> str:
    """The intro's list with this benchmark's item: replaced where it is, else after the
    agents one."""
    lines, about = text.split("\n"), ABOUT.rstrip("\n").split("\n")
    if (mine := _list_item(lines, "- **Containers**")) is not None:
        return "\n".join(lines[:mine[0]] + about + lines[mine[1]:])
    if (agents := _list_item(lines, "- **Agents**")) is not None:
        return "\n".join(lines[:agents[1]] + about + lines[agents[1]:])
    return text.rstrip("\n") + "\n\n" + ABOUT


def write_docs(section: str) -> None:
    write_section(section, MARK_START, MARK_END, _with_about)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=50, help="containers in each series (50)")
    parser.add_argument("--batch", type=int, default=10,
                        help="containers of one series before switching to the other (10)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="containers of each series started first and not counted (1)")
    parser.add_argument("--port", type=int, default=0, help="server port (0: pick a free one)")
    parser.add_argument("--write-docs", action="store_true",
                        help=f"replace the containers section of {DOCS.relative_to(ROOT)}")
    return parser


def _temp_log(prefix: str) -> Path:
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".log")
    os.close(fd)
    return Path(name)


def main() -> None:
    args = _parser().parse_args()
    if args.count < 1 or args.batch < 1 or args.warmup < 0:
        sys.exit("bench/containers.py: --count and --batch must be at least 1, --warmup at "
                 "least 0")
    logs = (_temp_log("corral-bench-server-"), _temp_log("corral-bench-agent-"))
    where = f"(server log {logs[0]}, agent log {logs[1]})"
    began = time.monotonic()
    try:
        report = asyncio.run(run(args, logs))
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit(f"bench/containers.py: interrupted {where}")
    except (BenchError, subprocess.SubprocessError, aiohttp.ClientError, psutil.Error) as exc:
        for path in logs:
            tail = path.read_text(errors="replace").splitlines()[-10:]
            if tail:
                print("\n".join([f"last lines of {path}:", *tail]), file=sys.stderr)
        sys.exit(f"bench/containers.py: {exc} {where}")
    print_summary(report)
    print(f"Run time {time.monotonic() - began:.0f} s; logs {where[1:-1]}")
    if args.write_docs:
        write_docs(docs_section(report))
        print(f"wrote the containers section of {DOCS}")
    if report.passed():
        for path in logs:
            path.unlink()
    else:
        sys.exit(1)


if __name__ == "__main__":
    main()
