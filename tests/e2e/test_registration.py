"""Registration and liveness of real agents on this machine's Docker engine."""

from __future__ import annotations

import json
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.e2e.conftest import ExtraHost
from tests.support.processes import (
    ServerProcess,
    free_port,
    start_agent,
    stop,
)
from tests.support.timing import seconds, wait_for

AGENT = str(Path(sys.executable).parent / "corral-agent")


def command_argv(server: ServerProcess, state_dir: Path) -> list[str]:
    """The registration command exactly as Corral shows it, run as root (no sudo needed)."""
    tokens = server.api("GET", "/registrationtokens").json()["data"]
    argv = shlex.split(tokens[0]["command"])
    assert argv[:2] == ["sudo", "corral-agent"]
    return [AGENT, *argv[2:], "--state-dir", str(state_dir)]


def run_command(server: ServerProcess, state_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(command_argv(server, state_dir), stdout=out,
                                stderr=subprocess.STDOUT)


def active_host(server: ServerProcess) -> dict[str, Any] | None:
    hosts = [h for h in server.hosts() if h["state"] == "active"]
    return hosts[0] if len(hosts) == 1 else None


def docker_version() -> str:
    return subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                          capture_output=True, text=True, check=True).stdout.strip()


def default_route_source() -> str:
    route = json.loads(subprocess.run(["ip", "-4", "-j", "route", "get", "1.1.1.1"],
                                      capture_output=True, text=True, check=True).stdout)
    return str(route[0]["prefsrc"])


def test_registration_command_makes_this_machine_an_active_host_with_real_facts(
        docker_engine: None, server: ServerProcess, tmp_path: Path) -> None:
    agent = run_command(server, tmp_path / "state", tmp_path / "agent.log")
    try:
        started = time.monotonic()
        host = wait_for(lambda: active_host(server), 5, "the host to become active")
        assert time.monotonic() - started < seconds(5)
        assert host["agentState"] == "active"
        assert host["hostname"] == socket.gethostname()
        # The server is on loopback: the host is known by the source address of its default
        # route, where other hosts reach it (as the kernel's own route lookup says).
        assert host["agentIpAddress"] == default_route_source()
        info = host["info"]
        assert info["osInfo"]["dockerVersion"] == docker_version()
        assert info["cpuInfo"]["count"] >= 1 and host["milliCpu"] >= 1000
        assert host["memory"] > 0 and info["memoryInfo"]["memAvailable"] > 0
        assert "/" in info["diskInfo"]["mountPoints"]
        assert host["labels"]["io.rancher.host.docker_version"] == \
            ".".join(docker_version().split(".")[:2])
        inspected = server.api("POST", f"/hosts/{host['id']}?action=inspect").json()
        assert inspected["docker"]["version"] == docker_version()
    finally:
        stop(agent)
    log = (tmp_path / "agent.log").read_text()
    assert "registered with" in log and "connected to" in log


def test_running_the_command_again_reattaches_to_the_same_host(
        docker_engine: None, server: ServerProcess, tmp_path: Path) -> None:
    first = run_command(server, tmp_path / "state", tmp_path / "first.log")
    host = wait_for(lambda: active_host(server), 5, "the host to become active")
    second = run_command(server, tmp_path / "state", tmp_path / "second.log")
    try:
        # The newer agent takes over; the older one stops with a one-line reason.
        assert first.wait(timeout=seconds(10)) == 1
        assert "another agent connected for this host" in (tmp_path / "first.log").read_text()
        again = wait_for(lambda: active_host(server), 5, "the host to be active again")
        assert again["id"] == host["id"]
        assert len(server.hosts()) == 1
    finally:
        stop(second)
        stop(first)


def test_killed_agent_goes_reconnecting_then_disconnected_and_comes_back(
        docker_engine: None, server: ServerProcess, tmp_path: Path) -> None:
    agent = run_command(server, tmp_path / "state", tmp_path / "agent.log")
    host = wait_for(lambda: active_host(server), 5, "the host to become active")
    agent.send_signal(signal.SIGKILL)
    agent.wait()
    killed = time.monotonic()
    wait_for(lambda: server.get_host(host["id"])["state"] == "reconnecting", 5,
             "the host to be reconnecting")
    wait_for(lambda: server.get_host(host["id"])["state"] == "disconnected", 20,
             "the host to be disconnected")
    assert time.monotonic() - killed <= seconds(17)  # 15 s grace, plus one liveness tick
    restarted = start_agent(None, tmp_path / "state", log_path=tmp_path / "agent2.log")
    try:
        wait_for(lambda: server.get_host(host["id"])["state"] == "active", 10,
                 "the host to be active again")
        assert server.get_host(host["id"])["agentState"] == "active"
    finally:
        stop(restarted)


