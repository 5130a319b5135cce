"""Logs and exec through the server and the agent's own websocket (no port opened on a host)."""

from __future__ import annotations

import base64

import pytest
import requests
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.e2e.cluster import IMAGE, Cluster
from tests.support.timing import seconds

TALKER = ["sh", "-c", "echo hello-logs; echo to-stderr >&2; "
                      "trap 'exit 0' TERM; while true; do sleep 1; done"]



def test_logs_action_streams_the_containers_output(cluster: Cluster) -> None:
    api = cluster.client()
    container = api.wait_success(api.create_container(imageUuid=f"docker:{IMAGE}",
                                                      command=TALKER, labels=cluster.labels()))
    access = container.logs(follow=True, lines=10)
    assert access.type == "hostAccess" and access.url.startswith("ws://")
    received = ""
    with connect(access.url, open_timeout=seconds(5)) as ws:
        while "hello-logs" not in received or "to-stderr" not in received:
            received += str(ws.recv(timeout=seconds(10)))
    # The ticket was good for one connection only.
    with pytest.raises(Exception) as again, connect(access.url, open_timeout=seconds(5)):
        pass
    assert "401" in str(again.value)


def test_execute_runs_a_command_with_input_and_reports_its_exit_code(cluster: Cluster) -> None:
    api = cluster.client()
    container = api.wait_success(api.create_container(imageUuid=f"docker:{IMAGE}",
                                                      command=TALKER, labels=cluster.labels()))
    access = container.execute(command=["sh", "-c", "echo out; cat; exit 3"], tty=False)
    output = b""
    with connect(access.url, open_timeout=seconds(5)) as ws:
        ws.send(base64.b64encode(b"typed\n").decode())
        ws.send("")  # end of input: cat finishes
        try:
            while True:
                output += base64.b64decode(ws.recv(timeout=seconds(10)))
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.reason == "exit code 3"
    assert output == b"out\ntyped\n"


def test_execute_with_a_tty(cluster: Cluster) -> None:
    api = cluster.client()
    container = api.wait_success(api.create_container(imageUuid=f"docker:{IMAGE}",
                                                      command=TALKER, labels=cluster.labels()))
    access = container.execute(command=["sh", "-c", "stty size; echo tty-ok"], tty=True)
    output = b""
    with connect(access.url, open_timeout=seconds(5)) as ws:
        ws.send('{"resize": {"cols": 100, "rows": 30}}')
        try:
            while True:
                output += base64.b64decode(ws.recv(timeout=seconds(10)))
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.reason == "exit code 0"
    assert b"tty-ok\r\n" in output


def test_a_forged_stream_token_is_refused(cluster: Cluster) -> None:
    response = requests.get(f"{cluster.server.origin}/v1/stream?token=forged", timeout=5)
    assert response.status_code == 401 and response.json()["type"] == "error"


def test_container_and_host_stats_are_available_to_the_api(cluster: Cluster) -> None:
    api = cluster.client()
    container = api.wait_success(api.create_container(
        imageUuid=f"docker:{IMAGE}", command=["sh", "-c", "while true; do :; done"],
        labels=cluster.labels()))
    stats = container.stats()
    assert stats.type == "containerStats" and stats.id == container.id
    assert stats.cpuPercent > 1 and stats.memoryUsage > 0 and stats.memoryLimit > 0
    for key in ("networkRxBytes", "networkTxBytes", "blockReadBytes", "blockWriteBytes"):
        assert getattr(stats, key) >= 0
    host = api.by_id_host(container.hostId)
    totals = host.stats()
    assert totals.type == "hostStats" and totals.containers >= 1
    assert totals.cpuPercent >= stats.cpuPercent / 2
    on_host = api.list_container(hostId=host.id)
    assert container.id in [c.id for c in on_host]
