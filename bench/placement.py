"""Placement benchmark: containers placed over many simulated hosts by one real server.

Starts ``corral-server`` on 127.0.0.1 with a temporary data dir, registers and connects N
simulated agents (as ``bench/agents.py`` does; they answer every instruction at once), then
creates containers through the API, a bounded number at a time, until the environment holds
C of them. It reports placements per second (creates accepted while filling from 1,000 to C
containers, and containers carried out to the end: created and started), the cost of one
placement (the median time of a create request, one at a time, with the engine idle) when the
environment holds 1,000 containers and again when it holds C, and how evenly the containers
were spread. Only the server process is measured.

    .venv/bin/python bench/placement.py [--agents 1000] [--containers 10000]
                                        [--concurrency 16] [--probe 100] [--write-docs]

Exit status: 0 when every check passed (and the targets, where they apply), 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import aiohttp

# Run as a script (``python bench/placement.py``), so bench/ itself is on sys.path.
from agents import (
    ADMIN_ACCESS,
    ADMIN_SECRET,
    DOCS,
    LARGE_POOL,
    ROOT,
    BenchError,
    Fleet,
    ServerProcess,
    _machine,
    _verdict,
    basic_auth,
    finish,
    free_port,
    host_states,
    raise_fd_limit,
    run_benchmark,
    size_the_pool,
    write_section,
)

MARK_START, MARK_END = "<!-- bench:placement:start -->", "<!-- bench:placement:end -->"
MIB = 1024 * 1024
EARLY = 1000  # the first cost probe: the environment holds this many containers
TARGET_AGENTS, TARGET_CONTAINERS = 1000, 10_000
TARGET_RATE, TARGET_COST_RATIO = 500.0, 1.5
IDLE_TIMEOUT = 600.0
RESTING = ("running", "stopped", "error")


@dataclass
class Report:
    agents: int
    containers: int
    concurrency: int
    fill_s: float
    filled: int
    settle_s: float
    refused: int
    cost_early_ms: float
    cost_late_ms: float
    spread: tuple[int, int]
    states: Counter[str]
    rss_mib: float
    problems: list[str]

    @property
    def rate(self) -> float:
        """Creates accepted per second while filling (their operations run behind them)."""
        return self.filled / self.fill_s if self.fill_s else 0.0

    @property
    def done_rate(self) -> float:
        """Containers placed and carried out to the end (created and started) per second."""
        total = self.fill_s + self.settle_s
        return self.filled / total if total else 0.0

    @property
    def cost_ratio(self) -> float:
        return self.cost_late_ms / self.cost_early_ms if self.cost_early_ms else 0.0

    @property
    def targets_apply(self) -> bool:
        return self.agents >= TARGET_AGENTS and self.containers >= TARGET_CONTAINERS

    def checks(self) -> list[tuple[str, bool]]:
        low, high = self.spread
        return [("every create was accepted (201)", self.refused == 0),
                ("containers spread evenly (max - min per host <= 1)", high - low <= 1),
                (f"every container is running ({self._states()})",
                 set(self.states) == {"running"}
                 and self.states["running"] == self.containers),
                ("no ERROR or traceback in the server log", not self.problems)]

    def targets(self) -> list[tuple[str, bool]]:
        return [(f"at least {TARGET_RATE:g} placements/s", self.rate >= TARGET_RATE),
                (f"cost at {self.containers:,} within {TARGET_COST_RATIO:g}x of the cost at "
                 f"{EARLY:,}", self.cost_ratio <= TARGET_COST_RATIO)]

    def _states(self) -> str:
        return ", ".join(f"{count:,} {state}" for state, count in self.states.most_common())

    def passed(self) -> bool:
        ok = all(ok for _, ok in self.checks())
        return ok and (not self.targets_apply or all(ok for _, ok in self.targets()))

    def rows(self) -> list[tuple[str, str]]:
        low, high = self.spread
        return [
            ("Simulated hosts", f"{self.agents:,}"),
            ("Containers placed", f"{self.containers:,} ({self.concurrency} creates at a time)"),
            ("Placement rate (creates accepted)",
             f"{self.rate:,.0f}/s ({self.filled:,} in {self.fill_s:.1f} s)"),
            ("Containers created and started",
             f"{self.done_rate:,.0f}/s (the last one {self.settle_s:.1f} s after the last "
             "create)"),
            (f"Cost of one placement at {EARLY:,} containers",
             f"{self.cost_early_ms:.1f} ms (median, one at a time)"),
            (f"Cost of one placement at {self.containers:,} containers",
             f"{self.cost_late_ms:.1f} ms (median, one at a time)"),
            ("Cost ratio (late / early)", f"{self.cost_ratio:.2f}x"),
            ("Containers per host (min / max)", f"{low} / {high}"),
            ("Server RSS at the end", f"{self.rss_mib:.1f} MiB"),
        ]


class Api:
    def __init__(self, http: aiohttp.ClientSession, base_url: str) -> None:
        self._http = http
        self._url = f"{base_url}/v1"
        self._auth = {"Authorization": basic_auth(ADMIN_ACCESS, ADMIN_SECRET)}

    async def create(self, index: int) -> tuple[int, float]:
        body = {"imageUuid": "docker:busybox", "command": ["sleep", "1000"],
                "name": f"bench-{index}"}
        started = time.perf_counter()
        async with self._http.post(f"{self._url}/containers", json=body,
                                   headers=self._auth) as resp:
            await resp.read()
            return resp.status, time.perf_counter() - started

    async def busy(self) -> bool:
        """Whether any container is still on its way (in none of the resting states)."""
        resting = "&".join(f"state_ne={state}" for state in RESTING)
        async with self._http.get(f"{self._url}/containers?{resting}&removed_null=true"
                                  "&limit=1", headers=self._auth) as resp:
            body = await resp.json()
            if resp.status != 200:
                raise BenchError(f"listing containers: {resp.status} {body.get('message')}")
            return bool(body["data"])

    async def per_host(self) -> tuple[Counter[str], Counter[str]]:
        """Containers per host, and per state."""
        counts: Counter[str] = Counter()
        states: Counter[str] = Counter()
        url: str | None = f"{self._url}/containers?limit=1000&removed_null=true"
        while url:
            async with self._http.get(url, headers=self._auth) as resp:
                page = await resp.json()
            counts.update(c["hostId"] for c in page["data"])
            states.update(c["state"] for c in page["data"])
            url = page["pagination"]["next"]
        return counts, states


async def wait_idle(api: Api) -> None:
    deadline = time.monotonic() + IDLE_TIMEOUT
    while await api.busy():
        if time.monotonic() > deadline:
            raise BenchError(f"container operations still running after {IDLE_TIMEOUT:g} s")
        await asyncio.sleep(0.2)


async def fill(api: Api, start: int, stop: int, concurrency: int) -> tuple[int, float, float]:
    """Create containers start..stop-1, ``concurrency`` at a time: how many were refused, the
    seconds it took, and the seconds until their operations were all done."""
    refused = 0
    began = time.monotonic()
    queue = iter(range(start, stop))

    async def worker() -> None:
        nonlocal refused
        for index in queue:
            status, _ = await api.create(index)
            refused += status != 201

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    filled = time.monotonic()
    await wait_idle(api)
    return refused, filled - began, time.monotonic() - filled


async def probe(api: Api, start: int, count: int) -> tuple[float, int]:
    """The median time of ``count`` creates one at a time (ms), and how many were refused."""
    await wait_idle(api)
    times, refused = [], 0
    for index in range(start, start + count):
        status, elapsed = await api.create(index)
        refused += status != 201
        times.append(elapsed * 1000)
    return statistics.median(times), refused


async def run(args: argparse.Namespace, log_path: Path) -> Report:
    raise_fd_limit(args.agents)
    data_dir = Path(tempfile.mkdtemp(prefix="corral-bench-placement-"))
    server = ServerProcess(data_dir, args.port or free_port(), 5.0, log_path)
    proc = server.start()
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        fleet: Fleet | None = None
        try:
            await server.wait_healthy(http)
            api = Api(http, server.base_url)
            await size_the_pool(http, server.base_url, args.agents)
            fleet = Fleet(args.agents, server.base_url, await server.registration_token(),
                          None)
            await fleet.register(http)
            await fleet.connect()
            states = await host_states(http, server.base_url)
            if sum(s == "active" for s in states.values()) != args.agents:
                raise BenchError(f"not every host is active: {Counter(states.values())}")
            early_fill = max(EARLY - args.probe, 0)
            refused, _, _ = await fill(api, 0, early_fill, args.concurrency)
            cost_early, r = await probe(api, early_fill, args.probe)
            refused += r
            late_fill = args.containers - args.probe
            r, fill_s, settle_s = await fill(api, early_fill + args.probe, late_fill,
                                             args.concurrency)
            refused += r
            cost_late, r = await probe(api, late_fill, args.probe)
            refused += r
            await wait_idle(api)
            counts, states = await api.per_host()
            spread = (min(counts.values(), default=0) if len(counts) == args.agents else 0,
                      max(counts.values(), default=0))
            rss = proc.memory_info().rss / MIB
        finally:
            if fleet is not None:
                await fleet.close()
            await server.stop()
    return Report(args.agents, args.containers, args.concurrency, fill_s,
                  late_fill - early_fill - args.probe, settle_s, refused, cost_early, cost_late,
                  spread, states, rss, [])


def print_summary(report: Report) -> None:
    print()
    print(f"Placement benchmark: {_machine()}")
    width = max(len(label) for label, _ in report.rows())
    for label, value in report.rows():
        print(f"  {label:<{width}}  {value}")
    print("Checks:")
    for name, ok in report.checks():
        print(f"  {_verdict(ok)}  {name}")
    print("Targets:" if report.targets_apply else
          f"Targets (apply to {TARGET_CONTAINERS:,} containers on {TARGET_AGENTS:,} hosts; "
          "shown only):")
    for name, ok in report.targets():
        print(f"  {_verdict(ok) if report.targets_apply else 'n/a '}  {name}")
    for line in report.problems[:20]:
        print(f"  server log: {line}")


def docs_section(report: Report) -> str:
    today = datetime.date.today().isoformat()
    lines = [MARK_START, "## Placement: containers over many simulated hosts", "",
             f"Measured {today} in one run of `bench/placement.py --agents {report.agents} "
             f"--containers {report.containers} --concurrency {report.concurrency}`",
             f"on {_machine()}. Every create goes through the API; the simulated agents "
             "answer each instruction at once, so the runner's work (create, start) competes "
             "with placement for the server and its database. Containers are on the managed "
             "network (the default): each placement also leases the container's address "
             f"(the pool set to {LARGE_POOL} in /24s, room for every host).",
             "", "| Figure | Value |", "| --- | --- |"]
    lines += [f"| {label} | {value} |" for label, value in report.rows()]
    lines += ["", "| Check | Result |", "| --- | --- |"]
    lines += [f"| {name} | {_verdict(ok)} |" for name, ok in report.checks()]
    lines += ["", f"Targets: at least {TARGET_RATE:g} placements/s, and the cost of one "
                  f"placement at {TARGET_CONTAINERS:,} containers within "
                  f"{TARGET_COST_RATIO:g}x of the cost at {EARLY:,}.",
              "", "| Target | Result |", "| --- | --- |"]
    lines += [f"| {name} | {_verdict(ok) if report.targets_apply else 'n/a'} |"
              for name, ok in report.targets()]
    return "\n".join([*lines, MARK_END])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=1000, help="simulated hosts (1000)")
    parser.add_argument("--containers", type=int, default=10_000,
                        help="containers in the environment at the end (10000)")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="creates in flight at once while filling (16)")
    parser.add_argument("--probe", type=int, default=100,
                        help="creates one at a time in each cost probe (100)")
    parser.add_argument("--port", type=int, default=0, help="server port (0: pick a free one)")
    parser.add_argument("--write-docs", action="store_true",
                        help=f"replace the placement section of {DOCS.relative_to(ROOT)}")
    return parser


def main() -> None:
    args = _parser().parse_args()
    if args.agents < 1 or args.probe < 1 or args.containers < EARLY + args.probe:
        sys.exit(f"bench/placement.py: need --agents >= 1, --probe >= 1 and --containers >= "
                 f"{EARLY} + --probe")
    report, log_path, began = run_benchmark("bench/placement.py", lambda log: run(args, log))
    lines = log_path.read_text(errors="replace").splitlines()
    report.problems = [line for line in lines if "ERROR" in line or "Traceback" in line]
    print_summary(report)
    if args.write_docs:
        write_section(docs_section(report), MARK_START, MARK_END)
        print(f"wrote the placement section of {DOCS}")
    finish(report.passed(), log_path, began)


if __name__ == "__main__":
    main()
