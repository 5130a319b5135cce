"""A running Corral for container tests: a server process and this machine's agent."""

from __future__ import annotations

import json
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cattle

from tests.e2e.commands import stops_on_term
from tests.support.processes import ACCESS_KEY, SECRET_KEY, ServerProcess, start_agent, stop
from tests.support.timing import wait_for

IMAGE = "corral-test/busybox:latest"
HTTPD = stops_on_term("mkdir -p /w; echo hello > /w/index.html; httpd -f -p 80 -h /w")
SLEEPER = stops_on_term("sleep 100000")


@dataclass
class Cluster:
    server: ServerProcess
    tmp: Path
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # Every container a test makes carries this label, so cleanup never touches others'.
    run_label: str = field(default_factory=lambda: f"t-{uuid.uuid4().hex[:10]}")

    def client(self) -> cattle.Client:
        return cattle.Client(url=f"{self.server.url}/schemas", access_key=ACCESS_KEY,
                             secret_key=SECRET_KEY, headers={"Accept": "application/json"})

    def start_agent(self, name: str = "local", url: str | None = None, **kw: Any) -> None:
        registration = url or self.server.registration_url()
        first = not (self.tmp / f"state-{name}" / "credentials.json").exists()
        self.agents[name] = start_agent(registration if first else None,
                                        self.tmp / f"state-{name}",
                                        log_path=self.tmp / f"agent-{name}.log", **kw)

    def kill_agent(self, name: str = "local") -> None:
        proc = self.agents.pop(name)
        proc.kill()
        proc.wait()

    def active_hosts(self, count: int) -> list[dict[str, Any]]:
        def ready() -> list[dict[str, Any]] | None:
            hosts = [h for h in self.server.hosts() if h["state"] == "active"]
            return hosts if len(hosts) == count else None

        return wait_for(ready, 15, f"{count} active hosts")

    def labels(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"corral.test": self.run_label, **(extra or {})}

    def close(self, docker_hosts: tuple[str | None, ...] = (None,)) -> None:
        for proc in self.agents.values():
            stop(proc)
        for docker_host in docker_hosts:
            remove_labelled(f"corral.test={self.run_label}", docker_host)
            # Tests name their volumes after the run label.
            names = docker("volume", "ls", "-q", "--filter", f"name={self.run_label}",
                           docker_host=docker_host).split()
            if names:
                docker("volume", "rm", "-f", *names, docker_host=docker_host)


def docker(*args: str, docker_host: str | None = None) -> str:
    prefix = ["docker"] if docker_host is None else ["docker", "-H", docker_host]
    result = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def remove_labelled(label: str, docker_host: str | None = None) -> None:
    ids = docker("ps", "-aq", "--filter", f"label={label}", docker_host=docker_host).split()
    if ids:
        docker("rm", "-f", "-v", *ids, docker_host=docker_host)


def docker_state(container_uuid: str, docker_host: str | None = None) -> dict[str, Any] | None:
    ids = docker("ps", "-aq", "--filter", f"label=io.rancher.container.uuid={container_uuid}",
                 docker_host=docker_host).split()
    if not ids:
        return None
    assert len(ids) == 1, f"{len(ids)} docker containers for {container_uuid}"
    prefix = ["docker"] if docker_host is None else ["docker", "-H", docker_host]
    result = subprocess.run([*prefix, "inspect", ids[0]], capture_output=True, text=True,
                            timeout=60)
    if result.returncode != 0 and "No such object" in result.stderr:
        return None  # removed between the listing and the inspection
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout)[0])
