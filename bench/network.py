"""Network benchmark: container to container on the managed overlay, same host against cross host.

Brings up two simulated hosts with ``scripts/overlay-hosts.sh up 2`` (network namespaces on one
underlay bridge, each with its own dockerd and FORWARD DROP), programs the overlay on each with
``python -m agent.network apply -`` run inside the host's namespace (subnets 10.42.1.0/24 and
10.42.2.0/24), and starts on the Docker network ``corral-managed``, with fixed addresses: a client
container on host 1, and a busybox ``httpd`` container on host 1 (same host, one bridge) and one
on host 2 (cross host, through the VXLAN overlay), each serving the same sparse file. From the
client, in ``--runs`` rounds that alternate which target goes first, it measures:

- the round-trip time: ``ping -c PINGS -i 0.05``, busybox's average of each run;
- the HTTP throughput: ``wget -O /dev/null`` of the file, timed inside the client container
  (busybox ``adjtimex`` reads the clock to the microsecond; its ``date`` has no ``%N``), so
  that ``docker exec`` does not count.

It reports the medians over the runs and the ratios cross / same host: the median of each
round's ratio (its two measurements are seconds apart, so load from elsewhere on the machine
falls on both), and the ratio of the medians.

    sudo .venv/bin/python bench/network.py [--runs 7] [--pings 50] [--size-mb 512] [--write-docs]

Needs root, iproute2, util-linux (nsenter), iptables, docker.io and a Docker engine on the
default socket (the test image is built there and copied into each host). It refuses to start
while simulated hosts exist (another run or an e2e test owns them). Everything it made is
removed at the end with ``overlay-hosts.sh down``, also when the run fails or is interrupted
(Ctrl-C, SIGTERM). Exit status: 0 when every check and the target passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

# Run as a script (``python bench/network.py``), so bench/ itself is on sys.path.
from agents import DOCS, MIB, ROOT, BenchError, _machine, _verdict, write_section

PROG = "bench/network.py"
SCRIPT = ROOT / "scripts" / "overlay-hosts.sh"
SWITCH_NETNS = Path("/var/run/netns/ovl-sw")
MARK_START, MARK_END = "<!-- bench:network:start -->", "<!-- bench:network:end -->"
IMAGE = "corral-test/busybox:latest"
LABEL = "corral.bench"
TOOLS = ("bash", "ip", "bridge", "nsenter", "iptables", "docker", "dockerd")
# Exits promptly on SIGTERM (a bare `sleep` as pid 1 ignores it); as in bench/containers.py.
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
CLIENT, SERVER = 10, 20  # last octet of the client's and of each server's address
PING_INTERVAL = 0.05
COMMAND_TIMEOUT = 120.0  # one docker, nsenter or overlay-hosts.sh command
REACH_TIMEOUT = 20.0  # the client reaching both servers after the overlay is applied
TARGET_RATIO = 0.7  # cross-host throughput at least this share of same-host
# The clock read twice around the transfer, inside the container: no docker exec in the time.
FETCH = 'busybox adjtimex; wget -q -O /dev/null "$1" 2>&1; echo "wget exit $?"; busybox adjtimex'
CLOCK = re.compile(r"time\.tv_sec:\s*(\d+)\s+time\.tv_usec:\s*(\d+)")
PING_COUNTS = re.compile(r"(\d+) packets transmitted, (\d+) packets received")
PING_RTT = re.compile(r"round-trip min/avg/max = ([\d.]+)/([\d.]+)/([\d.]+) ms")
PLACES = ("same", "cross")


class FetchFailed(BenchError):
    """One transfer did not complete (retried once, and reported)."""


class Interrupted(Exception):
    """SIGTERM, turned into an exception so that the clean-up still runs."""


@dataclass(frozen=True)
class Host:
    """One simulated host, as ``overlay-hosts.sh up`` prints it."""

    index: int
    netns: str
    docker_host: str
    ip: str

    @property
    def subnet(self) -> str:
        return f"10.42.{self.index}.0/24"

    def address(self, last: int) -> str:
        return f"10.42.{self.index}.{last}"


def run(argv: list[str], *, input: str | None = None, timeout: float = COMMAND_TIMEOUT,
        env: dict[str, str] | None = None, check: bool = True) -> str:
    """Run ``argv`` and return its output; BenchError if it fails (``check``) or overruns."""
    try:
        result = subprocess.run(argv, input=input, capture_output=True, text=True,
                                timeout=timeout, cwd=ROOT, env=env,
                                stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{' '.join(argv[:4])} did not finish within {timeout:g} s") from None
    if check and result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise BenchError(f"{' '.join(argv[:4])} failed: {last}")
    return result.stdout


def docker(host: Host, *args: str, check: bool = True) -> str:
    return run(["docker", "-H", host.docker_host, *args], check=check)


def client_sh(host: Host, script: str, *args: str, check: bool = True) -> str:
    """``sh -c script`` in the client container (on host 1)."""
    return docker(host, "exec", "bench-client", "sh", "-c", script, "sh", *args, check=check)


# --- the hosts, the overlay and the containers ---------------------------------------------


def hosts_up(count: int) -> list[Host]:
    out = run(["bash", str(SCRIPT), "up", str(count)])
    hosts = []
    for line in out.splitlines():
        if line.startswith("NAME="):
            values = dict(part.split("=", 1) for part in line.split())
            hosts.append(Host(int(values["NAME"].removeprefix("ovl-h")), values["NETNS"],
                              values["DOCKER_HOST"], values["IP"]))
    if len(hosts) != count:
        raise BenchError(f"overlay-hosts.sh up {count} printed {len(hosts)} host line(s)")
    return hosts


def hosts_down() -> str | None:
    """``overlay-hosts.sh down``, never interrupted: None when it succeeded, else its error."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(signal.SIGTERM,
                                                                           signal.SIG_IGN)
    try:
        # Its own session: a Ctrl-C at the terminal does not reach it either.
        result = subprocess.run(["bash", str(SCRIPT), "down"], capture_output=True, text=True,
                                timeout=COMMAND_TIMEOUT * 2, cwd=ROOT, start_new_session=True,
                                stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return "overlay-hosts.sh down did not finish"
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
    if result.returncode != 0:
        return (result.stderr.strip().splitlines() or ["overlay-hosts.sh down failed"])[-1]
    return None


def apply_overlay(host: Host, peers: list[Host]) -> None:
    """``python -m agent.network apply -`` inside the host's namespace, as an agent would."""
    description = {"underlayIp": host.ip, "subnet": host.subnet,
                   "peers": [{"subnet": p.subnet, "underlayIp": p.ip} for p in peers]}
    run(["nsenter", f"--net={host.netns}", sys.executable, "-m", "agent.network", "apply", "-"],
        input=json.dumps(description),
        env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
             "DOCKER_HOST": host.docker_host})


