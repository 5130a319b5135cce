"""Test doubles for the agent's I/O edges.

``FakeRuntime`` stands in for ``agent.runtime.DockerRuntime``: it answers from canned dicts
copied from a real engine (Docker 20.10 on Debian 12), keeps containers in memory in the shape
``docker inspect`` gives (tests/data/docker/inspect_running.json is a real one) and records every
call. Like the real runtime it answers about containers with Corral's types, translating its
inspect dicts with the same pure functions (``agent.containers.state_summary``,
``stats_summary``).
"""

from __future__ import annotations

import copy
import itertools
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from agent.containers import UUID_LABEL, PullProgress, state_summary, stats_summary
from agent.runtime import EngineEndpoint, OnPullProgress, RuntimeUnavailable
from shared.containers import ContainerState
from shared.errors import ErrorCode, InstructionError
from shared.instructions import StatsSample

if TYPE_CHECKING:
    from agent.runtime import ContainerRuntime, EventStream

DOCKER_VERSION: dict[str, Any] = {
    "Platform": {"Name": ""},
    "Components": [
        {
            "Name": "Engine",
            "Version": "20.10.24+dfsg1",
            "Details": {
                "ApiVersion": "1.41",
                "Arch": "amd64",
                "BuildTime": "2026-05-07T21:09:36.000000000+00:00",
                "Experimental": "false",
                "GitCommit": "5d6db84",
                "GoVersion": "go1.19.8",
                "KernelVersion": "6.1.0-18-amd64",
                "MinAPIVersion": "1.12",
                "Os": "linux",
            },
        },
        {
            "Name": "containerd",
            "Version": "1.6.20~ds1",
            "Details": {"GitCommit": "1.6.20~ds1-1+deb12u3"},
        },
        {"Name": "runc", "Version": "1.1.5+ds1", "Details": {"GitCommit": "1.1.5+ds1-1+deb12u1"}},
        {"Name": "docker-init", "Version": "0.19.0", "Details": {"GitCommit": ""}},
    ],
    "Version": "20.10.24+dfsg1",
    "ApiVersion": "1.41",
    "MinAPIVersion": "1.12",
    "GitCommit": "5d6db84",
    "GoVersion": "go1.19.8",
    "Os": "linux",
    "Arch": "amd64",
    "KernelVersion": "6.1.0-18-amd64",
    "BuildTime": "2026-05-07T21:09:36.000000000+00:00",
}

DOCKER_INFO: dict[str, Any] = {
    "ID": "DG5S:EIQQ:4FX5:ABUV:JOFG:4MSK:YOZL:OFDH:YBME:5XXQ:TUWF:PUKI",
    "Containers": 3,
    "ContainersRunning": 2,
    "ContainersPaused": 0,
    "ContainersStopped": 1,
    "Images": 5,
    "Driver": "overlay2",
    "DriverStatus": [
        ["Backing Filesystem", "extfs"],
        ["Supports d_type", "true"],
        ["Native Overlay Diff", "true"],
        ["userxattr", "false"],
    ],
    "Plugins": {
        "Volume": ["local"],
        "Network": ["bridge", "host", "ipvlan", "macvlan", "null", "overlay"],
        "Authorization": None,
        "Log": ["json-file", "local", "journald", "syslog"],
    },
    "MemoryLimit": True,
    "SwapLimit": True,
    "CpuCfsPeriod": True,
    "CpuCfsQuota": True,
    "CPUShares": True,
    "CPUSet": True,
    "PidsLimit": True,
    "IPv4Forwarding": True,
    "Debug": False,
    "NFd": 28,
    "NGoroutines": 42,
    "SystemTime": "2026-11-27T12:04:24.643952018Z",
    "LoggingDriver": "json-file",
    "CgroupDriver": "cgroupfs",
    "CgroupVersion": "1",
    "KernelVersion": "6.1.0-18-amd64",
    "OperatingSystem": "Debian GNU/Linux 12 (bookworm)",
    "OSVersion": "12",
    "OSType": "linux",
    "Architecture": "x86_64",
    "IndexServerAddress": "https://index.docker.io/v1/",
    "NCPU": 2,
    "MemTotal": 25276502016,
    "DockerRootDir": "/var/lib/docker",
    "HttpProxy": "",
    "HttpsProxy": "",
    "NoProxy": "",
    "Name": "vm",
    "Labels": [],
    "ExperimentalBuild": False,
    "ServerVersion": "20.10.24+dfsg1",
    "DefaultRuntime": "runc",
    "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive"},
    "LiveRestoreEnabled": False,
    "InitBinary": "docker-init",
    "SecurityOptions": ["name=seccomp,profile=default"],
    "Warnings": None,
}


