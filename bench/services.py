"""Service benchmark: time for a scale-N service to converge on one host, against N sequential
``docker run -d`` in the same run.

Starts ``corral-server`` on 127.0.0.1 with a temporary data dir and a real ``corral-agent`` for
this machine's Docker engine, as ``bench/containers.py`` does. Then, in ``--rounds`` rounds
that alternate which goes first (so that machine noise falls on both alike):

- **service**: ``POST /v2-beta/services`` of a service of scale ``--scale`` (busybox sleeping,
  on the default managed network, ``startOnCreate``), timed until all its containers run as
  the API shows them (``/services/<id>/instances``, polled every 50 ms); then it is removed
  and its containers are waited for to be gone from Docker;
- **docker**: ``--scale`` containers started one after another with ``docker run -d`` (the CLI,
  a subprocess each, as a script would), timed from the first call to the last return; then
  they are removed.

It reports the medians and their ratio, service over docker: the target is at most 1.0, since
the controller starts a service's containers in parallel where a script starts them one by
one (Swarm mode measured 1.24 at scale 20).

    .venv/bin/python bench/services.py [--scale 50] [--rounds 3] [--write-docs]

Every container of the docker series carries the label ``corral.bench=<run id>``; everything
is removed at the end, also when the run fails. Exit status: 0 when every check and the target
passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

# Run as a script (``python bench/services.py``), so bench/ itself is on sys.path.
from agents import (
    ADMIN_ACCESS,
    ADMIN_SECRET,
    BenchError,
    ServerProcess,
    _machine,
    _verdict,
    basic_auth,
    free_port,
    write_section,
)
from containers import (
    IMAGE,
    LABEL,
    PING_INTERVAL,
    ROOT,
    AgentProcess,
    api_json,
    docker,
    registration_url,
    remove_labelled,
    wait_host_active,
)

DOCS = ROOT / "docs" / "benchmarks.md"
MARK_START, MARK_END = "<!-- bench:services:start -->", "<!-- bench:services:end -->"
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
POLL_INTERVAL = 0.05
CONVERGE_TIMEOUT = 300.0
TARGET_RATIO = 1.0


@dataclass
class Report:
    scale: int
    rounds: int
    service_seconds: list[float] = field(default_factory=list)
    docker_seconds: list[float] = field(default_factory=list)
    names_ok: bool = True
    labels_ok: bool = True
    left_over: int = 0

    @property
    def ratio(self) -> float:
        return statistics.median(self.service_seconds) / statistics.median(self.docker_seconds)

    def rows(self) -> list[tuple[str, str]]:
        def series(values: list[float]) -> str:
            return (f"median {statistics.median(values):.2f} s "
                    f"(runs: {', '.join(f'{v:.2f}' for v in values)})")

        return [(f"service of scale {self.scale} to converge", series(self.service_seconds)),
                (f"{self.scale} sequential docker run -d", series(self.docker_seconds)),
                ("ratio service / docker (medians)", f"{self.ratio:.2f}")]

    def checks(self) -> list[tuple[str, bool]]:
        return [("containers named <stack>-<service>-<n>, 1..scale", self.names_ok),
                ("containers carry Rancher's stack and service labels", self.labels_ok),
                ("nothing left over at the end", self.left_over == 0)]

    def targets(self) -> list[tuple[str, bool]]:
        return [(f"service / docker at most {TARGET_RATIO:g}", self.ratio <= TARGET_RATIO)]

    def passed(self) -> bool:
        return all(ok for _, ok in [*self.checks(), *self.targets()])


async def converge(http: aiohttp.ClientSession, api: str, stack_id: str, name: str,
                   scale: int, report: Report) -> float:
    """Create the service and time it until every container runs; then remove it."""
    began = time.monotonic()
    service = await api_json(http, "POST", f"{api}/services", {
        "name": name, "stackId": stack_id, "scale": scale, "startOnCreate": True,
        "launchConfig": {"imageUuid": f"docker:{IMAGE}", "command": SLEEPER}})
    deadline = began + CONVERGE_TIMEOUT
    while True:
        found = (await api_json(http, "GET",
                                f"{api}/services/{service['id']}/instances?limit=1000"))["data"]
        failed = [c for c in found if c["state"] == "error"]
        if failed:
            raise BenchError(f"a container failed: {failed[0].get('transitioningMessage')}")
        if sum(1 for c in found if c["state"] == "running") == scale:
            took = time.monotonic() - began
            break
        if time.monotonic() > deadline:
            raise BenchError(f"the service did not converge within {CONVERGE_TIMEOUT:g} s")
        await asyncio.sleep(POLL_INTERVAL)
    names = sorted(c["name"] for c in found)
    report.names_ok &= names == sorted(f"bench-{name}-{i}" for i in range(1, scale + 1))
    report.labels_ok &= all(c["labels"].get("io.rancher.stack_service.name") ==
                            f"bench/{name}" for c in found)
    await api_json(http, "DELETE", f"{api}/services/{service['id']}")
    label = f"label=io.rancher.stack_service.name=bench/{name}"
    while (await docker("ps", "-aq", "--filter", label)).split():
        if time.monotonic() > deadline + CONVERGE_TIMEOUT:
            raise BenchError("the service's containers were not removed")
        await asyncio.sleep(0.2)
    return took


async def sequential(run_id: str, scale: int) -> float:
    began = time.monotonic()
    for _ in range(scale):
        await docker("run", "-d", "--label", f"{LABEL}={run_id}", IMAGE, *SLEEPER)
    took = time.monotonic() - began
    await remove_labelled(run_id)
    return took


async def run(args: argparse.Namespace, logs: tuple[Path, Path]) -> Report:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    run_id = f"b-{secrets.token_hex(5)}"
    print("making sure the test image is present (built locally, never pulled)", flush=True)
    await asyncio.to_thread(subprocess.run, ["bash", str(ROOT / "scripts/build-test-image.sh")],
                            check=True, timeout=300, stdout=subprocess.DEVNULL)
    report = Report(args.scale, args.rounds)
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        server = ServerProcess(Path(tmp) / "data", args.port or free_port(), PING_INTERVAL,
                               logs[0])
        agent = AgentProcess(Path(tmp) / "agent-state", logs[1])
        try:
            server.start()
            headers = {"Authorization": basic_auth(ADMIN_ACCESS, ADMIN_SECRET),
                       "Accept": "application/json"}
            async with aiohttp.ClientSession(headers=headers,
                                             timeout=aiohttp.ClientTimeout(total=60)) as http:
                await server.wait_healthy(http)
                api = f"{server.base_url}/v2-beta"
                agent.start(await registration_url(http, f"{server.base_url}/v1"))
                await wait_host_active(http, api, agent)
                stack = await api_json(http, "POST", f"{api}/stacks", {"name": "bench"})
                # A warm-up of each: the image in the page cache, the overlay up.
                await converge(http, api, stack["id"], "warmup", 2, Report(2, 0))
                await sequential(run_id, 2)
                for index in range(args.rounds):
                    order = ["service", "docker"] if index % 2 == 0 else ["docker", "service"]
                    for kind in order:
                        if kind == "service":
                            took = await converge(http, api, stack["id"], f"s{index}",
                                                  args.scale, report)
                            report.service_seconds.append(took)
                        else:
                            took = await sequential(run_id, args.scale)
                            report.docker_seconds.append(took)
                        print(f"round {index + 1}: {kind} {took:.2f} s", flush=True)
            await agent.stop()
            await server.stop()
            report.left_over = await remove_labelled(run_id)
        finally:
            agent.kill()
            server.kill()
            with contextlib.suppress(BenchError):
                await remove_labelled(run_id)
                leftovers = (await docker("ps", "-aq", "--filter",
                                          "label=io.rancher.stack.name=bench")).split()
                if leftovers:
                    report.left_over += len(leftovers)
                    await docker("rm", "-f", *leftovers)
    return report


def print_summary(report: Report) -> None:
    print(f"\nServices benchmark: {_machine()}")
    for label, value in report.rows():
        print(f"  {label:<40}  {value}")
    for name, ok in [*report.checks(), *report.targets()]:
        print(f"  {_verdict(ok)}  {name}")


def docs_section(report: Report) -> str:
    today = datetime.date.today().isoformat()
    lines = [MARK_START, "## Services: a scale-N service converging, against sequential "
             "docker run", "",
             f"Measured {today} in one run of `bench/services.py --scale {report.scale} "
             f"--rounds {report.rounds}` on {_machine()}. The service's time runs from its "
             "POST to every container running as the API shows it (placement, addresses on "
             "the managed network, the agent's Docker calls); the docker series starts the "
             "same number of containers one `docker run -d` after another. Rounds alternate "
             "which goes first.", "", "| Figure | Value |", "| --- | --- |"]
    lines += [f"| {label} | {value} |" for label, value in report.rows()]
    lines += ["", "| Check | Result |", "| --- | --- |"]
    lines += [f"| {name} | {_verdict(ok)} |" for name, ok in report.checks()]
    lines += ["", f"Target: service / docker at most {TARGET_RATIO:g} (Swarm mode: 1.24 at "
                  "scale 20).", "", "| Target | Result |", "| --- | --- |"]
    lines += [f"| {name} | {_verdict(ok)} |" for name, ok in report.targets()]
    return "\n".join([*lines, MARK_END])


def _temp_log(prefix: str) -> Path:
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".log")
    os.close(fd)
    return Path(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=50, help="containers of the service (50)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each series (3)")
    parser.add_argument("--port", type=int, default=0, help="server port (0: a free one)")
    parser.add_argument("--write-docs", action="store_true",
                        help=f"replace the services section of {DOCS.relative_to(ROOT)}")
    args = parser.parse_args()
    if args.scale < 1 or args.rounds < 1:
        sys.exit("bench/services.py: --scale and --rounds must be at least 1")
    logs = (_temp_log("corral-bench-server-"), _temp_log("corral-bench-agent-"))
    where = f"(server log {logs[0]}, agent log {logs[1]})"
    try:
        report = asyncio.run(run(args, logs))
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit(f"bench/services.py: interrupted {where}")
    except (BenchError, subprocess.SubprocessError, aiohttp.ClientError) as exc:
        sys.exit(f"bench/services.py: {exc} {where}")
    print_summary(report)
    if args.write_docs:
        write_section(docs_section(report), MARK_START, MARK_END)
        print(f"wrote the services section of {DOCS}")
    if report.passed():
        for path in logs:
            path.unlink()
    sys.exit(0 if report.passed() else 1)


if __name__ == "__main__":
    main()