def start_containers(h1: Host, h2: Host, www: Path, run_id: str) -> dict[str, str]:
    """The client on host 1 and a web server on each host: {place: server address}."""
    common = ["run", "-d", "--label", f"{LABEL}={run_id}", "--network", "corral-managed"]
    docker(h1, *common, "--name", "bench-client", "--ip", h1.address(CLIENT), IMAGE, *SLEEPER)
    servers = {"same": h1, "cross": h2}
    for place, host in servers.items():
        docker(host, *common, "--name", f"bench-web-{place}", "--ip", host.address(SERVER),
               "-v", f"{www}:/www:ro", IMAGE, "httpd", "-f", "-p", "80", "-h", "/www")
    return {place: host.address(SERVER) for place, host in servers.items()}


def wait_reachable(client: Host, ip: str) -> None:
    deadline = time.monotonic() + REACH_TIMEOUT
    while time.monotonic() < deadline:
        if "1 packets received" in client_sh(client, f"ping -c 1 -W 1 {ip}", check=False):
            return
        time.sleep(0.2)
    raise BenchError(f"the client container did not reach {ip} within {REACH_TIMEOUT:g} s")


# --- one measurement -----------------------------------------------------------------------


@dataclass(frozen=True)
class PingRun:
    sent: int
    received: int
    avg_ms: float
    min_ms: float
    max_ms: float


def ping(client: Host, ip: str, count: int) -> PingRun:
    out = client_sh(client, f"ping -q -c {count} -i {PING_INTERVAL:g} -W 2 {ip}", check=False)
    counts, rtt = PING_COUNTS.search(out), PING_RTT.search(out)
    if counts is None or rtt is None:
        raise BenchError(f"no ping statistics from the client to {ip}: {out.strip()[-200:]}")
    return PingRun(int(counts.group(1)), int(counts.group(2)), float(rtt.group(2)),
                   float(rtt.group(1)), float(rtt.group(3)))


