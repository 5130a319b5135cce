"""Simulated hosts for end-to-end tests (scripts/overlay-hosts.sh): network namespaces on
one underlay switch, each with its own dockerd and FORWARD DROP, as a stock host has, a Corral
server in the root namespace reached at ``SERVER_IP``, and real agents on the hosts."""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.commands import stops_on_term
from tests.support.processes import (
    ServerProcess,
    free_port,
    start_agent,
    stop,
    stop_balancers,
)
from tests.support.timing import seconds, wait_for

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "overlay-hosts.sh"
SERVER_IP = "10.99.0.253"  # the root namespace on the underlay (overlay-hosts.sh)
IMAGE = "corral-test/busybox:latest"
# httpd serving "hello" and, as a CGI, the address a request came from.
WEB = stops_on_term(
    "mkdir -p /www/cgi-bin && echo hello > /www/index.html && "
    "printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n' "
    "> /www/cgi-bin/ip && chmod 755 /www/cgi-bin/ip && httpd -f -p 80 -h /www")


@dataclass
class SimHost:
    index: int
    netns: str
    docker_host: str
    ip: str
    agent: subprocess.Popen[bytes] | None = None
    host_id: str | None = None

    def run(self, *argv: str, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["nsenter", f"--net={self.netns}", *argv], capture_output=True,
                                text=True, timeout=seconds(timeout),
                                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                     "DOCKER_HOST": self.docker_host})
        if check:
            assert result.returncode == 0, f"{argv}: {result.stderr}"
        return result

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("docker", *args, check=check)


@dataclass
class Overlay:
    server: ServerProcess
    hosts: list[SimHost]
    tmp: Path

    def start_agent(self, host: SimHost) -> None:
        state = self.tmp / f"state-{host.index}"
        first = not (state / "credentials.json").exists()
        host.agent = start_agent(self.server.registration_url() if first else None, state,
                                 log_path=self.tmp / f"agent-{host.index}.log",
                                 env={"DOCKER_HOST": host.docker_host},
                                 prefix=["nsenter", f"--net={host.netns}"])

        def registered() -> str | None:
            for found in self.server.hosts():
                if found.get("agentIpAddress") == host.ip and found["state"] == "active":
                    return str(found["id"])
            return None

        host.host_id = wait_for(registered, 30, f"host {host.ip} to be active")

    def api(self, method: str, path: str, **kw: Any) -> Any:
        resp = self.server.api(method, path, **kw)
        assert resp.status_code < 300, resp.text
        return resp.json()

    def launch(self, host: SimHost, name: str, labels: dict[str, str] | None = None) -> str:
        """A web container on ``host`` on the default (managed) network; its address."""
        created = self.api("POST", "/containers", json={
            "imageUuid": f"docker:{IMAGE}", "name": name, "command": WEB,
            "requestedHostId": host.host_id, "labels": labels or {}})

        def running() -> dict[str, Any] | None:
            found = self.api("GET", f"/containers/{created['id']}")
            assert found["state"] != "error", found.get("transitioningMessage")
            return found if found["state"] == "running" else None

        container = wait_for(running, 60, f"{name} to run")
        address = str(container["primaryIpAddress"])
        assert ipaddress.ip_address(address) in ipaddress.ip_network("10.42.0.0/16")
        return address

    def network_state(self, host: SimHost) -> tuple[Any, Any]:
        """What the host's agent reported: the overlay version it runs, or its error."""
        found = self.server.get_host(str(host.host_id))
        return found.get("transitioning"), found.get("transitioningMessage")


def fetch(host: SimHost, container: str, url: str) -> subprocess.CompletedProcess[str]:
    # busybox 1.35's `wget -T` segfaults: bound it with timeout instead.
    return host.docker("exec", container, "timeout", "3", "wget", "-qO-", url, check=False)


def ping(host: SimHost, container: str, ip: str) -> bool:
    return host.docker("exec", container, "ping", "-c", "1", "-W", "1", ip,
                       check=False).returncode == 0


def seen_source(host: SimHost, container: str, ip: str) -> str | None:
    """The address ``ip``'s httpd saw ``container`` connect from, or None if it failed."""
    result = fetch(host, container, f"http://{ip}/cgi-bin/ip")
    if result.returncode != 0:
        return None
    return result.stdout.strip().removeprefix("[::ffff:").removesuffix("]")


def overlay_hosts(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=seconds(180))


@contextmanager
def simulated_hosts(tmp_path: Path, count: int, agents: int,
                    server_env: dict[str, str] | None = None) -> Iterator[Overlay]:
    """``count`` hosts, the first ``agents`` of them registered; everything removed after."""
    up = overlay_hosts("up", str(count))
    assert up.returncode == 0, up.stderr
    hosts = []
    for line in up.stdout.strip().splitlines():
        values = dict(part.split("=", 1) for part in line.split())
        hosts.append(SimHost(int(values["NAME"].removeprefix("ovl-h")), values["NETNS"],
                             values["DOCKER_HOST"], values["IP"]))
    server = ServerProcess(data_dir=tmp_path / "data", port=free_port(), host=SERVER_IP,
                           extra_env=server_env or {})
    try:
        server.start()
        running = Overlay(server, hosts, tmp_path)
        for host in hosts[:agents]:
            running.start_agent(host)
        yield running
    finally:
        for host in hosts:
            if host.agent is not None:
                stop(host.agent)
        stop_balancers(tmp_path)
        server.stop()
        down = overlay_hosts("down")
        assert down.returncode == 0, down.stderr
