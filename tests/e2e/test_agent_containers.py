"""The agent's container instructions, events and inventory on the real Docker engine: the real
handlers through the real dispatcher and DockerRuntime, on the test image only."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import urllib.request
import uuid as uuidlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web

from agent import events
from agent.dispatcher import Dispatcher
from agent.facts import FactsSource
from agent.handlers import HANDLERS
from agent.runtime import DockerRuntime
from shared import protocol
from shared.errors import ErrorCode
from tests.support.processes import free_port
from tests.support.timing import seconds, wait_for
from tests.unit.agent.fakes import blank_spec

IMAGE = os.environ.get("CORRAL_TEST_IMAGE", "corral-test/busybox:latest")
TEST_LABEL = "io.corral.test"
RUN = f"agent-containers-{os.getpid()}"
HTTPD = "mkdir -p /w; echo hello > /w/index.html; httpd -f -p 80 -h /w"


def docker(*args: str) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def ours() -> list[str]:
    """Docker ids of every container this test run made."""
    return docker("ps", "-aq", "--no-trunc", "--filter", f"label={TEST_LABEL}={RUN}").split()


def spec(command: list[str] | None = None, **overrides: Any) -> dict[str, Any]:
    return blank_spec(**{"uuid": str(uuidlib.uuid4()), "image": IMAGE,
                         "command": command or ["sleep", "300"], "labels": {TEST_LABEL: RUN},
                         **overrides})


class Agent:
    """The agent's instruction path without the websocket: dispatcher, handlers, DockerRuntime."""

    def __init__(self, runtime: DockerRuntime) -> None:
        self.runtime = runtime
        self.dispatcher = Dispatcher(HANDLERS, runtime, FactsSource(runtime, {}, None))
        self.sent: list[protocol.AgentMessage] = []

    async def _send(self, message: protocol.AgentMessage) -> None:
        self.sent.append(message)

    async def call(self, name: str, **data: Any) -> protocol.Reply:
        self.sent.clear()
        request = protocol.Request(id=f"r-{len(self.sent)}", name=name,
                                   resource_type="container", resource_id="1i1", data=data,
                                   timeout_ms=int(seconds(120) * 1000))
        await self.dispatcher.handle(request, self._send)
        reply = self.sent[-1]
        assert isinstance(reply, protocol.Reply)
        return reply

    async def ok(self, name: str, **data: Any) -> dict[str, Any]:
        reply = await self.call(name, **data)
        assert reply.error is None, reply.error
        return reply.data

    def progress(self) -> list[str]:
        return [m.message for m in self.sent if isinstance(m, protocol.Progress)]


@pytest.fixture
def runtime(docker_engine: None) -> Iterator[DockerRuntime]:
    runtime = DockerRuntime.from_env(os.environ, timeout=seconds(30))
    try:
        yield runtime
    finally:
        runtime.close()
        leftovers = ours()
        if leftovers:
            docker("rm", "-f", "-v", *leftovers)


@pytest.fixture
def agent(runtime: DockerRuntime) -> Agent:
    return Agent(runtime)


def http_get(port: int, host: str = "127.0.0.1") -> str:
    with urllib.request.urlopen(f"http://{host}:{port}/", timeout=seconds(5)) as response:
        return str(response.read().decode())


def answers(port: int) -> str | None:
    try:
        return http_get(port)
    except OSError:
        return None


def status_of(docker_id: str) -> str:
    return docker("inspect", "--format", "{{.State.Status}}", docker_id)


