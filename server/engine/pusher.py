"""Desired states pushed to agents: the one shape of every controller that tells each host's
agent the whole of what it must run (the overlay's ``network.apply``, discovery's
``dns.apply``, the health checks' ``health.apply``).

A subclass says which changes of the log bear on an environment (:meth:`bears_on`), how to
compute each host's payload from the store alone (:meth:`compute`) and what to record of an
agent's answer (:meth:`on_outcome`). The pusher follows the change feed and marks the
environments a change bears on; shortly after (changes arriving together are taken
together, and the pause grows with the time computing takes, so a burst of thousands of
changes never takes more than a quarter of the server), it computes them again and sends the
payload to every agent connected to this server whose host runs another version (a digest of
the payload) or whose session is new. A failed send is retried every ``RETRY_SECONDS``.

Nothing here is needed by another server: each pushes to the agents it holds sessions for,
from the shared log, so with several servers on one PostgreSQL every agent hears of every
change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from server.store import Condition, Query, Record, Store
from server.store.paging import list_all
from shared import instructions
from shared.errors import HostNotConnected, InstructionError

if TYPE_CHECKING:
    from server.services import Services
    from server.store import Change

log = logging.getLogger(__name__)

SETTLE_SECONDS = 0.05
"""How long a marked environment waits for more changes before it is computed again."""
COMPUTE_SHARE = 3.0
"""The pause before computing again, as a multiple of the last computation's time."""
RETRY_SECONDS = 5.0
APPLY_TIMEOUT = 120.0
SESSION_CHECK_SECONDS = 0.5
"""How often new agent sessions are looked for (a session changes no record when its host's
facts did not change)."""


class Payload(instructions.Payload, Protocol):
    """An instruction's request: the whole desired state, named by its version."""

    @property
    def version(self) -> str: ...


class Reply(Protocol):
    @property
    def version(self) -> str: ...


class HostState(Protocol):
    """What one host's agent should run (payload None: nothing to send it)."""

    @property
    def host_id(self) -> int: ...

    @property
    def payload(self) -> Payload | None: ...


@dataclass(frozen=True)
class Target:
    host_id: int
    payload: Payload | None