def fetch_seconds(client: Host, url: str) -> float:
    """One ``wget -O /dev/null`` of ``url`` in the client, timed inside the container."""
    out = client_sh(client, FETCH, url)
    clocks = [int(s) + int(us) / 1e6 for s, us in CLOCK.findall(out)]
    if "wget exit 0" not in out or len(clocks) != 2:
        said = [line.strip() for line in out.splitlines() if "wget" in line]
        raise FetchFailed(f"fetching {url} failed: {'; '.join(said) or out.strip()[-200:]}")
    return clocks[1] - clocks[0]


def fetched_bytes(client: Host, url: str) -> int:
    """The length of ``url``'s body as the client receives it (a check, not timed)."""
    out = client_sh(client, 'wget -q -O - "$1" | busybox wc -c', url).strip()
    return int(out) if out.isdigit() else -1


# --- the run and its report ----------------------------------------------------------------


@dataclass
class Report:
    runs: int
    pings: int
    size_mb: int
    docker_version: str = ""
    mtu: str = ""
    pings_by: dict[str, list[PingRun]] = field(default_factory=lambda: {p: [] for p in PLACES})
    seconds_by: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PLACES})
    bytes_by: dict[str, int] = field(default_factory=dict)
    load: tuple[float, float] = (0.0, 0.0)
    measure_seconds: float = 0.0
    cleanup_error: str | None = "not run"
    failed_fetches: list[str] = field(default_factory=list)

    def rtt(self, place: str) -> float:
        return statistics.median(r.avg_ms for r in self.pings_by[place])

    def throughput(self, place: str) -> float:
        """Median bytes per second."""
        return statistics.median(self.size_mb * MIB / s for s in self.seconds_by[place])

    def rtt_ratio(self) -> float:
        """The median over the rounds of cross / same host."""
        return statistics.median(c.avg_ms / s.avg_ms for s, c in
                                 zip(self.pings_by["same"], self.pings_by["cross"], strict=True))

    def throughput_ratio(self) -> float:
        """The median over the rounds of cross / same host (a time ratio inverted)."""
        return statistics.median(s / c for s, c in
                                 zip(self.seconds_by["same"], self.seconds_by["cross"],
                                     strict=True))

    def rows(self) -> list[tuple[str, str]]:
        def rate(place: str) -> str:
            rates = sorted(self.size_mb * MIB / s / MIB for s in self.seconds_by[place])
            median = self.throughput(place)
            return (f"{median / MIB:,.0f} MiB/s ({median * 8 / 1e9:.1f} Gbit/s; runs "
                    f"{rates[0]:,.0f} to {rates[-1]:,.0f})")

        def rtt(place: str) -> str:
            runs = self.pings_by[place]
            return (f"{self.rtt(place):.3f} ms (run averages {min(r.avg_ms for r in runs):.3f} to "
                    f"{max(r.avg_ms for r in runs):.3f}, fastest ping "
                    f"{min(r.min_ms for r in runs):.3f})")

        return [
            ("Hosts", "2 simulated hosts (network namespaces on one underlay bridge), a "
                      f"dockerd each (Docker engine {self.docker_version})"),
            ("Runs", f"{self.runs}, alternating which target goes first"),
            ("Ping RTT, same host (median of run averages)", rtt("same")),
            ("Ping RTT, cross host", rtt("cross")),
            ("RTT cross / same (median of the rounds' ratios)",
             f"{self.rtt_ratio():.2f}x (ratio of the medians "
             f"{self.rtt('cross') / self.rtt('same'):.2f}x)"),
            ("HTTP throughput, same host (median)", rate("same")),
            ("HTTP throughput, cross host", rate("cross")),
            ("Throughput cross / same (median of the rounds' ratios)",
             f"{self.throughput_ratio():.2f} (ratio of the medians "
             f"{self.throughput('cross') / self.throughput('same'):.2f})"),
            ("Transfer", f"{self.size_mb} MiB sparse file, busybox httpd to busybox "
                         "wget -O /dev/null"),
            ("Pings per run", f"{self.pings} at {PING_INTERVAL * 1000:.0f} ms intervals"),
            ("Client container MTU", self.mtu),
            ("Measurement", f"{self.measure_seconds:.1f} s for both series"),
            ("Load average (1 min) before / after", f"{self.load[0]:.2f} / {self.load[1]:.2f}"),
        ]

    def checks(self) -> list[tuple[str, bool]]:
        size = self.size_mb * MIB
        short = [f"{p} host {self.bytes_by.get(p, 0):,}" for p in PLACES
                 if self.bytes_by.get(p) != size]
        return [
            ("no ping lost", all(r.received == r.sent for p in PLACES
                                 for r in self.pings_by[p])),
            (f"the client received all {size:,} bytes from both servers"
             + (f" (got: {', '.join(short)})" if short else ""), not short),
            ("no timed fetch failed" + (f" ({len(self.failed_fetches)} retried: "
                                        f"{self.failed_fetches[0]})" if self.failed_fetches
                                        else ""), not self.failed_fetches),
            ("every simulated host removed afterwards (overlay-hosts.sh down)",
             self.cleanup_error is None),
        ]

    def targets(self) -> list[tuple[str, bool]]:
        ratio = self.throughput_ratio()
        return [(f"cross-host throughput at least {TARGET_RATIO:g} of same-host ({ratio:.2f})",
                 ratio >= TARGET_RATIO)]

    def passed(self) -> bool:
        return all(ok for _, ok in self.checks() + self.targets())