async def test_a_container_lives_through_create_start_stop_restart_remove(agent: Agent) -> None:
    fixed = free_port()
    web = spec(["sh", "-c", HTTPD], ports=[
        {"hostIp": None, "hostPort": None, "containerPort": 80, "protocol": "tcp"},
        {"hostIp": "127.0.0.1", "hostPort": fixed, "containerPort": 80, "protocol": "tcp"}])

    created = await agent.ok("instance.create", container=web, registryAuth=None)
    assert not any(m.startswith("pulling") for m in agent.progress())  # the image is here
    assert (created["uuid"], created["status"], created["ports"]) == (web["uuid"], "created", [])
    docker_id = created["dockerId"]
    assert status_of(docker_id) == "created"

    started = await agent.ok("instance.start", uuid=web["uuid"])
    assert started["status"] == "running" and started["ipAddress"]
    assert docker_id in docker("ps", "-q", "--no-trunc").split()
    bound = {(p["hostIp"], p["containerPort"]): p["hostPort"] for p in started["ports"]}
    assert bound[("127.0.0.1", 80)] == fixed
    random_port = bound[("0.0.0.0", 80)]
    assert random_port not in (None, fixed)
    assert wait_for(lambda: answers(random_port), 5, "httpd on the random port") == "hello\n"
    assert wait_for(lambda: answers(fixed), 5, "httpd on 127.0.0.1") == "hello\n"

    assert (await agent.ok("instance.start", uuid=web["uuid"]))["dockerId"] == docker_id

    stopped = await agent.ok("instance.stop", uuid=web["uuid"], timeout=2)
    assert (stopped["status"], stopped["ports"]) == ("exited", [])
    assert stopped["finishedAt"] is not None
    assert status_of(docker_id) == "exited"

    restarted = await agent.ok("instance.restart", uuid=web["uuid"], timeout=2)
    assert restarted["status"] == "running"
    assert wait_for(lambda: answers(fixed), 5, "httpd after the restart") == "hello\n"

    again = await agent.ok("instance.create", container=web, registryAuth=None)
    assert again["dockerId"] == docker_id
    assert ours() == [docker_id]

    assert await agent.ok("instance.remove", uuid=web["uuid"], removeVolumes=True) == {}
    assert ours() == []
    assert await agent.ok("instance.remove", uuid=web["uuid"], removeVolumes=True) == {}
    reply = await agent.call("instance.inspect", uuid=web["uuid"])
    assert reply.error is not None and reply.error.code is ErrorCode.NOT_FOUND


async def test_every_spec_field_reaches_docker(agent: Agent) -> None:
    full = spec(name=f"corral-e2e-{os.getpid()}", environment={"GREETING": "hi"},
                workingDir="/tmp", hostname="web", user="1000", dns=["10.0.0.2"],
                extraHosts=["db:10.0.0.5"], capAdd=["NET_ADMIN"], capDrop=["MKNOD"],
                restartPolicy={"name": "on-failure", "maximumRetryCount": 2},
                memory=64 * 1024 * 1024, cpuShares=512, readOnly=True,
                expose=[{"containerPort": 9000, "protocol": "udp"}],
                volumes=[{"name": None, "destination": "/data", "mode": None, "driver": None}],
                ulimits=[{"name": "nofile", "soft": 1024, "hard": 2048}],
                logConfig={"driver": "json-file", "config": {"max-size": "1m"}})
    state = await agent.ok("instance.create", container=full)
    assert state["name"] == full["name"]
    seen = json.loads(docker("inspect", state["dockerId"]))[0]
    config, host = seen["Config"], seen["HostConfig"]
    assert "GREETING=hi" in config["Env"]
    assert (config["WorkingDir"], config["Hostname"], config["User"]) == ("/tmp", "web", "1000")
    assert config["ExposedPorts"] == {"9000/udp": {}}
    assert config["Volumes"] == {"/data": {}}
    assert config["Labels"][TEST_LABEL] == RUN
    assert (host["Dns"], host["ExtraHosts"]) == (["10.0.0.2"], ["db:10.0.0.5"])
    assert (host["CapAdd"], host["CapDrop"]) == (["NET_ADMIN"], ["MKNOD"])
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    assert (host["Memory"], host["CpuShares"], host["ReadonlyRootfs"]) == (
        64 * 1024 * 1024, 512, True)
    assert host["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 2048}]
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "1m"}}
    assert await agent.ok("instance.remove", uuid=full["uuid"], removeVolumes=True) == {}


async def test_a_container_that_exits_at_once_is_answered_with_its_state(agent: Agent) -> None:
    quick = spec(["sh", "-c", "exit 3"])
    await agent.ok("instance.create", container=quick)
    state = await agent.ok("instance.start", uuid=quick["uuid"])
    if state["status"] == "running":  # Docker answered before the shell ended
        wait_for(lambda: status_of(state["dockerId"]) == "exited", 5, "the shell to exit")
        state = await agent.ok("instance.inspect", uuid=quick["uuid"])
    assert (state["status"], state["exitCode"]) == ("exited", 3)


async def test_stop_kills_a_container_that_ignores_sigterm_after_the_timeout(
        agent: Agent) -> None:
    stubborn = spec(["sleep", "300"])  # PID 1 without a SIGTERM handler ignores it
    await agent.ok("instance.create", container=stubborn)
    await agent.ok("instance.start", uuid=stubborn["uuid"])
    state = await agent.ok("instance.stop", uuid=stubborn["uuid"], timeout=1)
    assert (state["status"], state["exitCode"]) == ("exited", 137)


