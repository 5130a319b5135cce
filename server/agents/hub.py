"""All live agent sessions, their liveness, and the one way to send a host an instruction.

One ticker task pings every session on its own schedule and re-evaluates liveness; only a
change of liveness state is written to the store, by one writer task that always writes the
latest state in memory (so a late write can never undo a newer one, and a request handler
being cancelled can never lose one).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

from server.agents import liveness
from server.agents.liveness import AgentState
from server.agents.session import AgentSession, ProgressCallback, ServerStream
from server.config import Settings
from server.resources import hosts
from server.store import Store
from shared.errors import HostNotConnected
from shared.protocol import CloseCode

log = logging.getLogger(__name__)
MAX_TICK_SECONDS = 1.0
FINAL_FLUSH_SECONDS = 2.0
FLUSH_BATCH = 250


class Hub(Protocol):
    """What the server asks of its agents' sessions; ``AgentHub`` is the real one, tests have
    a fake that answers instructions itself."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def attach(self, session: AgentSession) -> None: ...

    def detach(self, session: AgentSession) -> None: ...

    async def host_removed(self, host_id: int) -> None: ...

    def is_live(self, host_id: int) -> bool: ...

    def agent_state(self, host_id: int) -> AgentState | None: ...

    def connected_hosts(self) -> list[int]: ...

    def session_id(self, host_id: int) -> int | None:
        """A number that names the host's current session (a new one on every connection),
        or None without one: how state sent to an agent is known to need sending again."""
        ...

    async def call(self, host_id: int, name: str, resource_type: str, resource_id: str,
                   data: dict[str, Any], timeout: float | None = None,
                   on_progress: ProgressCallback | None = None) -> dict[str, Any]: ...

    def open_stream(self, host_id: int, name: str, resource_type: str, resource_id: str,
                    data: dict[str, Any]) -> ServerStream: ...


@dataclass
class _Liveness:
    last_seen: float
    connected: bool
    state: AgentState


