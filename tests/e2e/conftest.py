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
