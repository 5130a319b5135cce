"""A container is created once, even when Docker is still creating it as the agent's session
drops or its instruction times out and the instruction is sent again.

The real server runs in-process (the ``client`` fixture), and so does a real agent
(AgentConnection, Dispatcher, the real handlers) on the real Docker engine, through a
DockerRuntime whose ``create_container`` waits for the test's word before calling Docker: a
Docker call still running in its thread, whatever happened meanwhile to the task awaiting it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import threading
import time
import uuid as uuidlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from aiohttp.test_utils import TestClient
from websockets.asyncio.client import ClientConnection

from agent.connection import AgentConnection
from agent.containers import UUID_LABEL
from agent.dispatcher import Dispatcher, Send
from agent.facts import FactsSource
from agent.handlers import HANDLERS, STREAMING
from agent.runtime import DockerRuntime
from agent.state import Credentials
from server.api.handlers import SERVICES
from shared import protocol
from shared.errors import ErrorCode, InstructionError
from shared.ids import parse_id
from tests.api.agent_double import register
from tests.conftest import ADMIN
from tests.support.timing import seconds
from tests.unit.agent.fakes import blank_spec

pytestmark = pytest.mark.integration

IMAGE = os.environ.get("CORRAL_TEST_IMAGE", "corral-test/busybox:latest")
TEST_LABEL = "corral.test"
T = TypeVar("T")


def docker(*args: str) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def containers_labelled(label: str) -> list[str]:
    return docker("ps", "-aq", "--no-trunc", "--filter", f"label={label}").split()


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float, what: str) -> T:
    """Poll ``check`` (without blocking the loop the server and agent share) until it returns
    something truthy; fail naming ``what`` after ``timeout`` (scaled) seconds."""
    deadline = time.monotonic() + seconds(timeout)
    last: T | None = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {seconds(timeout):g} s waiting for {what} "
                         f"(last: {last!r})")


class GatedDockerRuntime(DockerRuntime):
    """``create_container`` waits for ``gate`` (bounded, so a broken test fails rather than
    hangs), then asks Docker."""

    def __init__(self, client_kwargs: Mapping[str, Any], *, address: str,
                 timeout: float) -> None:
        super().__init__(client_kwargs, address=address, timeout=timeout)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def create_container(self, params: Mapping[str, Any]) -> str:
        self.entered.set()
        self.gate.wait(seconds(60))
        return super().create_container(params)


class WatchedDispatcher(Dispatcher):
    """The real dispatcher, noting each ``instance.create`` it is handed and whether anything
    has been sent about it yet."""

    def __init__(self, runtime: DockerRuntime, facts: FactsSource) -> None:
        super().__init__(HANDLERS, runtime, facts, streaming=STREAMING)
        self.creates: list[protocol.Request] = []
        self.answered: set[str] = set()

    async def handle(self, request: protocol.Request, send: Send) -> None:
        if request.name != "instance.create":
            await super().handle(request, send)
            return
        self.creates.append(request)

        async def noting(message: protocol.AgentMessage) -> None:
            self.answered.add(request.id)
            await send(message)

        await super().handle(request, noting)


class CuttableConnection(AgentConnection):
    """The real agent connection, keeping its current websocket so a test can cut it."""

    socket: ClientConnection | None = None
    sessions = 0

    async def _session(self, ws: ClientConnection) -> None:
        self.socket = ws
        self.sessions += 1
        await super()._session(ws)


@dataclass
class Agent:
    runtime: GatedDockerRuntime
    dispatcher: WatchedDispatcher
    connection: CuttableConnection
    host_id: str


@pytest.fixture
async def agent(docker_engine: None, client: TestClient) -> AsyncIterator[Agent]:
    """This machine's agent, in-process, connected to the in-process server, its host active."""
    creds = await register(client, key=uuidlib.uuid4().hex * 2)
    credentials = Credentials(server_url=str(client.make_url("")).rstrip("/"),
                              agent_url=creds["agentUrl"], host_id=creds["hostId"],
                              access_key=creds["accessKey"], secret_key=creds["secretKey"])
    runtime = GatedDockerRuntime.from_env(os.environ, timeout=seconds(30))
    assert isinstance(runtime, GatedDockerRuntime)
    facts = FactsSource(runtime, {}, "127.0.0.1")
    dispatcher = WatchedDispatcher(runtime, facts)
    connection = CuttableConnection(credentials, facts, dispatcher, runtime)
    running = asyncio.create_task(connection.run())
    try:
        async def active() -> bool:
            resp = await client.get(f"/v1/hosts/{creds['hostId']}", headers=ADMIN)
            return bool((await resp.json()).get("state") == "active")

        await eventually(active, 15, "the agent's host to be active")
        yield Agent(runtime, dispatcher, connection, creds["hostId"])
    finally:
        runtime.gate.set()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await asyncio.to_thread(runtime.close)


