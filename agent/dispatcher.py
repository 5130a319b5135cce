"""Carry out instructions: look the handler up in one visible table, run it, turn its outcome
into exactly one reply. Instructions about the same resource run one at a time."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.facts import FactsSource
from agent.runtime import ContainerRuntime
from shared import protocol
from shared.errors import ErrorCode, InstructionError

log = logging.getLogger("corral.agent")

Send = Callable[[protocol.AgentMessage], Awaitable[None]]
StreamInput = protocol.StreamData | protocol.StreamResize | protocol.StreamClose


@dataclass
class InstructionContext:
    """What a handler may use: the runtime, the host facts, and a way to report progress."""

    request: protocol.Request
    runtime: ContainerRuntime
    facts: FactsSource
    send: Send
    # What the server sends on an open stream (input, resize, close), for stream handlers.
    inbox: asyncio.Queue[StreamInput] = field(default_factory=asyncio.Queue)

    async def progress(self, message: str, percent: int | None = None) -> None:
        await self.send(protocol.Progress(request_id=self.request.id, message=message,
                                          progress=percent))


Handler = Callable[[InstructionContext], Awaitable[dict[str, Any]]]


@dataclass
class _KeyLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class Dispatcher:
    def __init__(self, handlers: Mapping[str, Handler], runtime: ContainerRuntime,
                 facts: FactsSource, max_concurrent: int = 32,
                 streaming: frozenset[str] = frozenset()) -> None:
        self._handlers = handlers
        # Streams (logs, exec) last as long as someone watches: they take no per-resource
        # turn and no timeout, and get what the server sends on them through their inbox.
        self._streaming = streaming
        self._inboxes: dict[str, asyncio.Queue[StreamInput]] = {}
        self._runtime = runtime
        self._facts = facts
        self._slots = asyncio.Semaphore(max_concurrent)
        self._locks: dict[str, _KeyLock] = {}

    def prepare(self, request: protocol.Request) -> None:
        """Open a stream's inbox as soon as its request arrives, before its task runs, so
        that input sent right behind the request is not lost."""
        if request.name in self._streaming:
            self._inboxes.setdefault(request.id, asyncio.Queue())

    def deliver(self, message: StreamInput) -> None:
        """Hand stream input to the running stream it names; ignore it for a finished one."""
        inbox = self._inboxes.get(message.stream_id)
        if inbox is not None:
            inbox.put_nowait(message)

    async def handle(self, request: protocol.Request, send: Send) -> None:
        """Run one instruction and send its reply; never raises for the instruction's sake."""
        if request.name in self._streaming:
            await self._stream(request, send)
            return
        started = time.monotonic()
        key = f"{request.resource_type}:{request.resource_id}"
        entry = self._locks.setdefault(key, _KeyLock())
        entry.users += 1
        try:
            async with self._slots, entry.lock:
                reply = await self._run(request, send)
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[key]
        elapsed = (time.monotonic() - started) * 1000
        outcome = "ok" if reply.error is None else f"failed: {reply.error.message}"
        log.info("instruction %s %s %s: %s in %.0f ms", request.name, request.resource_type,
                 request.resource_id, outcome, elapsed)
        await send(reply)

    async def _stream(self, request: protocol.Request, send: Send) -> None:
        self.prepare(request)
        inbox = self._inboxes[request.id]
        started = time.monotonic()
        try:
            reply = await self._run(request, send, inbox)
        finally:
            del self._inboxes[request.id]
        log.info("stream %s %s %s ended after %.1f s", request.name, request.resource_type,
                 request.resource_id, time.monotonic() - started)
        await send(reply)

    async def _run(self, request: protocol.Request, send: Send,
                   inbox: asyncio.Queue[StreamInput] | None = None) -> protocol.Reply:
        """Run the handler; a stream (given its inbox) has no time limit."""
        handler = self._handlers.get(request.name)
        limit = None if inbox is not None else request.timeout_ms / 1000
        try:
            if handler is None:
                raise InstructionError(f"this agent does not know instruction "
                                       f"{request.name!r}; upgrade it",
                                       ErrorCode.UNKNOWN_INSTRUCTION)
            ctx = InstructionContext(request, self._runtime, self._facts, send,
                                     inbox or asyncio.Queue())
            async with asyncio.timeout(limit):
                data = await handler(ctx)
            return protocol.Reply(request_id=request.id, data=data)
        except InstructionError as exc:
            return protocol.Reply(request_id=request.id,
                                  error=protocol.ReplyError(exc.code, str(exc)))
        except TimeoutError:
            return protocol.Reply(request_id=request.id, error=protocol.ReplyError(
                ErrorCode.TIMEOUT, f"{request.name} did not finish within "
                                   f"{request.timeout_ms / 1000:g} s"))
        except Exception as exc:
            log.exception("instruction %s failed unexpectedly", request.name)
            return protocol.Reply(request_id=request.id, error=protocol.ReplyError(
                ErrorCode.INTERNAL, f"agent error in {request.name}: {exc}"))
