"""The host ``dockersocket`` action end to end: the server, this machine's agent and its real
Docker engine, the Docker Engine API spoken over the websocket as ``rancher docker`` does."""

from __future__ import annotations

import json
from typing import Any

from websockets.sync.client import ClientConnection, connect

from tests.e2e.cluster import Cluster, docker
from tests.support.timing import seconds


def http_answer(ws: ClientConnection) -> tuple[str, bytes]:
    """One HTTP/1.1 answer read off the socket: its status line and its body, sent with a
    Content-Length or chunked (as Docker sends larger answers)."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += recv(ws)
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        while not body.endswith(b"0\r\n\r\n"):
            body += recv(ws)
        return lines[0], dechunked(body)
    while len(body) < int(headers["content-length"]):
        body += recv(ws)
    return lines[0], body


def recv(ws: ClientConnection) -> bytes:
    frame = ws.recv(timeout=seconds(10))
    assert isinstance(frame, bytes), frame  # the server relays binary frames
    return frame


def dechunked(body: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return out
        out, body = out + rest[:size], rest[size + 2:]


def request(ws: ClientConnection, path: str) -> tuple[str, Any]:
    ws.send(f"GET {path} HTTP/1.1\r\nHost: docker\r\n\r\n".encode())
    status, body = http_answer(ws)
    return status, json.loads(body)


def test_dockersocket_speaks_the_hosts_docker_engine_api(cluster: Cluster) -> None:
    api = cluster.client()
    host = api.by_id_host(cluster.active_hosts(1)[0]["id"])
    access = host.dockersocket()
    assert access.type == "hostAccess" and access.url.endswith("/v1/dockersocket/")
    url = f"{access.url}?token={access.token}"

    with connect(url, open_timeout=seconds(5)) as ws:
        status, version = request(ws, "/version")
        assert status == "HTTP/1.1 200 OK"
        assert version["Version"] == docker("version", "--format", "{{.Server.Version}}")
        # The connection is kept alive, as Docker keeps it: a second request on it.
        status, info = request(ws, "/info")
        assert status == "HTTP/1.1 200 OK" and info["ID"]

    # The Docker client opens a connection per request: the same token opens another.
    with connect(url, open_timeout=seconds(5)) as ws:
        status, containers = request(ws, "/containers/json?all=1")
        assert status == "HTTP/1.1 200 OK" and isinstance(containers, list)
