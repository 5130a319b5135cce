"""One agent's websocket session: a reader, one writer draining a bounded queue, and the
instructions waiting for their replies.

What one agent can make the server hold is bounded in bytes: each frame by the limit of its
message type (``protocol.FRAME_LIMITS``), the reports waiting to be handled by
REPORT_QUEUE_BYTES, the messages waiting to be sent by SEND_QUEUE_BYTES, and each stream's
unread output by STREAM_BUFFER_BYTES. An agent over a bound is closed with a reason, and a
peer too slow to drain its queue is disconnected rather than buffered without bound; when the
session ends, every pending instruction fails at once with HostNotConnected.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from shared import protocol
from shared.errors import (
    HostNotConnected,
    InstructionError,
    InstructionTimeout,
    ProtocolError,
)
from shared.protocol import CloseCode

ProgressCallback = Callable[[protocol.Progress], Awaitable[None]]
Report = protocol.Facts | protocol.ContainerEvent | protocol.Inventory | \
    protocol.HealthReport | protocol.LbReport
ReportCallback = Callable[[Report], Awaitable[None]]
MIB = 1024 * 1024
# Reports wait as their text, parsed again when handled: parsed JSON takes up to twenty times
# the room of its text, so the text is what the bound can count. One inventory of the largest
# frame always fits.
REPORT_QUEUE_BYTES = 8 * MIB
SEND_QUEUE_BYTES = 16 * MIB
STREAM_BUFFER_BYTES = 4 * MIB  # one stream's output not yet taken by its client


@dataclass
class _Pending:
    future: asyncio.Future[dict[str, Any]]
    on_progress: ProgressCallback | None
    name: str


class TooBig(ProtocolError):
    """A frame larger than its message type allows."""


class Overloaded(ProtocolError):
    """An agent sent more than the server holds for it."""


class ServerStream:
    """An open stream to the agent (logs, exec): output chunks arrive in ``output`` (None at
    the end); ``result`` is the agent's reply, which ends the stream."""

    def __init__(self, session: AgentSession, request_id: str,
                 result: asyncio.Future[dict[str, Any]]) -> None:
        self.id = request_id
        self.result = result
        self._output: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._output_bytes = 0
        self._session = session
        self._ended = False

    def feed(self, chunk: bytes) -> None:
        if self._ended:
            return
        if self._output_bytes + len(chunk) > STREAM_BUFFER_BYTES:
            self._session.log.warning("stream %s: its reader is too slow; cutting it", self.id)
            self.close()
            self.end()
            return
        self._output_bytes += len(chunk)
        self._output.put_nowait(chunk)

    async def next_chunk(self) -> bytes | None:
        """The next chunk of output, None at the end."""
        chunk = await self._output.get()
        if chunk is not None:
            self._output_bytes -= len(chunk)
        return chunk

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            self._output.put_nowait(None)

    async def write(self, data: bytes) -> None:
        """Send input to the stream, once the session's queue has room for it: a client
        typing faster than the agent reads waits instead of filling the server."""
        await self._session.wait_for_room()
        self._session.send(protocol.StreamData(stream_id=self.id,
                                               data=base64.b64encode(data).decode()))

    async def resize(self, cols: int, rows: int) -> None:
        await self._session.wait_for_room()  # as input: resizes never fill the server either
        self._session.send(protocol.StreamResize(stream_id=self.id, cols=cols, rows=rows))

    def close(self) -> None:
        """Tell the agent to stop the stream (its reply still comes)."""
        if not self.result.done():
            with contextlib.suppress(HostNotConnected):
                self._session.send(protocol.StreamClose(stream_id=self.id))