@pytest.fixture
def run_label(docker_engine: None) -> Iterator[str]:
    """A label value every container of this test carries, so cleanup never touches others'."""
    value = f"double-start-{uuidlib.uuid4().hex[:10]}"
    yield value
    leftovers = containers_labelled(f"{TEST_LABEL}={value}")
    if leftovers:
        docker("rm", "-f", "-v", *leftovers)


async def test_a_create_cut_off_by_a_dropped_session_makes_one_container(
        client: TestClient, agent: Agent, run_label: str) -> None:
    resp = await client.post("/v1/containers", headers=ADMIN, data=json.dumps({
        "imageUuid": f"docker:{IMAGE}", "command": ["sleep", "300"],
        # This in-process agent runs no overlay (its dispatcher has no network manager).
        "networkMode": "bridge", "labels": {TEST_LABEL: run_label}}))
    assert resp.status in (200, 201), await resp.text()
    record = await resp.json()
    assert await asyncio.to_thread(agent.runtime.entered.wait, seconds(30))

    socket = agent.connection.socket
    assert socket is not None
    socket.transport.abort()  # the network drops the session mid-create

    async def resent_and_under_way() -> bool:
        # A second create arrived on a new session and says something: that it waits for the
        # first, or (broken) that it creates the container itself.
        creates = agent.dispatcher.creates
        return len(creates) >= 2 and creates[-1].id in agent.dispatcher.answered and \
            agent.connection.sessions >= 2

    await eventually(resent_and_under_way, 30, "the server to re-send instance.create")
    agent.runtime.gate.set()

    async def running() -> dict[str, Any] | None:
        resp = await client.get(f"/v1/containers/{record['id']}", headers=ADMIN)
        body: dict[str, Any] = await resp.json()
        assert body.get("transitioning") != "error", body.get("transitioningMessage")
        return body if body.get("state") == "running" else None

    container = await eventually(running, 60, "the container to be running")
    made = await asyncio.to_thread(containers_labelled, f"{UUID_LABEL}={record['uuid']}")
    assert made == [container["externalId"]]


async def test_a_create_resent_after_its_timeout_makes_one_container(
        client: TestClient, agent: Agent, run_label: str) -> None:
    hub = client.server.app[SERVICES].hub
    host = parse_id(agent.host_id, "1h")
    assert host is not None
    spec = blank_spec(uuid=str(uuidlib.uuid4()), image=IMAGE, command=["sleep", "300"],
                      labels={TEST_LABEL: run_label})
    data = {"container": spec, "registryAuth": None}

    # Long enough for the create to reach Docker, where it waits for the gate: the timeout
    # falls during the Docker call.
    with pytest.raises(InstructionError) as error:
        await hub.call(host, "instance.create", "container", "1i999", data,
                       timeout=seconds(2))
    assert error.value.code is ErrorCode.TIMEOUT
    assert agent.runtime.entered.is_set(), "the create had not reached Docker in its timeout"

    said = asyncio.Event()

    async def on_progress(progress: protocol.Progress) -> None:
        said.set()  # it waits for the first, or (broken) it creates the container itself

    resent = asyncio.create_task(hub.call(host, "instance.create", "container", "1i999", data,
                                          timeout=seconds(60), on_progress=on_progress))
    await asyncio.wait_for(said.wait(), seconds(30))
    agent.runtime.gate.set()
    summary = await asyncio.wait_for(resent, seconds(60))

    made = await asyncio.to_thread(containers_labelled, f"{UUID_LABEL}={spec['uuid']}")
    assert made == [summary["dockerId"]]