def measure(report: Report, client: Host, servers: dict[str, str]) -> None:
    """Warm-ups and checks, then ``runs`` rounds of one ping series and one fetch per target."""
    for place, ip in servers.items():
        wait_reachable(client, ip)
        report.bytes_by[place] = fetched_bytes(client, f"http://{ip}/big")
        fetch_seconds(client, f"http://{ip}/big")  # warm-up: page cache, connection tracking
    report.load = (os.getloadavg()[0], 0.0)
    began = time.monotonic()
    for i in range(report.runs):
        order = PLACES if i % 2 == 0 else PLACES[::-1]
        for place in order:
            report.pings_by[place].append(ping(client, servers[place], report.pings))
        for place in order:
            url = f"http://{servers[place]}/big"
            try:
                seconds = fetch_seconds(client, url)
            except FetchFailed as exc:  # once: a second failure ends the run
                print(f"  {exc}; retrying once", flush=True)
                report.failed_fetches.append(str(exc))
                seconds = fetch_seconds(client, url)
            report.seconds_by[place].append(seconds)
        print(f"  run {i + 1}/{report.runs}: "
              + ", ".join(f"{p} {report.pings_by[p][-1].avg_ms:.3f} ms "
                          f"{report.size_mb / report.seconds_by[p][-1]:,.0f} MiB/s"
                          for p in PLACES), flush=True)
    report.measure_seconds = time.monotonic() - began
    report.load = (report.load[0], os.getloadavg()[0])


@contextmanager
def scratch_dir() -> Iterator[Path]:
    """A web root readable by the containers, with a sparse ``big`` file."""
    tmp = Path(tempfile.mkdtemp(prefix="corral-bench-net-"))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would lock out httpd's user
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_bench(args: argparse.Namespace) -> Report:
    report = Report(args.runs, args.pings, args.size_mb)
    run_id = f"net-{os.getpid()}"
    with scratch_dir() as tmp:
        www = tmp / "www"
        www.mkdir(mode=0o755)
        with (www / "big").open("wb") as big:
            big.truncate(args.size_mb * MIB)
        (www / "big").chmod(0o644)
        try:
            print("bringing up 2 simulated hosts (scripts/overlay-hosts.sh up 2)", flush=True)
            h1, h2 = hosts_up(2)
            report.docker_version = docker(h1, "version", "--format",
                                           "{{.Server.Version}}").strip()
            apply_overlay(h1, [h2])
            apply_overlay(h2, [h1])
            servers = start_containers(h1, h2, www, run_id)
            report.mtu = client_sh(h1, "cat /sys/class/net/eth0/mtu").strip()
            print(f"measuring: {args.runs} runs of {args.pings} pings and a {args.size_mb} MiB "
                  "fetch, same host and cross host", flush=True)
            measure(report, h1, servers)
        finally:
            print("removing the simulated hosts (scripts/overlay-hosts.sh down)", flush=True)
            report.cleanup_error = hosts_down()
            if report.cleanup_error is not None:
                print(f"{PROG}: clean-up failed: {report.cleanup_error}", file=sys.stderr)
    return report


# --- output --------------------------------------------------------------------------------


