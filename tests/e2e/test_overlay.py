"""The managed overlay on three simulated hosts (scripts/overlay-hosts.sh: namespaces on one
underlay switch, each with its own dockerd and FORWARD DROP): ``python -m agent.network`` run
inside each host's namespace, containers reaching each other by 10.42.x.y with their real
source address, a removed peer leaving no trace, a dockerd restart, and teardown."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.support.timing import seconds, wait_for

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "overlay-hosts.sh"
IMAGE = "corral-test/busybox:latest"
CGI = '#!/bin/sh\necho "Content-Type: text/plain"\necho\necho "$REMOTE_ADDR"\n'


@dataclass(frozen=True)
class Host:
    index: int
    netns: str
    docker_host: str
    ip: str

    @property
    def subnet(self) -> str:
        return f"10.42.{self.index}.0/24"

    @property
    def container_ip(self) -> str:
        return f"10.42.{self.index}.10"

    def run(self, *argv: str, input: str | None = None, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``argv`` inside this host's network namespace, with its DOCKER_HOST."""
        result = subprocess.run(["nsenter", f"--net={self.netns}", *argv], input=input,
                                capture_output=True, text=True, timeout=seconds(timeout),
                                cwd=REPO, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin:"
                                               "/usr/local/bin", "DOCKER_HOST": self.docker_host})
        if check:
            assert result.returncode == 0, f"{argv}: {result.stderr}"
        return result

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("docker", *args, check=check)

    def overlay(self, command: str, peers: list[Host]) -> list[list[str]]:
        """``python -m agent.network COMMAND`` with ``peers``: the commands run (or to run)."""
        description = {"underlayIp": self.ip, "subnet": self.subnet,
                       "peers": [{"subnet": p.subnet, "underlayIp": p.ip} for p in peers]}
        out = self.run(sys.executable, "-m", "agent.network", command, "-",
                       input=json.dumps(description)).stdout
        commands: list[list[str]] = json.loads(out)
        return commands

    def entries(self) -> tuple[Any, Any, Any]:
        """The VXLAN device's routes, neighbours and FDB entries, as iproute2 prints them."""
        return (json.loads(self.run("ip", "-4", "-j", "route", "show", "dev", "corral-vx").stdout),
                json.loads(self.run("ip", "-4", "-j", "neigh", "show", "dev", "corral-vx").stdout),
                json.loads(self.run("bridge", "-j", "fdb", "show", "dev", "corral-vx").stdout))

    def fetch(self, url: str) -> subprocess.CompletedProcess[str]:
        # busybox 1.35's `wget -T` segfaults: bound it with timeout instead.
        return self.docker("exec", "web", "timeout", "5", "wget", "-qO-", url, check=False)

    def ping(self, ip: str) -> bool:
        return self.docker("exec", "web", "ping", "-c", "1", "-W", "2", ip,
                           check=False).returncode == 0


@pytest.fixture
def hosts(docker_engine: None) -> Iterator[list[Host]]:
    up = subprocess.run(["bash", str(SCRIPT), "up", "3"], capture_output=True, text=True,
                        timeout=seconds(120))
    try:
        assert up.returncode == 0, up.stderr
        found = []
        for line in up.stdout.strip().splitlines():
            values = dict(part.split("=", 1) for part in line.split())
            found.append(Host(index=int(values["NAME"].removeprefix("ovl-h")),
                              netns=values["NETNS"], docker_host=values["DOCKER_HOST"],
                              ip=values["IP"]))
        yield found
    finally:
        down = subprocess.run(["bash", str(SCRIPT), "down"], capture_output=True, text=True,
                              timeout=seconds(120))
        assert down.returncode == 0, down.stderr


def start_web(host: Host, www: Path) -> None:
    host.docker("run", "-d", "--name", "web", "--restart", "always", "--network",
                "corral-managed", "--ip", host.container_ip, "-v", f"{www}:/www:ro", IMAGE,
                "httpd", "-f", "-p", "80", "-h", "/www")