async def test_a_missing_container_is_not_found(agent: Agent) -> None:
    reply = await agent.call("instance.start", uuid=str(uuidlib.uuid4()))
    assert reply.error is not None and reply.error.code is ErrorCode.NOT_FOUND
    assert "does not exist on this host" in reply.error.message


async def test_an_unknown_image_fails_with_dockers_message(agent: Agent) -> None:
    image = "corral-test/does-not-exist:1"
    reply = await agent.call("instance.create", container=spec(image=image))
    assert reply.error is not None
    assert reply.error.code is ErrorCode.RUNTIME_ERROR
    assert reply.error.message.startswith(f"Could not pull image {image}: ")
    # Docker's own explanation follows: no registry reachable here, or no such repository.
    assert len(reply.error.message) > len(f"Could not pull image {image}: ") + 10
    assert agent.progress() == [f"pulling {image}"]
    assert ours() == []


async def test_a_name_in_use_is_a_conflict(agent: Agent) -> None:
    name = f"corral-e2e-taken-{os.getpid()}"
    await agent.ok("instance.create", container=spec(name=name))
    reply = await agent.call("instance.create", container=spec(name=name))
    assert reply.error is not None and reply.error.code is ErrorCode.CONFLICT
    assert name in reply.error.message


@pytest.fixture
async def watcher(runtime: DockerRuntime) -> AsyncIterator[asyncio.Queue[protocol.ContainerEvent]]:
    received: asyncio.Queue[protocol.ContainerEvent] = asyncio.Queue()

    async def send(message: protocol.ContainerEvent) -> None:
        await received.put(message)

    task = asyncio.create_task(events.watch_container_events(runtime, send))
    await asyncio.sleep(0)  # the watcher notes its start time; later events all reach it
    try:
        yield received
    finally:
        task.cancel()
        # Cancelling closes the stream, so the blocked reading thread ends at once.
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, seconds(2))


async def next_event(received: asyncio.Queue[protocol.ContainerEvent], uuid: str,
                     names: set[str], within: float) -> protocol.ContainerEvent:
    async with asyncio.timeout(seconds(within)):
        while True:
            message = await received.get()
            if message.container.get("uuid") == uuid and message.event in names:
                return message


async def test_a_killed_container_is_reported_by_an_event(
        agent: Agent, watcher: asyncio.Queue[protocol.ContainerEvent]) -> None:
    victim = spec(["sleep", "300"])
    await agent.ok("instance.create", container=victim)
    started = await agent.ok("instance.start", uuid=victim["uuid"])
    await next_event(watcher, victim["uuid"], {"start"}, 2)
    docker("kill", started["dockerId"])
    message = await next_event(watcher, victim["uuid"], {"die", "kill"}, 2)
    assert message.container["dockerId"] == started["dockerId"]
    if message.event == "die":
        assert message.container["status"] == "exited"
    assert protocol.parse(protocol.dump(message)) == message

    await agent.ok("instance.remove", uuid=victim["uuid"])
    gone = await next_event(watcher, victim["uuid"], {"destroy"}, 2)
    assert gone.container == {"uuid": victim["uuid"], "dockerId": started["dockerId"],
                              "status": "removed"}


async def test_closing_the_runtime_ends_a_blocked_event_read(runtime: DockerRuntime) -> None:
    stream = await asyncio.to_thread(runtime.events, None)

    def drain() -> int:  # other tests may share the engine: read whatever comes
        return sum(1 for _ in stream)

    reading = asyncio.ensure_future(asyncio.to_thread(drain))
    await asyncio.sleep(0.1)
    assert not reading.done()
    await asyncio.to_thread(runtime.close)
    await asyncio.wait_for(reading, seconds(2))


async def test_inventory_lists_the_hosts_containers(agent: Agent, runtime: DockerRuntime) -> None:
    listed = spec()
    state = await agent.ok("instance.create", container=listed)
    message = await events.inventory(runtime)
    mine = [c for c in message.containers if c["dockerId"] == state["dockerId"]]
    assert mine == [state]
    assert {c["dockerId"] for c in message.containers} >= set(ours())


# pulls, from a registry on this machine serving an image made here


def _digest(blob: bytes) -> str:
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def _image(payload_size: int) -> tuple[bytes, dict[str, bytes]]:
    """A one-layer image holding random bytes: its manifest and its blobs by digest."""
    layer_tar = io.BytesIO()
    with tarfile.open(fileobj=layer_tar, mode="w") as tar:
        info = tarfile.TarInfo("payload")
        info.size = payload_size
        tar.addfile(info, io.BytesIO(os.urandom(payload_size)))
    diff = layer_tar.getvalue()
    layer = gzip.compress(diff, compresslevel=1)
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/payload"]},
        "rootfs": {"type": "layers", "diff_ids": [_digest(diff)]},
        "history": [{"created_by": "tests/e2e/test_agent_containers.py"}],
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "size": len(config), "digest": _digest(config)},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": len(layer), "digest": _digest(layer)}],
    }).encode()
    return manifest, {_digest(config): config, _digest(layer): layer}


