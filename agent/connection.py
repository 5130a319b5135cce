"""The agent's websocket session: connect with its credentials, say hello, then serve
instructions and report changed facts, reconnecting with websockets' own jittered backoff.

A rejected key, a removed host or a second agent for the same host ends the agent (AgentExit);
network trouble and server restarts only make it reconnect.

When a session ends, the tasks it started end with it: its report loops, its streams and its
waits for replies. The instructions those waits were for do not: the dispatcher runs them in
tasks of its own, which keep their resource's turn until their Docker calls have returned, so the
instructions the server re-sends on the next session wait for them instead of acting twice
(see agent.dispatcher). Only when the agent stops for good does the dispatcher cancel them, after
a few seconds' grace.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from agent.dispatcher import Dispatcher
from agent.events import inventory, watch_container_events
from agent.facts import FactsSource
from agent.logs import log, set_host
from agent.runtime import ContainerRuntime
from agent.state import Credentials
from shared import protocol
from shared.errors import InstructionError, ProtocolError
from shared.logformat import redact
from shared.protocol import CloseCode

WELCOME_TIMEOUT = 15.0
VERSION = "0.1.0"


class AgentExit(Exception):
    """The agent must stop; the message is the one line to show. ``host_removed`` says the
    server removed this host, so that the agent also removes what it set up on it (a restart
    or any other exit keeps it, for the containers' sake)."""

    def __init__(self, message: str, *, host_removed: bool = False) -> None:
        super().__init__(message)
        self.host_removed = host_removed


def process_exception(exc: Exception) -> Exception | None:
    """Retry network errors and server errors; a refused key is final (pure policy)."""
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        if status == 401:
            return AgentExit("the server rejected this agent's credentials (the host may have "
                             "been removed); register again with the URL from Corral")
        if status >= 500 or status == 429:  # 429: throttled, the server is there: retry
            return None
        return AgentExit(f"the server refused the agent connection with HTTP {status}")
    if isinstance(exc, OSError | TimeoutError | asyncio.TimeoutError):
        return None
    from websockets.exceptions import InvalidHandshake, InvalidMessage

    if isinstance(exc, InvalidMessage | InvalidHandshake):
        return None
    return exc


def _final_close(code: int | None, reason: str) -> AgentExit | None:
    if code == CloseCode.HOST_REMOVED:
        return AgentExit("this host was removed from Corral; register it again to bring it back",
                         host_removed=True)
    if code == CloseCode.SUPERSEDED:
        return AgentExit("another agent connected for this host; this one stops")
    if code == CloseCode.INVALID_MESSAGE:
        return AgentExit(f"the server closed the session: {reason}")
    return None


class AgentConnection:
    def __init__(self, credentials: Credentials, facts: FactsSource,
                 dispatcher: Dispatcher, runtime: ContainerRuntime) -> None:
        self._credentials = credentials
        self._runtime = runtime
        self._facts = facts
        self._dispatcher = dispatcher
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_failure: str | None = None
        # The session now open, for what reports outside any request (health results).
        self._ws: ClientConnection | None = None
        self._on_session: list[Callable[[], None]] = []

    def on_session(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` on every new session (the server's view starts over)."""
        self._on_session.append(listener)

    async def report(self, message: protocol.AgentMessage) -> bool:
        """Send ``message`` on the open session; False when there is none (the next session
        starts over anyway). Safe from any task: websockets sends whole messages."""
        ws = self._ws
        if ws is None:
            return False
        await self._send(ws, message)
        return True

    def _retry_or_exit(self, exc: Exception) -> Exception | None:
        verdict = process_exception(exc)
        if verdict is None:
            reason = str(exc) or type(exc).__name__
            if reason != self._last_failure:
                log.warning("cannot connect to %s: %s; retrying", self._credentials.agent_url,
                            reason)
                self._last_failure = reason
        return verdict

    def _headers(self) -> dict[str, str]:
        pair = f"{self._credentials.access_key}:{self._credentials.secret_key}"
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}

    async def run(self) -> None:
        """Serve until cancelled; raise AgentExit when the server ends this agent. Either way,
        wait a few seconds for the instructions in progress before returning."""
        try:
            await self._serve()
        finally:
            # Stopping for good: let the Docker calls in progress end (bounded) first.
            await self._dispatcher.close()

    async def _serve(self) -> None:
        url = self._credentials.agent_url
        async for ws in connect(url, additional_headers=self._headers(), open_timeout=10,
                                ping_interval=None, max_size=protocol.MAX_FRAME_BYTES,
                                compression=None,
                                process_exception=self._retry_or_exit,
                                user_agent_header=f"corral-agent/{VERSION}"):
            try:
                await self._session(ws)
            except ConnectionClosed:
                pass
            except ProtocolError as exc:
                log.warning("server sent an invalid message (%s); reconnecting", exc)
                await ws.close(CloseCode.PROTOCOL_ERROR, str(exc)[:120])
            finally:
                self._ws = None
                # The session's own tasks; cancelling a wait for a reply leaves the
                # instruction itself running in the dispatcher.
                for task in list(self._tasks):
                    task.cancel()
            code, reason = ws.close_code, ws.close_reason or ""
            final = _final_close(code, reason)
            if final is not None:
                raise final
            log.info("disconnected from %s (%s%s); reconnecting", url,
                     f"{code} " if code else "", reason or "connection lost")

    async def _send(self, ws: ClientConnection, message: protocol.AgentMessage) -> None:
        text = protocol.dump(message)
        if isinstance(message, protocol.StreamData):
            log.debug("sent streamData (%d bytes)", len(message.data))
        else:
            log.debug("sent %s", redact(text[:2000]))
        with contextlib.suppress(ConnectionClosed):
            await ws.send(text)

    async def _session(self, ws: ClientConnection) -> None:
        facts = await self._facts.current()
        await self._send(ws, protocol.Hello(agent_version=VERSION, facts=facts))
        welcome = protocol.parse(await asyncio.wait_for(ws.recv(), WELCOME_TIMEOUT))
        if not isinstance(welcome, protocol.Welcome):
            raise ProtocolError(f"expected welcome, got {welcome.type}")
        set_host(welcome.host_id)
        log.info("connected to %s as host %s", self._credentials.server_url, welcome.host_id)
        self._last_failure = None
        self._ws = ws
        for listener in self._on_session:
            listener()
        self._spawn(self._report_loop(ws, welcome.report_interval))
        # Watch events first, then take the inventory: no change falls between the two.
        self._spawn(watch_container_events(self._runtime, lambda m: self._send(ws, m),
                                           since=time.time()))
        try:
            await self._send(ws, await inventory(self._runtime))
        except InstructionError as exc:
            # Without an inventory the server keeps what it knows; an empty one would
            # wrongly tell it every container is gone.
            log.warning("no container inventory sent: %s", exc)
        async for text in ws:
            message = protocol.parse(text)
            if isinstance(message, protocol.StreamData):  # may carry what a user types
                log.debug("received streamData (%d bytes)", len(message.data))
            else:
                log.debug("received %s", redact(str(text)[:2000]))
            match message:
                case protocol.Request():
                    self._dispatcher.prepare(message)
                    self._spawn(self._dispatcher.handle(message, lambda m: self._send(ws, m)))
                case protocol.StreamData() | protocol.StreamResize() | protocol.StreamClose():
                    self._dispatcher.deliver(message)
                case _:
                    log.warning("ignored a %s message the server should not send", message.type)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _report_loop(self, ws: ClientConnection, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            changes = await self._facts.changes()
            if changes:
                await self._send(ws, protocol.Facts(changes=changes))