NEVER = "0001-01-01T00:00:00Z"

PULL_EVENTS: list[dict[str, Any]] = [
    # The shape of a real ``docker pull`` stream (two layers, one already present).
    {"status": "Pulling from team/app", "id": "1"},
    {"status": "Already exists", "progressDetail": {}, "id": "a3ed95caeb02"},
    {"status": "Pulling fs layer", "progressDetail": {}, "id": "5f70bf18a086"},
    {"status": "Downloading", "progressDetail": {"current": 512, "total": 1024},
     "progress": "[=========================>                         ]     512B/1.024kB",
     "id": "5f70bf18a086"},
    {"status": "Verifying Checksum", "progressDetail": {}, "id": "5f70bf18a086"},
    {"status": "Download complete", "progressDetail": {}, "id": "5f70bf18a086"},
    {"status": "Extracting", "progressDetail": {"current": 1024, "total": 1024},
     "progress": "[==================================================>]  1.024kB/1.024kB",
     "id": "5f70bf18a086"},
    {"status": "Pull complete", "progressDetail": {}, "id": "5f70bf18a086"},
    {"status": "Digest: sha256:" + "ab" * 32},
    {"status": "Status: Downloaded newer image for localhost:5000/team/app:1"},
]


def blank_spec(**overrides: Any) -> dict[str, Any]:
    """A normalised container spec as the server sends it: every key present, all unset."""
    value: dict[str, Any] = {
        "uuid": None, "name": None, "image": None, "command": None, "entryPoint": None,
        "environment": {}, "labels": {}, "ports": [], "expose": [], "binds": [], "volumes": [],
        "volumesFrom": [], "networkMode": None, "dns": [], "dnsSearch": [], "capAdd": [],
        "capDrop": [], "extraHosts": [], "restartPolicy": None, "cpuShares": None,
        "memory": None, "memorySwap": None, "cpuSet": None, "user": None, "workingDir": None,
        "hostname": None, "domainName": None, "pidMode": None, "ipcMode": None,
        "privileged": False, "tty": False, "stdinOpen": False, "readOnly": False,
        "devices": [], "logConfig": None, "ulimits": [],
    }
    value.update(overrides)
    return value


class Raw:
    """Reply data for handlers of dispatcher tests: any JSON object, dumped as it is."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.data = data or {}

    def dump(self) -> dict[str, Any]:
        return self.data


def image_key(ref: str) -> str:
    """``busybox`` and ``busybox:latest`` name the same image."""
    last = ref.rsplit("/", 1)[-1]
    return ref if (":" in last or "@" in ref) else f"{ref}:latest"


class FakeEventStream:
    """An EventStream fed by :meth:`FakeRuntime.emit`; ``close()`` ends a blocked ``next()``."""

    _END: Any = object()

    def __init__(self) -> None:
        self.queue: queue.Queue[Any] = queue.Queue()
        self.closed = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        item = self.queue.get()
        if item is self._END or self.closed:
            self.closed = True
            raise StopIteration
        if isinstance(item, InstructionError):
            raise item
        assert isinstance(item, dict)
        return item

    def close(self) -> None:
        self.closed = True
        self.queue.put(self._END)


class FakeByteStream:
    """Canned log chunks; a followed stream then blocks until closed, like Docker's."""

    def __init__(self, chunks: list[bytes], follow: bool) -> None:
        self._chunks = chunks
        self._follow = follow
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._chunks:
            return self._chunks.pop(0)
        if self._follow:
            self.closed.wait(timeout=10)
        raise StopIteration

    def close(self) -> None:
        self.closed.set()