class Registry:
    """A Docker Registry v2 (the read half) on 127.0.0.1, which Docker trusts over plain HTTP.

    With ``credentials`` set it wants HTTP Basic auth, as a private registry does.
    """

    MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"

    def __init__(self) -> None:
        self.manifest, self.blobs = _image(8 * 1024 * 1024)
        self.credentials: tuple[str, str] | None = None
        self.address = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v2/", self._root)
        app.router.add_get("/v2/{name:.+}/manifests/{ref}", self._manifest)
        app.router.add_get("/v2/{name:.+}/blobs/{digest}", self._blob)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.address = f"127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _refused(self, request: web.Request) -> web.Response | None:
        if self.credentials is None:
            return None
        expected = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
        if request.headers.get("Authorization") == expected:
            return None
        return web.json_response(
            {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
            status=401, headers={"WWW-Authenticate": 'Basic realm="corral-test"'})

    async def _root(self, request: web.Request) -> web.StreamResponse:
        return self._refused(request) or web.json_response({})

    async def _manifest(self, request: web.Request) -> web.StreamResponse:
        return self._refused(request) or web.Response(
            body=self.manifest, content_type=self.MANIFEST_TYPE,
            headers={"Docker-Content-Digest": _digest(self.manifest)})

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        refused = self._refused(request)
        if refused is not None:
            return refused
        blob = self.blobs.get(request.match_info["digest"])
        if blob is None:
            return web.json_response({"errors": [{"code": "BLOB_UNKNOWN"}]}, status=404)
        response = web.StreamResponse(headers={
            "Content-Type": "application/octet-stream", "Content-Length": str(len(blob)),
            "Docker-Content-Digest": request.match_info["digest"]})
        await response.prepare(request)
        chunk = 256 * 1024
        for start in range(0, len(blob), chunk):  # slowly enough to show progress
            await response.write(blob[start:start + chunk])
            await asyncio.sleep(0.02)
        return response


@pytest.fixture
async def registry(docker_engine: None) -> AsyncIterator[Registry]:
    served = Registry()
    await served.start()
    try:
        yield served
    finally:
        await served.stop()
        images = docker("images", "-q", f"{served.address}/*/*").split()
        if images:
            docker("rmi", "-f", *set(images))


async def test_create_pulls_a_missing_image_reporting_its_progress(
        agent: Agent, registry: Registry) -> None:
    image = f"{registry.address}/corral-e2e/payload:1"
    state = await agent.ok("instance.create", container=spec(image=image), registryAuth=None)
    assert state["status"] == "created" and state["image"] == image
    progress = [m for m in agent.sent if isinstance(m, protocol.Progress)]
    pulling = [m for m in progress if m.message.startswith(f"pulling {image}")]
    assert pulling[0].message == f"pulling {image}" and pulling[0].progress == 0
    percents = [m.progress or 0 for m in pulling[1:]]
    assert percents == sorted(percents) and percents[-1] == 90  # 100 % of the pull's share
    assert pulling[-1].message == f"pulling {image}: 100%"
    assert any(0 < p < 90 for p in percents), percents  # a real download, reported midway
    assert progress[-1].message == f"creating container from {image}"


async def test_a_private_registry_wants_the_registry_auth(
        agent: Agent, registry: Registry) -> None:
    registry.credentials = ("bob", "s3cret")
    image = f"{registry.address}/private/payload:1"
    reply = await agent.call("instance.create", container=spec(image=image), registryAuth=None)
    assert reply.error is not None and reply.error.code is ErrorCode.RUNTIME_ERROR
    assert reply.error.message.startswith(
        f"Registry {registry.address} refused to let this host pull image {image}: "
        "no credentials were given for it")

    wrong = {"username": "bob", "password": "guess", "serveraddress": registry.address}
    reply = await agent.call("instance.create", container=spec(image=image), registryAuth=wrong)
    assert reply.error is not None
    assert "the credentials given for it were refused" in reply.error.message
    assert "guess" not in reply.error.message

    right = {"username": "bob", "password": "s3cret", "serveraddress": registry.address}
    state = await agent.ok("instance.create", container=spec(image=image), registryAuth=right)
    assert state["image"] == image