class Pusher:
    """Keeps every connected agent at its host's desired state of one instruction."""

    name = "pusher"
    instruction = ""
    reply_type: Any = None

    def __init__(self, services: Services) -> None:
        self._services = services
        self._store: Store = services.store
        self._dirty: set[int] = set()
        self._wake = asyncio.Event()
        self._targets: dict[int, HostState] = {}
        self._project_hosts: dict[int, set[int]] = {}
        self._sent: dict[int, tuple[int | None, str]] = {}
        self._retry_at: dict[int, float] = {}
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._last_compute = 0.0

    # --- what a subclass says -----------------------------------------------------------

    def bears_on(self, change: Change) -> bool:
        raise NotImplementedError

    async def on_change(self, change: Change) -> None:
        """Anything else a change asks of this controller (releasing a lease...)."""

    async def compute(self, project_id: int) -> dict[int, HostState]:
        """Every host of the environment that should hear of it, with its payload."""
        raise NotImplementedError

    async def on_outcome(self, host_id: int, version: str | None, error: str | None) -> None:
        """What became of a send: the version the agent runs, or its error."""

    async def on_start(self, project_ids: list[int]) -> None:
        """Work of the start, before following the feed."""

    # --- running ------------------------------------------------------------------------

    async def start(self) -> None:
        position = self._services.feed.position
        projects = await self.projects()
        self._dirty.update(projects)
        await self.on_start(projects)
        self._tasks = [asyncio.create_task(self._follow(position)),
                       asyncio.create_task(self._loop())]

    async def stop(self) -> None:
        for task in [*self._tasks, *self._inflight.values()]:
            task.cancel()
        for task in [*self._tasks, *self._inflight.values()]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks, self._inflight = [], {}

    def target(self, host_id: int) -> HostState | None:
        """What the host should run, as last computed (for tests and diagnostics)."""
        return self._targets.get(host_id)

    def mark(self, project_id: int | None) -> None:
        if project_id is not None:
            self._dirty.add(project_id)
            self._wake.set()

    async def hosts_taking_part(self, project_id: int) -> list[Record]:
        """The environment's hosts whose agents say they carry out this instruction (their
        hello's ``instructions``): older agents are not sent it."""
        hosts = await list_all(self._store, Query(
            types=["host"], project_id=project_id, conditions=[Condition("removed", "null")]))
        return [h for h in hosts if self.instruction in (h.data.get("agentInstructions") or ())]

    async def projects(self) -> list[int]:
        projects = await list_all(self._store, Query(types=["project"],
                                                     conditions=[Condition("removed", "null")]))
        return [p.id for p in projects]

    async def _follow(self, since: int) -> None:
        async def on_batch(batch: list[Change]) -> None:
            for change in batch:
                if self.bears_on(change):
                    self.mark(change.record.project_id)
                await self.on_change(change)

        async def on_restart() -> None:
            log.warning("%s: fell behind the change log; recomputing every environment",
                        self.name)
            for project_id in await self.projects():
                self.mark(project_id)

        await self._services.feed.consume(since, on_batch, on_restart)

    async def _loop(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: 3.11's wait_for can lose a cancellation that
            # arrives as its timeout fires, and stop() would wait for this task forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SESSION_CHECK_SECONDS):
                    await self._wake.wait()
            self._wake.clear()
            if self._dirty:
                await asyncio.sleep(max(SETTLE_SECONDS, COMPUTE_SHARE * self._last_compute))
                dirty, self._dirty = self._dirty, set()
                started = time.monotonic()
                for project_id in sorted(dirty):
                    try:
                        self._replace(project_id, await self.compute(project_id))
                    except Exception:
                        log.exception("%s: could not compute environment %s; trying again "
                                      "shortly", self.name, project_id)
                        self._dirty.add(project_id)
                self._last_compute = time.monotonic() - started
            self._dispatch()

    def _replace(self, project_id: int, targets: dict[int, HostState]) -> None:
        before = self._project_hosts.pop(project_id, set())
        for host_id in before:
            self._targets.pop(host_id, None)
        self._targets.update(targets)
        self._project_hosts[project_id] = set(targets)
        self._forget(before - set(targets))

    def _forget(self, host_ids: Iterable[int]) -> None:
        for host_id in host_ids:
            self._sent.pop(host_id, None)
            self._retry_at.pop(host_id, None)

    def _dispatch(self) -> None:
        hub, now = self._services.hub, time.monotonic()
        for host_id in hub.connected_hosts():
            target = self._targets.get(host_id)
            if target is None or target.payload is None or host_id in self._inflight or \
                    self._retry_at.get(host_id, 0.0) > now:
                continue
            key = (hub.session_id(host_id), target.payload.version)
            if self._sent.get(host_id) == key:
                continue
            self._inflight[host_id] = asyncio.create_task(self._send(target, key))

    async def _send(self, target: HostState, key: tuple[int | None, str]) -> None:
        host_id, payload = target.host_id, target.payload
        assert payload is not None
        try:
            host = await self._store.get(host_id)
            if host is None or host.removed is not None:
                return
            reply = await self._services.instructions.send(
                host, self.instruction, payload, self.reply_type, timeout=APPLY_TIMEOUT)
        except HostNotConnected:
            pass  # a new session gets the state anyway
        except InstructionError as exc:
            log.info("[host 1h%s] %s: %s", host_id, self.name, exc)
            self._retry_at[host_id] = time.monotonic() + RETRY_SECONDS
            await self.on_outcome(host_id, None, str(exc))
        else:
            self._sent[host_id] = key
            self._retry_at.pop(host_id, None)
            await self.on_outcome(host_id, reply.version, None)
        finally:
            self._inflight.pop(host_id, None)
            self._wake.set()