class AgentHub:
    def __init__(self, store: Store, settings: Settings) -> None:
        self._store = store
        self._settings = settings
        self._sessions: dict[int, AgentSession] = {}
        self._liveness: dict[int, _Liveness] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._dirty: set[int] = set()
        self._writing: set[int] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._session_ids: dict[int, int] = {}
        self._attached = itertools.count(1)

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Hosts that had agents when the server stopped get a grace period to come back."""
        now = time.monotonic()
        found = await hosts.hosts_with_live_agents(self._store)
        for host in found:
            self._liveness[host.id] = _Liveness(now, False, AgentState.RECONNECTING)
        for start in range(0, len(found), FLUSH_BATCH):
            await hosts.set_agent_states(self._store, {
                host.id: AgentState.RECONNECTING for host in found[start:start + FLUSH_BATCH]})
        self._ticker = asyncio.create_task(self._tick_loop())
        self._writer = asyncio.create_task(self._write_loop())

    async def stop(self) -> None:
        for task in (self._ticker, self._writer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._ticker = self._writer = None
        # Sessions closed by our own shutdown are not lost agents: the next start gives every
        # host a grace period anyway, so nothing is written for them (with thousands of
        # agents, those writes alone would outlast any shutdown deadline).
        self._stopping = True
        sessions = list(self._sessions.values())
        if sessions:
            log.info("closing %d agent sessions", len(sessions))
        began = time.monotonic()
        for session in sessions:
            session.close_soon(CloseCode.GOING_AWAY, "server shutting down")
        await asyncio.gather(*(s.wait_closed() for s in sessions))
        if sessions:
            log.info("closed %d agent sessions in %.1f s", len(sessions),
                     time.monotonic() - began)
        # Changes not yet written are not lost: the next start gives every host that was
        # active a grace period. So the last write is bounded, not a reason to hang.
        try:
            async with asyncio.timeout(FINAL_FLUSH_SECONDS):
                await self._flush()
        except TimeoutError:
            log.info("%d agent state changes left to the next start", len(self._dirty))

    # --- sessions -----------------------------------------------------------------------

    async def attach(self, session: AgentSession) -> None:
        previous = self._sessions.get(session.host_id)
        if previous is not None:
            previous.log.info("replaced by a new connection from the same host")
            previous.close_soon(CloseCode.SUPERSEDED, "replaced by a newer connection")
        self._sessions[session.host_id] = session
        self._session_ids[session.host_id] = next(self._attached)
        self._liveness[session.host_id] = _Liveness(time.monotonic(), True, AgentState.ACTIVE)
        # apply_hello stored ``active``: drop a pending write of an older state, and redo the
        # write if one is in flight right now.
        self._dirty.discard(session.host_id)
        if session.host_id in self._writing:
            self._dirty.add(session.host_id)
            self._wake.set()

    def detach(self, session: AgentSession) -> None:
        if self._sessions.get(session.host_id) is not session:
            return
        del self._sessions[session.host_id]
        self._session_ids.pop(session.host_id, None)
        if self._stopping:
            return
        entry = self._liveness.get(session.host_id)
        if entry is not None:
            entry.connected = False
            entry.last_seen = session.last_seen
            self._evaluate(session.host_id, entry, time.monotonic())
            if entry.state is AgentState.DISCONNECTED and session.host_id not in self._dirty:
                del self._liveness[session.host_id]  # already recorded; nothing left to time

    async def host_removed(self, host_id: int) -> None:
        self._liveness.pop(host_id, None)
        session = self._sessions.pop(host_id, None)
        self._session_ids.pop(host_id, None)
        if session is not None:
            session.close_soon(CloseCode.HOST_REMOVED, "host removed")

    def is_live(self, host_id: int) -> bool:
        entry = self._liveness.get(host_id)
        return host_id in self._sessions and entry is not None and \
            entry.state is AgentState.ACTIVE

    def agent_state(self, host_id: int) -> AgentState | None:
        entry = self._liveness.get(host_id)
        return entry.state if entry is not None else None

    def connected_hosts(self) -> list[int]:
        return list(self._sessions)

    def session_id(self, host_id: int) -> int | None:
        return self._session_ids.get(host_id)

    # --- instructions -------------------------------------------------------------------

    async def call(self, host_id: int, name: str, resource_type: str, resource_id: str,
                   data: dict[str, Any], timeout: float | None = None,
                   on_progress: ProgressCallback | None = None) -> dict[str, Any]:
        """Send an instruction to the host's agent; fail at once if it has no live session."""
        session = self._sessions.get(host_id)
        entry = self._liveness.get(host_id)
        if session is None or entry is None or entry.state is not AgentState.ACTIVE:
            state = entry.state.value if entry is not None else "disconnected"
            raise HostNotConnected(
                f"host {hosts.HOST.id_prefix}{host_id} is {state}: its agent is not connected")
        return await session.call(name, resource_type, resource_id, data,
                                  timeout or self._settings.instruction_timeout, on_progress)

    def open_stream(self, host_id: int, name: str, resource_type: str, resource_id: str,
                    data: dict[str, Any]) -> ServerStream:
        """Start a streaming instruction on the host; fail at once without a live session."""
        session = self._sessions.get(host_id)
        if session is None or not self.is_live(host_id):
            raise HostNotConnected(
                f"host {hosts.HOST.id_prefix}{host_id} is not connected: its agent is away")
        return session.open_stream(name, resource_type, resource_id, data)

    # --- liveness -----------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        # Tick often enough that a ping is never late by more than half an interval.
        period = min(MAX_TICK_SECONDS, self._settings.ping_interval / 2)
        while True:
            await asyncio.sleep(period)
            try:
                await self.tick(time.monotonic())
            except Exception:
                log.exception("liveness tick failed")

    async def tick(self, now: float) -> None:
        interval = self._settings.ping_interval
        for session in list(self._sessions.values()):
            if now - session.last_ping >= interval:
                await session.ping()
        for host_id, entry in list(self._liveness.items()):
            current = self._sessions.get(host_id)
            if current is not None:
                entry.last_seen = current.last_seen
            self._evaluate(host_id, entry, now)

    def _evaluate(self, host_id: int, entry: _Liveness, now: float) -> None:
        state = liveness.evaluate(now, entry.last_seen, entry.connected,
                                  self._settings.ping_interval, self._settings.disconnect_grace)
        if state is entry.state:
            return
        log.info("host %s%d agent %s -> %s", hosts.HOST.id_prefix, host_id, entry.state, state)
        entry.state = state
        self._dirty.add(host_id)
        self._wake.set()
        if state is AgentState.DISCONNECTED:
            live = self._sessions.get(host_id)
            if live is not None:
                live.close_soon(CloseCode.GOING_AWAY,
                                f"no pong for {self._settings.disconnect_grace:g} s")

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._flush()
            except Exception:
                log.exception("could not record agent states")

    async def _flush(self) -> None:
        """Write the current liveness state of every host whose state changed, in one
        transaction per round."""
        while self._dirty:
            # A few hundred at a time: each round is one short transaction, and the event
            # loop (and a shutdown deadline) gets a turn between rounds.
            await asyncio.sleep(0)
            batch = [self._dirty.pop() for _ in range(min(FLUSH_BATCH, len(self._dirty)))]
            written = {host_id: entry.state for host_id in batch
                       if (entry := self._liveness.get(host_id)) is not None}
            self._writing = set(written)
            try:
                await hosts.set_agent_states(self._store, written)
            except BaseException:
                self._dirty |= set(written)  # written next round
                raise
            finally:
                self._writing = set()
            for host_id, state in written.items():
                entry = self._liveness.get(host_id)
                if entry is None:
                    continue
                if entry.state is not state:
                    self._dirty.add(host_id)
                elif state is AgentState.DISCONNECTED and not entry.connected:
                    self._liveness.pop(host_id, None)
