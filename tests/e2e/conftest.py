"""End-to-end fixtures: a real Docker engine, real agent processes, extra test hosts.

These tests need root and a running Docker engine; they fail (never skip) without them. Run
the fast layers alone with ``scripts/test -m "not integration"``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.cluster import Cluster
from tests.support.processes import ServerProcess, free_port

REPO = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def docker_engine() -> None:
    result = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, (
        "these tests need a running Docker engine (scripts/start-dockerd.sh): "
        + result.stderr.strip())


@dataclass(frozen=True)
class ExtraHost:
    """A second host: its own network namespace, address and Docker daemon."""

    name: str
    ip: str
    gateway: str
    docker_host: str

    def nsenter(self) -> list[str]:
        return ["nsenter", f"--net=/var/run/netns/{self.name}"]


@pytest.fixture
def cluster(docker_engine: None, tmp_path: Path) -> Iterator[Cluster]:
    """A server process and this machine's agent, its host active."""
    server = ServerProcess(data_dir=tmp_path / "data", port=free_port()).start()
    running = Cluster(server=server, tmp=tmp_path)
    try:
        running.start_agent()
        running.active_hosts(1)
        yield running
    finally:
        running.close()
        server.stop()


@pytest.fixture
def second_host(docker_engine: None) -> Iterator[ExtraHost]:
    script = REPO / "scripts" / "testhost.sh"
    result = subprocess.run(["bash", str(script), "up", "h2", "2"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    values = dict(part.split("=", 1) for part in result.stdout.strip().splitlines()[-1].split())
    try:
        yield ExtraHost(name="h2", ip=values["IP"], gateway="10.99.2.1",
                       docker_host=values["DOCKER_HOST"])
    finally:
        subprocess.run(["bash", str(script), "down", "h2"], capture_output=True, timeout=120)


@dataclass(frozen=True)
class PrivateRegistry:
    address: str        # host:port, as Docker names it
    username: str
    password: str
    image: str          # an image pushed there, removed from the local engine


@pytest.fixture
def private_registry(docker_engine: None, tmp_path: Path) -> Iterator[PrivateRegistry]:
    """Distribution's registry on loopback with htpasswd auth, holding the test image."""
    from tests.support.timing import wait_for

    port = free_port()
    root = tmp_path / "registry"
    root.mkdir()
    htpasswd = subprocess.run(["htpasswd", "-Bbn", "alice", "s3cret pass"], check=True,
                              capture_output=True, text=True).stdout
    (root / "htpasswd").write_text(htpasswd)
    (root / "config.yml").write_text(
        "version: 0.1\n"
        f"storage: {{filesystem: {{rootdirectory: {root / 'data'}}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}}}\n"
        f"auth: {{htpasswd: {{realm: test, path: {root / 'htpasswd'}}}}}\n")
    log = (root / "log").open("wb")
    proc = subprocess.Popen(["docker-registry", "serve", str(root / "config.yml")],
                            stdout=log, stderr=subprocess.STDOUT)
    address = f"localhost:{port}"
    image = f"{address}/team/busybox:1"
    try:
        def up() -> bool:
            import urllib.error
            import urllib.request
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            except urllib.error.HTTPError as exc:
                return exc.code == 401
            except OSError:
                return False
            return True

        wait_for(up, 15, "the registry to answer")
        subprocess.run(["docker", "login", "-u", "alice", "--password-stdin", address],
                       input="s3cret pass", check=True, capture_output=True, text=True)
        try:
            subprocess.run(["docker", "tag", "corral-test/busybox:latest", image], check=True)
            subprocess.run(["docker", "push", image], check=True, capture_output=True)
        finally:
            subprocess.run(["docker", "logout", address], capture_output=True)
        subprocess.run(["docker", "rmi", image], check=True, capture_output=True)
        yield PrivateRegistry(address=address, username="alice", password="s3cret pass",
                              image=image)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True)
