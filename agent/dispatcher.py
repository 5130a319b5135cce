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


@dataclass
class InstructionContext:
    """What a handler may use: the runtime, the host facts, and a way to report progress."""

    request: protocol.Request
    runtime: ContainerRuntime
    facts: FactsSource
    send: Send

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
                 facts: FactsSource, max_concurrent: int = 32) -> None:
        self._handlers = handlers
        self._runtime = runtime
        self._facts = facts
        self._slots = asyncio.Semaphore(max_concurrent)
        self._locks: dict[str, _KeyLock] = {}

    async def handle(self, request: protocol.Request, send: Send) -> None:
        """Run one instruction and send its reply; never raises for the instruction's sake."""
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

    async def _run(self, request: protocol.Request, send: Send) -> protocol.Reply:
        handler = self._handlers.get(request.name)
        try:
            if handler is None:
                raise InstructionError(f"this agent does not know instruction "
                                       f"{request.name!r}; upgrade it",
                                       ErrorCode.UNKNOWN_INSTRUCTION)
            ctx = InstructionContext(request, self._runtime, self._facts, send)
            async with asyncio.timeout(request.timeout_ms / 1000):
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