class SessionLog(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[host {self.extra['host'] if self.extra else '?'}] {msg}", kwargs


class AgentSession:
    def __init__(self, ws: web.WebSocketResponse, host_id: int, public_host_id: str,
                 on_report: ReportCallback) -> None:
        self.ws = ws
        self.host_id = host_id
        self.public_host_id = public_host_id
        self.log = SessionLog(logging.getLogger("corral.agent_session"),
                              {"host": public_host_id})
        self.last_seen = time.monotonic()
        self.last_ping = time.monotonic()
        self._outbox: deque[str] = deque()
        self._outbox_bytes = 0
        self._room = asyncio.Event()
        self._room.set()
        self._pending: dict[str, _Pending] = {}
        self._streams: dict[str, ServerStream] = {}
        self._on_report = on_report
        # Reports are handled in order by one task, so that slow handling (a large inventory)
        # never delays reading pongs and replies.
        self._reports: deque[tuple[str, int]] = deque()
        self._report_bytes = 0
        self._report_task: asyncio.Task[None] | None = None
        self._closing: tuple[int, str] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._close_task: asyncio.Task[None] | None = None

    # --- sending ------------------------------------------------------------------------

    def send(self, message: protocol.ServerMessage) -> None:
        if self._closing is not None:
            raise HostNotConnected(f"host {self.public_host_id} is disconnecting")
        text = protocol.dump(message)  # ASCII: its length is its size
        if self._outbox_bytes + len(text) > SEND_QUEUE_BYTES:
            self.log.warning("agent is not reading its messages; disconnecting it")
            self.close_soon(CloseCode.GOING_AWAY, "agent too slow to read its messages")
            raise HostNotConnected(f"host {self.public_host_id} is not keeping up")
        self._outbox.append(text)
        self._outbox_bytes += len(text)
        if self._outbox_bytes > SEND_QUEUE_BYTES // 2:
            self._room.clear()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    async def wait_for_room(self) -> None:
        """Wait until the send queue is at most half full (or the session is closing)."""
        while not self._room.is_set() and self._closing is None:
            await self._room.wait()

    # The writer and the report handler are tasks only while they have work: an idle session
    # (most of them, most of the time) costs no task beyond its reader.

    async def _report_loop(self) -> None:
        while self._reports:
            text, size = self._reports.popleft()
            self._report_bytes -= size
            report = protocol.parse(text)  # it parsed when it came: it parses again
            del text
            if not isinstance(report, protocol.Facts | protocol.ContainerEvent |
                              protocol.Inventory | protocol.HealthReport | protocol.LbReport):
                continue
            try:
                await self._on_report(report)
            except Exception:
                self.log.exception("could not handle a %s report", report.type)
            del report

    def _queue_report(self, text: str, size: int) -> None:
        if self._reports and self._report_bytes + size > REPORT_QUEUE_BYTES:
            raise Overloaded(f"more than {REPORT_QUEUE_BYTES // MIB} MiB of reports waiting "
                             "to be handled; slow down")
        self._reports.append((text, size))
        self._report_bytes += size
        if self._report_task is None or self._report_task.done():
            self._report_task = asyncio.get_running_loop().create_task(self._report_loop())

    async def _write_loop(self) -> None:
        try:
            while self._outbox:
                text = self._outbox.popleft()
                self._outbox_bytes -= len(text)
                if self._outbox_bytes <= SEND_QUEUE_BYTES // 2:
                    self._room.set()
                await self.ws.send_str(text)
        except (ConnectionError, RuntimeError):
            self.close_soon(CloseCode.GOING_AWAY, "connection lost")

    async def ping(self) -> None:
        self.last_ping = time.monotonic()
        try:
            await self.ws.ping()
        except (ConnectionError, RuntimeError):
            self.close_soon(CloseCode.GOING_AWAY, "connection lost")

    # --- instructions -------------------------------------------------------------------

    async def call(self, name: str, resource_type: str, resource_id: str, data: dict[str, Any],
                   timeout: float, on_progress: ProgressCallback | None = None) -> dict[str, Any]:
        """Send an instruction and wait for its reply; raise InstructionError on failure."""
        request = protocol.Request(id=str(uuid.uuid4()), name=name, resource_type=resource_type,
                                   resource_id=resource_id, data=data,
                                   timeout_ms=int(timeout * 1000))
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request.id] = _Pending(future, on_progress, name)
        started = time.monotonic()
        try:
            self.send(request)
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise InstructionTimeout(
                f"host {self.public_host_id} did not answer {name} within {timeout:g} s"
            ) from None
        finally:
            self._pending.pop(request.id, None)
            self.log.debug("%s on %s %s took %.0f ms", name, resource_type, resource_id,
                          (time.monotonic() - started) * 1000)

    def open_stream(self, name: str, resource_type: str, resource_id: str,
                    data: dict[str, Any]) -> ServerStream:
        """Start a streaming instruction; it runs until either side closes it."""
        request = protocol.Request(id=str(uuid.uuid4()), name=name, resource_type=resource_type,
                                   resource_id=resource_id, data=data, timeout_ms=0)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
        self._pending[request.id] = _Pending(future, None, name)
        stream = ServerStream(self, request.id, future)
        self._streams[request.id] = stream
        try:
            self.send(request)
        except HostNotConnected:
            self._pending.pop(request.id, None)
            self._streams.pop(request.id, None)
            raise
        return stream

    async def _handle(self, message: protocol.Message, text: str, size: int) -> None:
        match message:
            case protocol.StreamData():
                stream = self._streams.get(message.stream_id)
                if stream is not None:
                    try:
                        stream.feed(base64.b64decode(message.data, validate=True))
                    except binascii.Error:
                        raise ProtocolError("streamData must be base64") from None
            case protocol.Reply():
                pending = self._pending.get(message.request_id)
                stream = self._streams.pop(message.request_id, None)
                if stream is not None:  # nobody waits in call() to clean a stream up
                    self._pending.pop(message.request_id, None)
                if pending is None or pending.future.done():
                    self.log.debug("late reply to %s ignored", message.request_id)
                elif message.error is not None:
                    pending.future.set_exception(
                        InstructionError(message.error.message, message.error.code))
                else:
                    pending.future.set_result(message.data)
                if stream is not None:
                    stream.end()
            case protocol.Progress():
                pending = self._pending.get(message.request_id)
                if pending is not None and pending.on_progress is not None:
                    await pending.on_progress(message)
            case protocol.Facts() | protocol.ContainerEvent() | protocol.Inventory() | \
                    protocol.HealthReport() | protocol.LbReport():
                self._queue_report(text, size)
            case protocol.Hello():
                raise ProtocolError("hello may only be sent once, first")
            case protocol.Welcome() | protocol.Request() | protocol.StreamResize() | \
                    protocol.StreamClose():
                raise ProtocolError(f"agents may not send {message.type} messages")

    # --- the session --------------------------------------------------------------------

    async def run(self) -> None:
        """Read until the socket closes; close it with a reason on a protocol error."""
        try:
            async for msg in self.ws:
                self.last_seen = time.monotonic()
                if msg.type is WSMsgType.TEXT:
                    try:
                        await self._receive(msg.data)
                    except ProtocolError as exc:
                        await self._refuse(exc)
                        break
                elif msg.type is WSMsgType.PING:
                    await self.ws.pong(msg.data)
                elif msg.type is WSMsgType.PONG:
                    pass
                elif msg.type is WSMsgType.BINARY:
                    await self._refuse(ProtocolError("binary frames are not part of the "
                                                     "protocol"))
                    break
                else:
                    break
        finally:
            if self._writer is not None:
                self._writer.cancel()
            self._room.set()  # stream input waiting for room: it fails at once now
            reason = self._closing[1] if self._closing else "agent disconnected"
            for pending in self._pending.values():
                if not pending.future.done():
                    pending.future.set_exception(HostNotConnected(
                        f"host {self.public_host_id} disconnected during {pending.name}: "
                        f"{reason}"))
            for stream in self._streams.values():
                stream.end()
            self._streams.clear()
            if self._closing is not None and not self.ws.closed:
                await self.ws.close(code=self._closing[0],
                                    message=protocol.close_reason(self._closing[1]))
            await self._drain_reports()

    async def _receive(self, text: str) -> None:
        message = protocol.parse(text)
        size = protocol.frame_size(text)
        limit = protocol.frame_limit(message.type)
        if size > limit:
            raise TooBig(f"a {message.type} message may be at most {limit // 1024} KiB; this "
                         f"one has {size} bytes")
        await self._handle(message, text, size)

    async def _refuse(self, exc: ProtocolError) -> None:
        """Close the session for a frame it cannot take, with the reason (logged once)."""
        code = CloseCode.MESSAGE_TOO_BIG if isinstance(exc, TooBig) else \
            CloseCode.OVERLOADED if isinstance(exc, Overloaded) else CloseCode.INVALID_MESSAGE
        self.log.warning("closing the session (%d): %s", code, exc)
        self._closing = (code, str(exc))
        if isinstance(exc, Overloaded):
            self._reports.clear()  # a flood: not worth handling
            self._report_bytes = 0
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.close(code=code, message=protocol.close_reason(str(exc)))

    async def _drain_reports(self) -> None:
        """Let the report task handle what was already received, then end it."""
        task = self._report_task
        if task is None or task.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), 10.0)
        except TimeoutError:
            task.cancel()

    def close_soon(self, code: int, reason: str) -> None:
        """Ask the session to end; safe to call from anywhere, any number of times."""
        if self._closing is not None:
            return
        self._closing = (code, reason)
        self._room.set()
        self._close_task = asyncio.get_running_loop().create_task(self._close(code, reason))

    async def wait_closed(self) -> None:
        """Wait for a close asked with close_soon() to be done."""
        if self._close_task is not None:
            with contextlib.suppress(Exception):
                await self._close_task

    async def _close(self, code: int, reason: str) -> None:
        if self._writer is not None:
            self._writer.cancel()
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.close(code=code, message=protocol.close_reason(reason))