def test_wrong_token_fails_fast_with_one_line_and_no_secret_in_logs(
        docker_engine: None, server: ServerProcess, tmp_path: Path) -> None:
    result = subprocess.run([AGENT, f"{server.url}/scripts/thisisnotatoken",
                             "--state-dir", str(tmp_path / "state")],
                            capture_output=True, text=True, timeout=seconds(30))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "registration token was rejected" in lines[0]
    result = subprocess.run([AGENT, "ftp://nowhere/x", "--state-dir", str(tmp_path / "s2")],
                            capture_output=True, text=True, timeout=seconds(30))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1

    agent = start_agent(None, tmp_path / "state3", "--log-level", "DEBUG",
                        log_path=tmp_path / "agent.log")
    assert agent.wait(timeout=seconds(10)) == 1  # not registered: nothing to run with
    argv = command_argv(server, tmp_path / "state4")
    with (tmp_path / "debug.log").open("ab") as out:
        agent = subprocess.Popen([*argv, "--log-level", "DEBUG", "--log-format", "json"],
                                 stdout=out, stderr=subprocess.STDOUT)
    try:
        host = wait_for(lambda: active_host(server), 5, "the host to become active")
        server.api("POST", f"/hosts/{host['id']}?action=inspect")
    finally:
        stop(agent)
    creds = json.loads((tmp_path / "state4" / "credentials.json").read_text())
    token = argv[1].rsplit("/", 1)[1]
    # The server prints the registration command once, on first start; no log line has it.
    server_lines = [line for line in server.log().splitlines() if re.match(r"\d{4}-", line)]
    for log in ((tmp_path / "debug.log").read_text(), "\n".join(server_lines)):
        assert creds["secret_key"] not in log and token not in log
    lines = (tmp_path / "debug.log").read_text().strip().splitlines()
    assert all(json.loads(line)["level"] for line in lines)
    assert any("instruction host.inspect" in json.loads(line)["message"] for line in lines)


def test_two_hosts_on_one_machine_are_listed_with_their_own_facts(
        second_host: ExtraHost, tmp_path: Path) -> None:
    port = free_port()
    server = ServerProcess(data_dir=tmp_path / "data", port=port, host="0.0.0.0")
    server.start()
    local = remote = None
    try:
        url = server.registration_url().replace("0.0.0.0", second_host.gateway)
        local = start_agent(url, tmp_path / "local", log_path=tmp_path / "local.log")
        # The second agent runs inside the namespace, with its own hostname and daemon.
        remote = start_agent(
            url, tmp_path / "remote", log_path=tmp_path / "remote.log",
            env={"DOCKER_HOST": second_host.docker_host},
            prefix=[*second_host.nsenter(), "unshare", "--uts", "sh", "-c",
                    'hostname corral-h2 && exec "$@"', "sh"])

        def both_active() -> list[dict[str, Any]] | None:
            hosts = [h for h in server.hosts() if h["state"] == "active"]
            return hosts if len(hosts) == 2 else None

        hosts = {h["hostname"]: h for h in wait_for(both_active, 15, "two active hosts")}
        assert set(hosts) == {socket.gethostname(), "corral-h2"}
        h2 = hosts["corral-h2"]
        h1 = hosts[socket.gethostname()]
        assert h2["agentIpAddress"] == second_host.ip
        assert h1["agentIpAddress"] != second_host.ip
        assert h2["info"]["dockerInfo"]["rootDir"] == "/var/lib/docker-h2"
        assert h1["info"]["dockerInfo"]["rootDir"] != "/var/lib/docker-h2"
        assert h1["id"] != h2["id"]
    finally:
        for proc in (local, remote):
            if proc is not None:
                stop(proc)
        server.stop()


def test_server_restart_sends_agents_away_and_they_come_back(
        docker_engine: None, tmp_path: Path) -> None:
    server = ServerProcess(data_dir=tmp_path / "data", port=free_port()).start()
    agent = start_agent(server.registration_url(), tmp_path / "state",
                        log_path=tmp_path / "agent.log")
    try:
        host = wait_for(lambda: active_host(server), 5, "the host to become active")
        assert server.stop() == 0  # SIGTERM: a clean exit
        wait_for(lambda: "server shutting down" in (tmp_path / "agent.log").read_text(), 5,
                 "the agent to be told the server is going away")
        assert agent.poll() is None  # the agent waits for the server to come back
        server.start()
        back = wait_for(lambda: active_host(server), 30, "the host to be active again")
        assert back["id"] == host["id"] and len(server.hosts()) == 1
    finally:
        stop(agent)
        server.stop()