class FakeExec:
    """A command that prints ``ran <command>``, then echoes its input until it ends."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.output: queue.Queue[bytes | None] = queue.Queue()
        self.output.put(f"ran {' '.join(command)}\n".encode())
        self.resizes: list[tuple[int, int]] = []
        self.closed = False

    def read(self) -> bytes | None:
        return self.output.get(timeout=10)

    def write(self, data: bytes) -> None:
        self.output.put(data)

    def close_input(self) -> None:
        self.output.put(None)

    def resize(self, cols: int, rows: int) -> None:
        self.resizes.append((cols, rows))

    def exit_code(self) -> int | None:
        return 0

    def close(self) -> None:
        self.closed = True
        self.output.put(None)


class FakeRuntime:
    """A ContainerRuntime answering from canned dicts and an in-memory engine.

    ``calls`` lists every method called, ``call_args`` the same with their arguments.
    Set ``error`` to make every following call raise it (e.g. ``RuntimeUnavailable(...)``), or
    put an error under a method's name in ``fail_once`` to make only its next call raise it.
    ``images`` are the images present; a pull of any other fails like Docker's (set
    ``pullable`` to let it succeed), feeding ``pull_events`` through the real progress
    aggregator. Containers whose uuid is in ``exit_on_start`` exit with code 1 when started.
    ``engine_socket`` is the unix socket its ``engine_endpoint`` names (a test's own server).
    """

    def __init__(
        self, *, version: dict[str, Any] | None = None, info: dict[str, Any] | None = None
    ) -> None:
        self.version_answer = copy.deepcopy(DOCKER_VERSION if version is None else version)
        self.info_answer = copy.deepcopy(DOCKER_INFO if info is None else info)
        self.calls: list[str] = []
        self.call_args: list[tuple[str, tuple[Any, ...]]] = []
        self.error: InstructionError | None = None
        self.fail_once: dict[str, InstructionError] = {}
        self.closed = False
        self.containers: dict[str, dict[str, Any]] = {}
        self.images: set[str] = {"corral-test/busybox:latest"}
        self.pullable: set[str] = set()
        self.pull_events: list[dict[str, Any]] = copy.deepcopy(PULL_EVENTS)
        self.pull_error: InstructionError | None = None
        self.exit_on_start: set[str] = set()
        self.volumes: dict[str, dict[str, Any]] = {}
        self.removed_volumes_with: list[str] = []
        self.streams: list[FakeEventStream] = []
        self.log_output: dict[str, list[bytes]] = {}
        self.execs: list[FakeExec] = []
        self.stats_sample: dict[str, Any] = {}
        self.engine_socket = "/nonexistent/docker.sock"
        self._ids = itertools.count(1)
        self._host_ports = itertools.count(32768)

    # engine

    def version(self) -> dict[str, Any]:
        self._enter("version")
        return copy.deepcopy(self.version_answer)

    def info(self) -> dict[str, Any]:
        self._enter("info")
        return copy.deepcopy(self.info_answer)

    def close(self) -> None:
        self.calls.append("close")
        self.call_args.append(("close", ()))
        self.closed = True
        for stream in self.streams:
            stream.close()

    def engine_endpoint(self) -> EngineEndpoint:
        self._enter("engine_endpoint")
        return EngineEndpoint(address=f"unix://{self.engine_socket}", path=self.engine_socket)

    # containers

    def find_container(self, uuid: str) -> ContainerState | None:
        self._enter("find_container", uuid)
        for container in self.containers.values():
            if container["Config"]["Labels"].get(UUID_LABEL) == uuid:
                return state_summary(copy.deepcopy(container))
        return None

    def inspect_container(self, container_id: str) -> ContainerState:
        self._enter("inspect_container", container_id)
        return state_summary(copy.deepcopy(self._get(container_id)))

    def list_containers(self) -> list[ContainerState]:
        self._enter("list_containers")
        return [state_summary(c) for c in copy.deepcopy(list(self.containers.values()))]

    def image_present(self, ref: str) -> bool:
        self._enter("image_present", ref)
        return image_key(ref) in self.images

    def pull(self, ref: str, auth: Mapping[str, Any] | None,
             on_progress: OnPullProgress) -> None:
        self._enter("pull", ref, None if auth is None else dict(auth))
        if self.pull_error is not None:
            raise self.pull_error
        if image_key(ref) not in self.pullable:
            raise InstructionError(
                f"Could not pull image {ref}: pull access denied for {ref.split(':')[0]}, "
                "repository does not exist or may require 'docker login': denied: requested "
                "access to the resource is denied.")
        progress = PullProgress(on_progress, interval=0.0)
        for event in self.pull_events:
            progress.feed(event)
        progress.finish()
        self.images.add(image_key(ref))

    def create_container(self, params: Mapping[str, Any]) -> str:
        self._enter("create_container", copy.deepcopy(dict(params)))
        if image_key(params["image"]) not in self.images:
            raise InstructionError(f"No such image: {params['image']}", ErrorCode.NOT_FOUND)
        name = params.get("name")
        if name and any(c["Name"] == f"/{name}" for c in self.containers.values()):
            raise InstructionError(f'Conflict. The container name "/{name}" is already in use.',
                                   ErrorCode.CONFLICT)
        docker_id = f"{next(self._ids):064x}"
        self.containers[docker_id] = {
            "Id": docker_id,
            "Created": time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime()),
            "Name": f"/{name or 'fake_' + docker_id[-6:]}",
            "State": {"Status": "created", "Running": False, "Paused": False,
                      "Restarting": False, "ExitCode": 0, "StartedAt": NEVER,
                      "FinishedAt": NEVER},
            "HostConfig": copy.deepcopy(dict(params.get("host_config") or {})),
            "Config": {"Image": params["image"], "Labels": dict(params.get("labels") or {}),
                       "Env": list(params.get("environment") or []),
                       "Cmd": params.get("command"), "ExposedPorts": params.get("ports")},
            "NetworkSettings": {"IPAddress": "", "Ports": {}, "Networks": {}},
        }
        return docker_id

    def start(self, container_id: str) -> None:
        self._enter("start", container_id)
        container = self._get(container_id)
        uuid = container["Config"]["Labels"].get(UUID_LABEL)
        if uuid in self.exit_on_start:
            self._set(container, "exited", exit_code=1, started=True, finished=True)
        else:
            self._set(container, "running", started=True)

    def stop(self, container_id: str, timeout: float) -> None:
        self._enter("stop", container_id, timeout)
        container = self._get(container_id)
        if container["State"]["Running"]:
            self._set(container, "exited", exit_code=0, finished=True)

    def restart(self, container_id: str, timeout: float) -> None:
        self._enter("restart", container_id, timeout)
        self._set(self._get(container_id), "running", started=True)

    def kill(self, container_id: str) -> None:
        self._enter("kill", container_id)
        container = self._get(container_id)
        if not container["State"]["Running"]:
            raise InstructionError(f"Container {container_id} is not running", ErrorCode.CONFLICT)
        self._set(container, "exited", exit_code=137, finished=True)

    def unpause(self, container_id: str) -> None:
        self._enter("unpause", container_id)
        self._set(self._get(container_id), "running")

    def remove_container(self, container_id: str, volumes: bool, force: bool) -> None:
        self._enter("remove_container", container_id, volumes, force)
        container = self._get(container_id)
        if container["State"]["Running"] and not force:
            raise InstructionError(f"You cannot remove a running container {container_id}.",
                                   ErrorCode.CONFLICT)
        if volumes:
            self.removed_volumes_with.append(container_id)
        del self.containers[container_id]

    def remove_volume(self, name: str) -> None:
        self._enter("remove_volume", name)
        if self.volumes.pop(name, None) is None:
            raise InstructionError(f"get {name}: no such volume", ErrorCode.NOT_FOUND)

    def volume(self, name: str) -> dict[str, Any] | None:
        self._enter("volume", name)
        return copy.deepcopy(self.volumes.get(name))

    def events(self, since: float | None) -> EventStream:
        self._enter("events", since)
        stream = FakeEventStream()
        self.streams.append(stream)
        return stream

    def stats(self, container_id: str) -> StatsSample:
        self._enter("stats", container_id)
        self._get(container_id)
        return stats_summary(copy.deepcopy(self.stats_sample))

    def logs(self, container_id: str, *, follow: bool, tail: int | None,
             timestamps: bool) -> FakeByteStream:
        self._enter("logs", container_id, follow, tail, timestamps)
        self._get(container_id)
        return FakeByteStream(list(self.log_output.get(container_id, [])), follow)

    def exec(self, container_id: str, command: list[str], *, tty: bool,
             stdin: bool) -> FakeExec:
        self._enter("exec", container_id, command, tty, stdin)
        self._get(container_id)
        session = FakeExec(command)
        self.execs.append(session)
        return session

    # test controls

    def add_container(self, uuid: str | None, status: str = "created", *,
                      name: str | None = None, image: str = "corral-test/busybox:latest") -> str:
        """Put a container there as if made earlier (``uuid`` None: not Corral's)."""
        labels = {} if uuid is None else {UUID_LABEL: uuid, "io.corral.managed": "true"}
        docker_id = self.create_container({"image": image, "labels": labels, "name": name})
        self.calls.pop()
        self.call_args.pop()
        if status != "created":
            self._set(self.containers[docker_id], status, started=True,
                      finished=status != "running", exit_code=0)
        return docker_id

    def emit(self, event: dict[str, Any] | InstructionError) -> None:
        """Deliver an engine event (or a stream failure) to every open event stream."""
        for stream in self.streams:
            if not stream.closed:
                stream.queue.put(event)

    def _get(self, container_id: str) -> dict[str, Any]:
        for docker_id, container in self.containers.items():
            if docker_id == container_id or container["Name"] == f"/{container_id}":
                return container
        raise InstructionError(f"No such container: {container_id}", ErrorCode.NOT_FOUND)

    def _set(self, container: dict[str, Any], status: str, *, exit_code: int | None = None,
             started: bool = False, finished: bool = False) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())
        state = container["State"]
        running = status in ("running", "paused", "restarting")
        state.update(Status=status, Running=running, Paused=status == "paused")
        if exit_code is not None:
            state["ExitCode"] = exit_code
        if started:
            state["StartedAt"] = now
        if finished:
            state["FinishedAt"] = now
        network = container["NetworkSettings"]
        if running:
            network["IPAddress"] = f"172.17.0.{int(container['Id'], 16) % 250 + 2}"
            bindings = container["HostConfig"].get("port_bindings") or {}
            if not network["Ports"]:
                network["Ports"] = {
                    key: [{"HostIp": b["HostIp"] or "0.0.0.0",
                           "HostPort": b["HostPort"] or str(next(self._host_ports))}
                          for b in hosts]
                    for key, hosts in bindings.items()}
        else:
            network.update(IPAddress="", Ports={})

    def _enter(self, name: str, *args: Any) -> None:
        self.calls.append(name)
        self.call_args.append((name, args))
        if self.closed:
            raise RuntimeUnavailable("The fake Docker engine is closed.")
        if self.error is not None:
            raise self.error
        if name in self.fail_once:
            raise self.fail_once.pop(name)


if TYPE_CHECKING:
    _conforms: ContainerRuntime = FakeRuntime()


class GatedCreateRuntime(FakeRuntime):
    """A FakeRuntime whose ``create_container`` waits for ``gate``: a Docker call that is still
    running in its thread, whatever happened meanwhile to the task that awaited it.

    ``entered`` is set once a create is waiting; :meth:`wait_idle` waits until none is in
    progress. The gate's wait is bounded by ``limit`` so a broken test fails instead of hanging.
    """

    def __init__(self, limit: float) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()
        self._limit = limit
        self._creating = 0
        self._idle = threading.Condition()

    def create_container(self, params: Mapping[str, Any]) -> str:
        with self._idle:
            self._creating += 1
        self.entered.set()
        try:
            self.gate.wait(self._limit)
            return super().create_container(params)
        finally:
            with self._idle:
                self._creating -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait (in a thread) until no create is in progress; False after ``timeout``."""
        with self._idle:
            return self._idle.wait_for(lambda: self._creating == 0, timeout)

    def creating(self) -> int:
        with self._idle:
            return self._creating