def print_summary(report: Report) -> None:
    print()
    print(f"Network benchmark: {_machine()}")
    rows = report.rows()
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    print("Checks:")
    for name, ok in report.checks():
        print(f"  {_verdict(ok)}  {name}")
    print("Target:")
    for name, ok in report.targets():
        print(f"  {_verdict(ok)}  {name}")


def docs_section(report: Report) -> str:
    today = datetime.date.today().isoformat()
    lines = [
        MARK_START, "## Network (bench/network.py)", "",
        f"Measured {today} in one run of `bench/network.py --runs {report.runs} --pings "
        f"{report.pings} --size-mb {report.size_mb}`",
        f"on {_machine()},", f"Docker engine {report.docker_version}, image `{IMAGE}`.", "",
        "What is measured. Two simulated hosts from `scripts/overlay-hosts.sh up 2` (network",
        "namespaces on one underlay bridge, each with its own dockerd and FORWARD DROP), the",
        "overlay programmed on each by `python -m agent.network apply -` inside its namespace.",
        "On `corral-managed`, a client container on host 1 talks to a busybox httpd container on",
        "host 1 (same host: one bridge) and to one on host 2 (cross host: the VXLAN overlay over",
        "the underlay). RTT: busybox `ping`'s average per run, the median over the runs.",
        "Throughput: `wget -O /dev/null` of a sparse file, timed inside the client container",
        "(busybox `adjtimex` reads the clock to the microsecond), so `docker exec` does not count;",
        "the median over the runs. Runs alternate which target goes first; a ratio is the median",
        "of the runs' own ratios (their two measurements are seconds apart, so load from",
        "elsewhere falls on both), the ratio of the medians beside it. Both hosts share one",
        "kernel and its cores (and the machine is shared: see the load average), so the",
        "absolutes are this machine's; the ratios travel better.",
        "", "| Figure | Value |", "| --- | --- |"]
    lines += [f"| {label} | {value} |" for label, value in report.rows()]
    lines += ["", "| Check | Result |", "| --- | --- |"]
    lines += [f"| {name} | {_verdict(ok)} |" for name, ok in report.checks()]
    lines += ["", f"Target: cross-host HTTP throughput at least {TARGET_RATIO:g} of same-host.",
              "", "| Target | Result |", "| --- | --- |"]
    lines += [f"| {name} | {_verdict(ok)} |" for name, ok in report.targets()]
    return "\n".join([*lines, MARK_END])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7,
                        help="rounds, each one ping series and one fetch per target (7)")
    parser.add_argument("--pings", type=int, default=50, help="pings per series (50)")
    parser.add_argument("--size-mb", type=int, default=512,
                        help="MiB fetched in each transfer (512)")
    parser.add_argument("--write-docs", action="store_true",
                        help=f"replace the network section of {DOCS.relative_to(ROOT)}")
    return parser


def _preflight() -> None:
    """One-line exits for what would make the run fail at once."""
    if os.geteuid() != 0:
        sys.exit(f"{PROG}: must run as root (network namespaces, a dockerd per simulated host)")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        sys.exit(f"{PROG}: {', '.join(missing)} not found (apt-get install iproute2 util-linux "
                 "iptables docker.io)")
    if SWITCH_NETNS.exists():
        sys.exit(f"{PROG}: simulated hosts already exist (another run or test uses them); "
                 "remove them with scripts/overlay-hosts.sh down")
    try:
        run(["docker", "version", "--format", "{{.Server.Version}}"], timeout=20)
    except BenchError:
        sys.exit(f"{PROG}: no Docker engine answers on the default socket (the test image is "
                 "built there; try scripts/start-dockerd.sh)")


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Interrupted


def main() -> None:
    args = _parser().parse_args()
    if args.runs < 1 or args.pings < 1 or args.size_mb < 1:
        sys.exit(f"{PROG}: --runs, --pings and --size-mb must be at least 1")
    _preflight()
    signal.signal(signal.SIGTERM, _on_sigterm)
    began = time.monotonic()
    try:
        report = run_bench(args)
    except (KeyboardInterrupt, Interrupted):
        sys.exit(f"{PROG}: interrupted")
    except (BenchError, OSError) as exc:
        sys.exit(f"{PROG}: {exc}")
    print_summary(report)
    print(f"Run time {time.monotonic() - began:.0f} s")
    if args.write_docs:
        write_section(docs_section(report), MARK_START, MARK_END)
        print(f"wrote the network section of {DOCS}")
    if not report.passed():
        sys.exit(1)


if __name__ == "__main__":
    main()
