"""DockerRuntime against the real Docker engine, and against engines that are not there."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.runtime import DockerRuntime, RuntimeUnavailable
from shared.errors import ErrorCode, InstructionError

pytestmark = pytest.mark.integration


@pytest.fixture
def runtime() -> Iterator[DockerRuntime]:
    runtime = DockerRuntime.from_env(os.environ, timeout=10)
    yield runtime
    runtime.close()


def unreachable(host: str) -> RuntimeUnavailable:
    """The error a runtime pointed at ``host`` raises; also checks it leaks no socket."""
    runtime = DockerRuntime.from_env({"DOCKER_HOST": host}, timeout=5)
    try:
        with pytest.raises(RuntimeUnavailable) as caught:
            runtime.info()
    finally:
        runtime.close()
    gc.collect()  # an unclosed socket would now raise ResourceWarning (an error here)
    return caught.value


def test_version_reports_the_engine(runtime: DockerRuntime) -> None:
    version = runtime.version()
    assert version["Version"]
    assert version["ApiVersion"]
    assert version["Os"] == "linux"
    assert version["Arch"]
    assert version["KernelVersion"]


def test_info_reports_the_engine(runtime: DockerRuntime) -> None:
    info = runtime.info()
    assert info["Driver"]
    assert info["DockerRootDir"]
    assert isinstance(info["Containers"], int)
    assert isinstance(info["ContainersRunning"], int)
    assert info["OperatingSystem"]


async def test_calls_work_off_the_event_loop(runtime: DockerRuntime) -> None:
    version, info = await asyncio.gather(
        asyncio.to_thread(runtime.version), asyncio.to_thread(runtime.info)
    )
    assert version["ApiVersion"]
    assert info["ServerVersion"] == version["Version"]


def test_missing_socket_is_unavailable_with_a_clear_message() -> None:
    error = unreachable("unix:///nonexistent.sock")
    assert error.code is ErrorCode.RUNTIME_UNAVAILABLE
    assert str(error) == (
        "Docker engine at unix:///nonexistent.sock is not reachable: "
        "its socket does not exist (is the Docker daemon running?)."
    )


def test_socket_nobody_listens_on_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bound:
        bound.bind(str(path))  # bound, never listening: connect() is refused
        error = unreachable(f"unix://{path}")
    assert str(error) == f"Docker engine at unix://{path} is not reachable: connection refused."


def test_closed_tcp_port_is_refused() -> None:
    error = unreachable("tcp://127.0.0.1:1")
    assert "tcp://127.0.0.1:1 is not reachable: connection refused" in str(error)


def test_calls_retry_the_connection_each_time() -> None:
    runtime = DockerRuntime.from_env({"DOCKER_HOST": "unix:///nonexistent.sock"})
    try:
        for _ in range(2):
            with pytest.raises(RuntimeUnavailable):
                runtime.version()
    finally:
        runtime.close()


def test_closed_runtime_refuses_calls(runtime: DockerRuntime) -> None:
    runtime.version()
    runtime.close()
    runtime.close()
    with pytest.raises(RuntimeUnavailable, match="is closed"):
        runtime.info()


def test_environment_comes_only_from_the_given_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://203.0.113.1:2375")
    assert DockerRuntime.from_env({}).address == "unix:///var/run/docker.sock"


def test_unusable_docker_host_is_a_value_error_without_password() -> None:
    with pytest.raises(ValueError, match="DOCKER_HOST") as caught:
        DockerRuntime.from_env({"DOCKER_HOST": "ssh://bob:s3cret@host:22:bad"})
    assert "s3cret" not in str(caught.value)


def test_tls_without_certificates_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="certificate"):
        DockerRuntime.from_env({"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(tmp_path)})
    with pytest.raises(ValueError, match="DOCKER_CERT_PATH"):
        DockerRuntime.from_env({"DOCKER_TLS_VERIFY": "1"})


def test_unreachable_error_is_an_instruction_error() -> None:
    assert isinstance(unreachable("unix:///nonexistent.sock"), InstructionError)
