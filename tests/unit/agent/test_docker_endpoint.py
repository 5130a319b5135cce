"""Where a raw connection reaches the engine, from DOCKER_HOST as docker-py reads it."""

from __future__ import annotations

import ssl

import pytest

from agent.runtime import DockerRuntime, RuntimeUnavailable


def endpoint(**environ: str) -> DockerRuntime:
    """A runtime configured from ``environ``; nothing is contacted."""
    return DockerRuntime.from_env(environ)


def test_the_default_is_the_unix_socket() -> None:
    found = DockerRuntime.from_env({}).engine_endpoint()
    assert (found.path, found.tls) == ("/var/run/docker.sock", None)


def test_a_unix_docker_host_names_its_socket() -> None:
    found = endpoint(DOCKER_HOST="unix:///run/user/1000/docker.sock").engine_endpoint()
    assert found.path == "/run/user/1000/docker.sock"


def test_a_tcp_docker_host_is_a_host_and_port_without_tls() -> None:
    found = endpoint(DOCKER_HOST="tcp://10.0.0.5:2375").engine_endpoint()
    assert (found.path, found.host, found.port, found.tls) == (None, "10.0.0.5", 2375, None)


def test_tls_verify_without_certificates_verifies_against_the_ca() -> None:
    found = endpoint(DOCKER_HOST="https://docker.example:2376").engine_endpoint()
    assert (found.host, found.port) == ("docker.example", 2376)
    assert isinstance(found.tls, ssl.SSLContext)
    assert found.tls.verify_mode is ssl.CERT_REQUIRED and found.tls.check_hostname


def test_an_ssh_docker_host_cannot_be_relayed_and_says_so() -> None:
    with pytest.raises(RuntimeUnavailable) as refused:
        endpoint(DOCKER_HOST="ssh://admin@box:22").engine_endpoint()
    assert "ssh://admin@box:22" in str(refused.value)
    assert "cannot be relayed" in str(refused.value)
