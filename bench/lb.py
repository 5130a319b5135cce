"""Load balancer benchmark: requests per second through a balancer against direct requests to
one backend, and failed requests during reloads under load.

Runs the agent's own load balancer manager (``agent.lb.LbManager``, the host's ``haproxy`` in
master-worker mode) on this machine, in front of three busybox httpd containers on Docker's
bridge network, all answering the same page. The load is ApacheBench (``ab``, from
apache2-utils), in the same run:

- **throughput**: ``--rounds`` rounds, each ``ab -k -c 32 -n --requests`` straight to one
  backend and through the balancer, alternating which goes first; the medians' ratio is
  reported (HAProxy's extra hop is the cost: no target, a figure to watch);
- **reloads**: ``ab -c 32`` for as long as ``--reloads`` reloads take, once with keep-alive and
  once with a new connection a request, while the balancer's config changes in a way the
  runtime API cannot take (its custom ``timeout client`` alternates), so each change is a
  reload passing the listening sockets to the new worker; ab's failed and non-2xx requests are
  counted (target: 0).

    .venv/bin/python bench/lb.py [--rounds 3] [--requests 20000] [--reloads 50] [--write-docs]

Every container carries the label ``corral.bench=<run id>`` and is removed at the end, as are
the balancer's processes and files, also when the run fails. Exit status: 0 when every target
passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# Run as a script (``python bench/lb.py``), so bench/ itself is on sys.path.
from agents import BenchError, _machine, _verdict, write_section
from containers import IMAGE, LABEL, ROOT, docker, remove_labelled

sys.path.insert(0, str(ROOT))

from agent.lb import LbManager
from shared.lb import Backend, Balancer, LbApply, PortRule, Server
from shared.lb_report import LbResult, LbState

DOCS = ROOT / "docs" / "benchmarks.md"
MARK_START, MARK_END = "<!-- bench:lb:start -->", "<!-- bench:lb:end -->"
HTTPD = ["sh", "-c", "mkdir -p /www && echo hello > /www/index.html && "
         "exec httpd -f -p 80 -h /www"]
CONCURRENCY = 32
BACKENDS = 3
RELOAD_PAUSE = 0.3  # between reloads: ab keeps the load on


@dataclass
class Report:
    rounds: int
    requests: int
    reloads: int
    direct_rps: list[float] = field(default_factory=list)
    lb_rps: list[float] = field(default_factory=list)
    throughput_failed: int = 0
    # By mode: (requests done, failed, reloads).
    reload_runs: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return statistics.median(self.lb_rps) / statistics.median(self.direct_rps)

    @property
    def reload_failures(self) -> int:
        return sum(failed for _, failed, _ in self.reload_runs.values())

    def rows(self) -> list[tuple[str, str]]:
        def series(values: list[float]) -> str:
            return (f"median {statistics.median(values):,.0f}/s "
                    f"(runs: {', '.join(f'{v:,.0f}' for v in values)})")

        rows = [("direct to one backend (ab -k -c 32)", series(self.direct_rps)),
                ("through the balancer, 3 backends (ab -k -c 32)", series(self.lb_rps)),
                ("ratio balancer / direct (medians)", f"{self.ratio:.2f}")]
        for mode, (done, failed, reloads) in self.reload_runs.items():
            rows.append((f"during {reloads} reloads, {mode}",
                         f"{failed} failed of {done:,} requests"))
        return rows

    def targets(self) -> list[tuple[str, bool]]:
        return [("no failed request during the throughput runs", self.throughput_failed == 0),
                ("no failed request during the reloads under load (target: 0)",
                 self.reload_failures == 0)]

    def passed(self) -> bool:
        return all(ok for _, ok in self.targets())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def ab(*args: str, until: asyncio.Event | None = None) -> tuple[float, int, int]:
    """Run ApacheBench (until ``until`` is set, when given: ab prints what it did on SIGINT):
    (requests per second, requests done, failed or non-2xx)."""
    proc = await asyncio.create_subprocess_exec(
        "ab", "-q", "-r", *args, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    if until is not None:
        await until.wait()
        proc.send_signal(signal.SIGINT)
    out, err = await proc.communicate()
    text = out.decode(errors="replace")
    # Stopped by SIGINT, ab exits 1 after printing what it did.
    if (proc.returncode != 0 and until is None) or "Complete requests" not in text:
        raise BenchError(f"ab {' '.join(args)} failed ({proc.returncode}): "
                         f"{(err or out).decode(errors='replace')[-300:]}")

    def number(pattern: str) -> float:
        found = re.search(pattern, text)
        return float(found.group(1)) if found else 0.0

    rps = number(r"Requests per second:\s+([\d.]+)")
    done = int(number(r"Complete requests:\s+(\d+)"))
    failed = int(number(r"Failed requests:\s+(\d+)")) + int(number(r"Non-2xx responses:\s+(\d+)"))
    return rps, done, failed


def balancer(port: int, backends: list[str], version: int) -> Balancer:
    servers = tuple(Server(name=f"web{i}", address=address, port=80)
                    for i, address in enumerate(backends))
    return Balancer(
        uuid="bench-lb", name="bench", config_version=str(version),
        rules=(PortRule(source_port=port, protocol="http", backend="web"),),
        backends=(Backend(name="web", protocol="http", servers=servers),),
        custom_config=f"defaults\n  timeout client {30 + version % 2}s\n")


async def reloads(manager: LbManager, port: int, backends: list[str], count: int,
                  keep_alive: bool) -> tuple[int, int, int]:
    """ab against the balancer for as long as ``count`` reloads take."""
    done_reloading = asyncio.Event()
    load = asyncio.create_task(ab(*(["-k"] if keep_alive else []), "-c", str(CONCURRENCY),
                                  "-t", "3600", "-n", "100000000",
                                  f"http://127.0.0.1:{port}/", until=done_reloading))
    try:
        await asyncio.sleep(1)
        for version in range(2, count + 2):
            await manager.apply(LbApply.of((balancer(port, backends, version),)))
            await asyncio.sleep(RELOAD_PAUSE)
        await asyncio.sleep(1)
    finally:
        done_reloading.set()
    _, done, failed = await load
    return done, failed, count


async def run(args: argparse.Namespace) -> Report:
    for tool in ("ab", "haproxy", "docker"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} is not installed (apt-get install apache2-utils haproxy "
                             "docker.io)")
    report = Report(args.rounds, args.requests, args.reloads)
    run_id = secrets.token_hex(4)
    base = Path(tempfile.mkdtemp(prefix="corral-bench-lb-"))
    results: list[LbResult] = []

    async def report_result(found: list[LbResult]) -> None:
        results.extend(found)

    manager = LbManager(base, report_result)
    try:
        ids = [await docker("run", "-d", "--label", f"{LABEL}={run_id}", IMAGE, *HTTPD)
               for _ in range(BACKENDS)]
        backends = []
        for container in ids:
            inspected = json.loads(await docker("inspect", container))[0]
            backends.append(inspected["NetworkSettings"]["IPAddress"])
        port = free_port()
        await manager.start()
        await manager.apply(LbApply.of((balancer(port, backends, 1),)))
        deadline = time.monotonic() + 30
        while not any(r.state is LbState.RUNNING for r in results):
            if time.monotonic() > deadline:
                raise BenchError(f"the balancer did not start: {results[-1:]}")
            await asyncio.sleep(0.1)
        for url in (f"http://{backends[0]}/", f"http://127.0.0.1:{port}/"):  # warm up
            await ab("-k", "-c", "4", "-n", "500", url)
        for index in range(args.rounds):
            pair = [("direct", f"http://{backends[0]}/"), ("lb", f"http://127.0.0.1:{port}/")]
            for name, url in pair if index % 2 == 0 else reversed(pair):
                rps, _, failed = await ab("-k", "-c", str(CONCURRENCY), "-n",
                                          str(args.requests), url)
                (report.direct_rps if name == "direct" else report.lb_rps).append(rps)
                report.throughput_failed += failed
        half = max(1, args.reloads // 2)
        report.reload_runs["keep-alive"] = await reloads(manager, port, backends, half, True)
        report.reload_runs["a connection a request"] = await reloads(
            manager, port, backends, args.reloads - half, False)
        return report
    finally:
        await manager.stop_all()
        await manager.stop()
        await remove_labelled(run_id)
        shutil.rmtree(base, ignore_errors=True)


def print_summary(report: Report) -> None:
    print(f"\nLoad balancer benchmark: {_machine()}")
    for label, value in report.rows():
        print(f"  {label:<48}  {value}")
    for name, ok in report.targets():
        print(f"  {_verdict(ok)}  {name}")


def docs_section(report: Report) -> str:
    today = datetime.date.today().isoformat()
    lines = [MARK_START, "## Load balancer (bench/lb.py)", "",
             f"Measured {today} in one run of `bench/lb.py --rounds {report.rounds} "
             f"--requests {report.requests} --reloads {report.reloads}` on {_machine()}. The "
             "agent's load balancer manager runs the host's HAProxy 2.6 (master-worker) in "
             "front of three busybox httpd containers on Docker's bridge; the load is "
             "ApacheBench on the same machine, so both series share its two cores with "
             "HAProxy and the backends. Throughput rounds alternate which goes first. During "
             "the reloads the balancer's custom `timeout client` alternates, a change the "
             "runtime API cannot make, so each is a full reload handing the listening sockets "
             "to the new worker.", "", "| Figure | Value |", "| --- | --- |"]
    lines += [f"| {label} | {value} |" for label, value in report.rows()]
    lines += ["", "Target: no failed request during the reloads (Rancher's HAProxy balancer "
                  "dropped connections on reload, rancher/rancher#2777).", "",
              "| Target | Result |", "| --- | --- |"]
    lines += [f"| {name} | {_verdict(ok)} |" for name, ok in report.targets()]
    return "\n".join([*lines, MARK_END])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (3)")
    parser.add_argument("--requests", type=int, default=20000,
                        help="requests of each throughput run (20000)")
    parser.add_argument("--reloads", type=int, default=50, help="reloads under load (50)")
    parser.add_argument("--write-docs", action="store_true",
                        help=f"replace the load balancer section of {DOCS.relative_to(ROOT)}")
    args = parser.parse_args()
    if args.rounds < 1 or args.requests < 1 or args.reloads < 2:
        sys.exit("bench/lb.py: --rounds and --requests must be at least 1, --reloads 2")
    try:
        report = asyncio.run(run(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit("bench/lb.py: interrupted")
    except (BenchError, subprocess.SubprocessError, OSError) as exc:
        sys.exit(f"bench/lb.py: {exc}")
    print_summary(report)
    if args.write_docs:
        write_section(docs_section(report), MARK_START, MARK_END)
        print(f"wrote the load balancer section of {DOCS}")
    sys.exit(0 if report.passed() else 1)


if __name__ == "__main__":
    main()
