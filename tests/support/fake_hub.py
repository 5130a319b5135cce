"""A hub whose agents live in memory: the engine's tests run every service but the web app
and no agent process at all.

``FakeHub`` implements ``server.agents.hub.Hub``. A host is live because the test said so
(``connect``/``disconnect``), never because of pings. Container instructions are answered the
way the real agent's handlers answer them (``agent.handlers.instances``): from a table of
containers per host, idempotently (a re-sent ``instance.create`` returns the container the
first one made), with the agent's state summary as the reply and ``{}`` for
``instance.remove``, ``notFound`` for a container the host does not have. Every instruction
is recorded: in ``calls`` when the agent got it, in ``refused`` when its host was not live and
the hub failed it at once with HostNotConnected, as the real hub does. A test can hold an
instruction behind a gate (to look at the world while it is under way) or make the next one
fail.

A held instruction fails with HostNotConnected when its host disconnects, as a real
session's pending instructions do when the session closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from server.agents.liveness import AgentState
from server.agents.session import AgentSession, ProgressCallback, ServerStream
from server.config import Settings
from server.store import Store
from shared.containers import ContainerState, ContainerStatus, PortBinding
from shared.errors import ErrorCode, HostNotConnected, InstructionError
from shared.fields import Fields, protocol_error
from tests.support.timing import seconds

# Docker statuses in which a container counts as running (its ports and IP are in effect).
_RUNNING = frozenset({"running"})


@dataclass(frozen=True)
class Call:
    """One instruction the server sent: its name, its host and its data."""

    name: str
    host_id: int
    data: Mapping[str, Any]

    @property
    def uuid(self) -> str | None:
        """The container the instruction is about (create names it in its spec)."""
        if self.name == "instance.create":
            spec = self.data.get("container") or {}
            return str(spec.get("uuid")) if spec.get("uuid") else None
        uuid = self.data.get("uuid")
        return str(uuid) if uuid else None


@dataclass
class _Gate:
    """Instructions held until ``event`` is set; with ``acted``, the container has already
    changed on the host and only the reply waits (a reply lost to a crash, say)."""

    event: asyncio.Event
    acted: bool


@dataclass
class FakeContainer:
    """A container as the fake agent's Docker holds it."""

    uuid: str
    docker_id: str
    name: str | None
    image: str
    labels: dict[str, str]
    ports: list[dict[str, Any]]
    ip_address: str
    status: str = "created"
    exit_code: int = 0
    started_at: str | None = None
    finished_at: str | None = None

    def summary(self) -> dict[str, Any]:
        """The reply the real agent gives (``agent.containers.state_summary``, dumped)."""
        running = self.status in _RUNNING
        return ContainerState(
            uuid=self.uuid, docker_id=self.docker_id, name=self.name, image=self.image,
            status=ContainerStatus(self.status), exit_code=self.exit_code,
            ip_address=self.ip_address if running else None,
            # Docker reports bindings in effect only while the container runs.
            ports=tuple(PortBinding.read(Fields(p, "port", protocol_error))
                        for p in self.ports) if running else (),
            started_at=self.started_at, finished_at=self.finished_at,
            labels=dict(self.labels)).dump()


