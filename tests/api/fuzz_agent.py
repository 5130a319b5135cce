"""A scripted agent on a thread, speaking the real protocol to a real server process, so that
the fuzz tests reach what needs a connected host: container operations, logs and exec
streams. It answers every instruction with a plausible success and echoes exec and Docker
socket input."""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
from typing import Any

import requests
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from shared import protocol
from shared.errors import ProtocolError
from tests.conftest import basic
from tests.support.timing import seconds

FACTS: dict[str, Any] = {
    "hostname": "fuzz-agent",
    "labels": {"io.rancher.host.os": "linux"},
    "info": {"memoryInfo": {"memTotal": 1_048_576, "memAvailable": 1_000_000},
             "cpuInfo": {"count": 64, "mhz": 2000.0},
             "diskInfo": {"mountPoints": {"/": {"total": 10**7, "used": 1, "free": 10**7}}},
             "osInfo": {"kernelVersion": "6.1.0", "dockerVersion": "20.10.24"}},
}
STATUS_AFTER = {"instance.create": "created", "instance.start": "running",
                "instance.restart": "running", "instance.inspect": "running",
                "instance.stop": "exited"}


def register(origin: str, token: str, key: str | None = None) -> dict[str, Any]:
    """Trade the registration token for agent credentials, as the agent does."""
    resp = requests.post(f"{origin}/v1/register", json={"key": key or secrets.token_hex(24)},
                         headers=basic("registrationToken", token), timeout=seconds(10))
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def registration_token(origin: str, auth: tuple[str, str]) -> str:
    resp = requests.get(f"{origin}/v1/registrationtokens", auth=auth, timeout=seconds(10))
    return str(resp.json()["data"][0]["token"])


def _uuid(data: dict[str, Any]) -> str | None:
    container = data.get("container")
    if isinstance(container, dict):
        return container.get("uuid")
    value = data.get("uuid")
    return value if isinstance(value, str) else None


def reply_data(request: protocol.Request) -> dict[str, Any]:
    """What a healthy agent would answer to ``request`` (streams aside)."""
    if request.name in STATUS_AFTER:
        uuid = _uuid(request.data)
        docker_id = hashlib.sha256(str(uuid).encode()).hexdigest()
        return {"dockerId": docker_id, "uuid": uuid, "name": f"r-{str(uuid)[:8]}",
                "image": "busybox", "status": STATUS_AFTER[request.name],
                "exitCode": 0, "ports": [], "labels": {}, "mounts": []}
    if request.name == "host.inspect":
        return {"facts": FACTS}
    if request.name == "host.stats":
        return {"containers": 0}
    return {}


class ScriptedAgent(threading.Thread):
    """Connected for as long as the test runs; ``host_id`` once it was welcomed."""

    def __init__(self, origin: str, creds: dict[str, Any]) -> None:
        super().__init__(daemon=True, name="scripted-agent")
        self._url = origin.replace("http", "ws", 1) + protocol.AGENT_PATH
        self._auth = basic(creds["accessKey"], creds["secretKey"])
        self._ws: ClientConnection | None = None
        self._execs: set[str] = set()
        self._echoes: set[str] = set()
        self.welcomed = threading.Event()
        self.unparsed = 0
        self.host_id: str = creds["hostId"]

    def run(self) -> None:
        with connect(self._url, additional_headers=self._auth, open_timeout=seconds(10),
                     max_size=None) as ws:
            self._ws = ws
            ws.send(protocol.dump(protocol.Hello(agent_version="fuzz", facts=FACTS)))
            welcome = protocol.parse(ws.recv(timeout=seconds(10)))
            assert isinstance(welcome, protocol.Welcome)
            ws.send(protocol.dump(protocol.Inventory(containers=[])))
            self.welcomed.set()
            try:
                for text in ws:
                    self._receive(ws, text)
            except ConnectionClosed:
                pass

    def _receive(self, ws: ClientConnection, text: str | bytes) -> None:
        try:
            message = protocol.parse(text)
        except ProtocolError:
            # What the fuzz put in a resource can reach an instruction; a real agent would
            # refuse it too, and the server's side of that is what the test watches.
            self.unparsed += 1
            return
        self._answer(ws, message)

    def _answer(self, ws: ClientConnection, message: protocol.Message) -> None:
        match message:
            case protocol.Request(name="instance.logs"):
                ws.send(protocol.dump(protocol.StreamData(
                    stream_id=message.id, data=base64.b64encode(b"a log line\n").decode())))
            case protocol.Request(name="instance.exec"):
                self._execs.add(message.id)
            case protocol.Request(name="host.dockersocket"):
                self._echoes.add(message.id)  # an engine that echoes: ends when closed
            case protocol.Request():
                ws.send(protocol.dump(protocol.Reply(request_id=message.id,
                                                     data=reply_data(message))))
            case protocol.StreamData() if message.stream_id in self._execs | self._echoes:
                ws.send(protocol.dump(message))  # echo, as ``cat`` would
            case protocol.StreamClose():
                exit_code = {"exitCode": 0} if message.stream_id in self._execs else {}
                self._execs.discard(message.stream_id)
                self._echoes.discard(message.stream_id)
                ws.send(protocol.dump(protocol.Reply(request_id=message.stream_id,
                                                     data=exit_code)))
            case _:
                pass

    def stop(self) -> None:
        if self._ws is not None:
            self._ws.close()
        self.join(timeout=seconds(10))


def start_agent(origin: str, auth: tuple[str, str]) -> ScriptedAgent:
    agent = ScriptedAgent(origin, register(origin, registration_token(origin, auth)))
    agent.start()
    assert agent.welcomed.wait(seconds(15)), "the scripted agent was not welcomed"
    return agent