def assert_reaches(sender: Host, receiver: Host) -> None:
    """``sender``'s container pings and fetches from ``receiver``'s, which sees its address."""
    assert sender.ping(receiver.container_ip), f"{sender.ip} cannot ping {receiver.ip}"
    page = sender.fetch(f"http://{receiver.container_ip}/")
    assert page.stdout == "hello\n", page.stderr
    # httpd's CGI sees the connection's source: the container's own address, not a NAT's.
    seen = sender.fetch(f"http://{receiver.container_ip}/cgi-bin/ip").stdout.strip()
    assert seen.removeprefix("[::ffff:").removesuffix("]") == sender.container_ip


def test_containers_on_three_hosts_reach_each_other_until_a_peer_is_removed(
        hosts: list[Host], tmp_path: Path) -> None:
    www = tmp_path / "www"
    (www / "cgi-bin").mkdir(parents=True)
    (www / "index.html").write_text("hello\n")
    (www / "cgi-bin" / "ip").write_text(CGI)
    (www / "cgi-bin" / "ip").chmod(0o755)
    www.chmod(0o755)
    tmp_path.chmod(0o755)
    h1, h2, h3 = hosts

    def others(host: Host, *, without: Host | None = None) -> list[Host]:
        return [h for h in hosts if h is not host and h is not without]

    for host in hosts:
        assert host.overlay("apply", others(host)), "a fresh host needs commands"
        assert host.overlay("plan", others(host)) == []
        start_web(host, www)
    for sender in hosts:
        for receiver in others(sender):
            wait_for(partial(sender.ping, receiver.container_ip), 10,
                     f"{sender.ip}'s container to reach {receiver.ip}'s")
            assert_reaches(sender, receiver)

    # h3 leaves the peer lists of h1 and h2: nothing of it is left there.
    for host in (h1, h2):
        host.overlay("apply", others(host, without=h3))
        assert host.overlay("plan", others(host, without=h3)) == []
        routes, neighbours, fdb = host.entries()
        assert [r["dst"] for r in routes] == [h.subnet for h in others(host, without=h3)]
        assert "10.42.3.0" not in [n["dst"] for n in neighbours]
        assert "0e:42:0a:2a:03:00" not in [e["mac"] for e in fdb]
        assert not host.ping(h3.container_ip)
        assert host.fetch(f"http://{h3.container_ip}/").returncode != 0
    assert_reaches(h1, h2)
    assert_reaches(h2, h1)

    # A dockerd restart keeps the network and the rules (re-applying does nothing); one that
    # comes back without the network and with the jump to CORRAL-FORWARD gone (a new data root,
    # a firewall reload) is repaired by re-applying, as is the container's reachability.
    restart = subprocess.run(["bash", str(SCRIPT), "restart-docker", "2"], capture_output=True,
                             text=True, timeout=seconds(120))
    assert restart.returncode == 0, restart.stderr
    assert h2.overlay("plan", others(h2, without=h3)) == []
    h2.docker("rm", "-f", "web")
    h2.docker("network", "rm", "corral-managed")
    h2.run("iptables", "-D", "DOCKER-USER", "-j", "CORRAL-FORWARD")
    restart = subprocess.run(["bash", str(SCRIPT), "restart-docker", "2"], capture_output=True,
                             text=True, timeout=seconds(120))
    assert restart.returncode == 0, restart.stderr
    repaired = h2.overlay("apply", others(h2, without=h3))
    # The new bridge gets the discovery responder's address again.
    assert [c[:3] for c in repaired] == [["iptables", "-w", "-t"],
                                         ["docker", "network", "create"],
                                         ["ip", "addr", "add"]]
    assert h2.overlay("plan", others(h2, without=h3)) == []
    start_web(h2, www)
    def both_ways() -> bool:
        return h1.ping(h2.container_ip) and h2.ping(h1.container_ip)

    wait_for(both_ways, 20, "the containers to reach each other after the restart")
    assert_reaches(h1, h2)
    assert_reaches(h2, h1)

    # Teardown (a purged host): everything Corral added is gone, and a second one does nothing.
    for host in hosts:
        host.docker("rm", "-f", "web")
        assert host.overlay("teardown", []), "teardown had nothing to remove"
        assert host.overlay("teardown", []) == []
        assert host.run("ip", "link", "show", "corral-vx", check=False).returncode != 0
        rules = host.run("iptables", "-S").stdout + host.run("iptables", "-t", "nat",
                                                             "-S").stdout
        assert "CORRAL" not in rules
        assert host.docker("network", "inspect", "corral-managed", check=False).returncode != 0