class FakeHub:
    """``Hub`` for tests: liveness as the test says, instructions answered from memory."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.refused: list[Call] = []
        self.containers: dict[int, dict[str, FakeContainer]] = {}
        self._live: set[int] = set()
        self._known: set[int] = set()
        self._gone: dict[int, asyncio.Event] = {}
        self._gates: dict[str, _Gate] = {}
        self._failures: dict[str, list[InstructionError]] = {}
        self._called = asyncio.Condition()
        self._clock = itertools.count(1)
        self._sessions: dict[int, int] = {}
        self._session_count = itertools.count(1)
        # network.apply payloads by host, latest last: kept apart from ``calls``, which are
        # about containers.
        self.network: dict[int, list[dict[str, Any]]] = {}
        # lb.apply payloads by host, latest last.
        self.balancers: dict[int, list[dict[str, Any]]] = {}
        self.started = 0
        self.stopped = 0

    def factory(self, store: Store, settings: Settings) -> FakeHub:
        """For ``running_services(settings, hub_factory=hub.factory)``: this same hub, so that
        its hosts and their containers outlive a restart of the services, as real hosts do."""
        return self

    # --- what the test says -------------------------------------------------------------

    def connect(self, host_id: int) -> None:
        """The host's agent is connected and active from now on."""
        if host_id not in self._live:
            self._sessions[host_id] = next(self._session_count)
        self._live.add(host_id)
        self._known.add(host_id)
        self._gone.setdefault(host_id, asyncio.Event())
        self.containers.setdefault(host_id, {})

    def disconnect(self, host_id: int) -> None:
        """The host's agent is away; instructions held for it fail as a closed session's do."""
        self._live.discard(host_id)
        gone = self._gone.pop(host_id, None)
        if gone is not None:
            gone.set()

    def hold(self, name: str, *, acted: bool = False) -> asyncio.Event:
        """Hold every ``name`` instruction until the returned event is set. With ``acted``,
        the fake agent carries the instruction out first and only its reply waits."""
        gate = _Gate(asyncio.Event(), acted)
        self._gates[name] = gate
        return gate.event

    def fail(self, name: str, error: InstructionError) -> None:
        """Make the next ``name`` instruction fail with ``error`` (nothing changes on the host)."""
        self._failures.setdefault(name, []).append(error)

    def calls_named(self, name: str) -> list[Call]:
        return [c for c in self.calls if c.name == name]

    def calls_about(self, uuid: str) -> list[str]:
        """The names of the instructions about one container, in the order they were sent."""
        return [c.name for c in self.calls if c.uuid == uuid]

    async def arrived(self, name: str, count: int = 1, timeout: float = 5.0) -> None:
        """Wait (bounded) until ``count`` ``name`` instructions have been sent."""
        async with asyncio.timeout(seconds(timeout)), self._called:
            await self._called.wait_for(lambda: len(self.calls_named(name)) >= count)

    # --- Hub ----------------------------------------------------------------------------

    async def start(self) -> None:
        self.started += 1

    async def stop(self) -> None:
        self.stopped += 1

    async def attach(self, session: AgentSession) -> None:
        self.connect(session.host_id)

    def detach(self, session: AgentSession) -> None:
        self.disconnect(session.host_id)

    async def host_removed(self, host_id: int) -> None:
        self.disconnect(host_id)
        self._known.discard(host_id)

    def is_live(self, host_id: int) -> bool:
        return host_id in self._live

    def agent_state(self, host_id: int) -> AgentState | None:
        if host_id in self._live:
            return AgentState.ACTIVE
        return AgentState.DISCONNECTED if host_id in self._known else None

    def connected_hosts(self) -> list[int]:
        return sorted(self._live)

    def session_id(self, host_id: int) -> int | None:
        return self._sessions.get(host_id) if host_id in self._live else None

    async def call(self, host_id: int, name: str, resource_type: str, resource_id: str,
                   data: dict[str, Any], timeout: float | None = None,
                   on_progress: ProgressCallback | None = None) -> dict[str, Any]:
        """Answer ``name`` as the host's agent would; HostNotConnected if it is not live."""
        if host_id not in self._live:
            self.refused.append(Call(name, host_id, dict(data)))
            raise HostNotConnected(f"host 1h{host_id} is disconnected: its agent is not "
                                   "connected")
        if name == "network.apply":
            return self._network_apply(host_id, data)
        if name == "lb.apply":
            self.balancers.setdefault(host_id, []).append(dict(data))
            return {"version": data.get("version") or ""}
        self.calls.append(Call(name, host_id, dict(data)))
        async with self._called:
            self._called.notify_all()
        failures = self._failures.get(name)
        if failures:
            raise failures.pop(0)
        gate = self._gates.get(name)
        if gate is None or gate.event.is_set():
            return self._answer(host_id, name, data)
        if gate.acted:
            reply = self._answer(host_id, name, data)
            await self._wait(host_id, gate.event)
            return reply
        await self._wait(host_id, gate.event)
        return self._answer(host_id, name, data)

    def open_stream(self, host_id: int, name: str, resource_type: str, resource_id: str,
                    data: dict[str, Any]) -> ServerStream:
        if host_id not in self._live:
            self.refused.append(Call(name, host_id, dict(data)))
            raise HostNotConnected(f"host 1h{host_id} is not connected: its agent is away")
        self.calls.append(Call(name, host_id, dict(data)))
        raise NotImplementedError("FakeHub has no streams; use a real agent session")

    # --- the fake agent -----------------------------------------------------------------

    async def _wait(self, host_id: int, gate: asyncio.Event) -> None:
        """Wait for the gate; fail as a closed session does if the host goes away first."""
        gone = self._gone.get(host_id)
        if gone is None:
            raise HostNotConnected(f"host 1h{host_id} disconnected")
        opened = asyncio.ensure_future(gate.wait())
        lost = asyncio.ensure_future(gone.wait())
        try:
            await asyncio.wait({opened, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (opened, lost):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if not opened.done() or opened.cancelled() or host_id not in self._live:
            raise HostNotConnected(f"host 1h{host_id} disconnected while the instruction "
                                   "was under way")

    def _answer(self, host_id: int, name: str, data: Mapping[str, Any]) -> dict[str, Any]:
        handler = _HANDLERS.get(name)
        if handler is None:
            raise InstructionError(f"the fake agent has no handler for {name}",
                                   ErrorCode.UNKNOWN_INSTRUCTION)
        return handler(self, self.containers.setdefault(host_id, {}), data)

    def _network_apply(self, host_id: int, data: Mapping[str, Any]) -> dict[str, Any]:
        self.network.setdefault(host_id, []).append(dict(data))
        failures = self._failures.get("network.apply")
        if failures:
            raise failures.pop(0)
        return {"version": data.get("version") or "", "changes": 1}

    def _now(self) -> str:
        return f"2024-01-01T00:00:{next(self._clock):02d}Z"

    def _create(self, table: dict[str, FakeContainer], data: Mapping[str, Any]) -> dict[str, Any]:
        spec = data.get("container")
        if not isinstance(spec, Mapping) or not spec.get("uuid"):
            raise InstructionError("instance.create needs the container spec in data.container",
                                   ErrorCode.INVALID_DATA)
        uuid = str(spec["uuid"])
        existing = table.get(uuid)
        if existing is not None:
            return existing.summary()
        labels = {str(k): str(v) for k, v in (spec.get("labels") or {}).items()}
        labels["io.rancher.container.uuid"] = uuid
        container = FakeContainer(
            uuid=uuid, docker_id=hashlib.sha256(uuid.encode()).hexdigest(),
            name=spec.get("name"), image=str(spec.get("image")), labels=labels,
            ports=[{"hostIp": p.get("hostIp"), "hostPort": p.get("hostPort"),
                    "containerPort": p.get("containerPort"),
                    "protocol": p.get("protocol") or "tcp"} for p in spec.get("ports") or []],
            ip_address=f"172.17.0.{len(table) + 2}")
        table[uuid] = container
        return container.summary()

    def _start(self, table: dict[str, FakeContainer], data: Mapping[str, Any]) -> dict[str, Any]:
        container = _require(table, data)
        if container.status not in _RUNNING:
            container.status, container.started_at = "running", self._now()
        return container.summary()

    def _stop(self, table: dict[str, FakeContainer], data: Mapping[str, Any]) -> dict[str, Any]:
        container = _require(table, data)
        if container.status in _RUNNING:
            container.status, container.finished_at = "exited", self._now()
        return container.summary()

    def _restart(self, table: dict[str, FakeContainer],
                 data: Mapping[str, Any]) -> dict[str, Any]:
        container = _require(table, data)
        container.status, container.started_at = "running", self._now()
        return container.summary()

    def _remove(self, table: dict[str, FakeContainer], data: Mapping[str, Any]) -> dict[str, Any]:
        table.pop(_uuid(data), None)  # already gone: what was asked
        return {}

    def _inspect(self, table: dict[str, FakeContainer],
                 data: Mapping[str, Any]) -> dict[str, Any]:
        return _require(table, data).summary()


def _uuid(data: Mapping[str, Any]) -> str:
    uuid = data.get("uuid")
    if not isinstance(uuid, str) or not uuid:
        raise InstructionError("the instruction needs the container's uuid in data.uuid",
                               ErrorCode.INVALID_DATA)
    return uuid


def _require(table: Mapping[str, FakeContainer], data: Mapping[str, Any]) -> FakeContainer:
    uuid = _uuid(data)
    container = table.get(uuid)
    if container is None:
        raise InstructionError(f"container {uuid} does not exist on this host",
                               ErrorCode.NOT_FOUND)
    return container


_Handler = Callable[[FakeHub, dict[str, FakeContainer], Mapping[str, Any]], dict[str, Any]]
# The fake agent's handler table, as the real dispatcher's.
_HANDLERS: dict[str, _Handler] = {
    "instance.create": FakeHub._create,
    "instance.start": FakeHub._start,
    "instance.stop": FakeHub._stop,
    "instance.restart": FakeHub._restart,
    "instance.remove": FakeHub._remove,
    "instance.inspect": FakeHub._inspect,
}
