"""Carry out instructions: look the handler up in one visible table, run it, turn its outcome
into exactly one reply.

What the dispatcher guarantees:

- every request gets exactly one reply while its session lives, after all its progress messages;
- instructions about one resource run one at a time, in the order they arrived;
- at most ``max_concurrent`` handlers run at once.

Running a handler and waiting for its reply are two things. Each instruction runs in a *job*, a
task the dispatcher owns: it waits for its resource's turn, then for a slot, runs the handler and
gives both back only when the handler has ended. :meth:`Dispatcher.handle` is the request's wait:
it sends the job's reply, or the ``timeout`` error as soon as the handler has run longer than the
request allows.

Neither a timeout nor the end of the session cancels a job whose handler has started. Its Docker
call runs on in its thread whatever happens to the task that awaits it (a thread cannot be
cancelled), and while it runs the resource must stay taken: a freed turn would let the
``instance.create`` the server re-sends find no container yet and create a second one. So the
re-sent instruction waits for the first (saying so in a progress message) and finds the container
the first one made; the first one's late result is logged and dropped. A job still waiting for
its turn when its session ends is dropped at once: the server re-sends what it still needs.

Streams (``instance.logs``, ``instance.exec``) run inside the request's wait instead: they take no
turn, no slot and no time limit, and end when their session ends. What the server sends on a
stream waits in its inbox, which holds at most ``INBOX_LIMIT`` messages: a server that sends
more than the stream takes breaks the protocol's flow, so the stream is closed with an
``invalidMessage`` reply rather than buffered without bound.

Handlers return typed reply data (``shared.instructions``); the dispatcher dumps it into the
reply, so the wire shape is decided by the payload types alone.

:meth:`Dispatcher.close` ends the dispatcher for good (agent shutdown): it gives the handlers in
progress a few seconds to end, then cancels them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from agent.dns.manager import DnsService, NoDns
from agent.facts import FactsSource
from agent.health import HealthService, NoHealth
from agent.lb import LbService, NoLb
from agent.logs import log
from agent.network.manager import NetworkService, NoNetwork
from agent.runtime import ContainerRuntime
from shared import protocol
from shared.errors import ErrorCode, InstructionError
from shared.fields import JsonObject

Send = Callable[[protocol.AgentMessage], Awaitable[None]]
StreamInput = protocol.StreamData | protocol.StreamResize | protocol.StreamClose

SHUTDOWN_GRACE = 5.0
"""Seconds :meth:`Dispatcher.close` waits for running handlers (their Docker calls) to end."""
INBOX_LIMIT = 256
"""Messages a stream's inbox holds; one more closes the stream (see the module docstring)."""


def new_inbox() -> asyncio.Queue[StreamInput]:
    return asyncio.Queue(maxsize=INBOX_LIMIT)


@dataclass
class InstructionContext:
    """What a handler may use: the runtime, the host facts, the managed network, the discovery
    DNS, the health checker, the load balancers, and a way to report progress."""

    request: protocol.Request
    runtime: ContainerRuntime
    facts: FactsSource
    send: Send
    # What the server sends on an open stream (input, resize, close), for stream handlers.
    inbox: asyncio.Queue[StreamInput] = field(default_factory=new_inbox)
    network: NetworkService = field(default_factory=NoNetwork)
    dns: DnsService = field(default_factory=NoDns)
    health: HealthService = field(default_factory=NoHealth)
    lb: LbService = field(default_factory=NoLb)

    async def progress(self, message: str, percent: int | None = None) -> None:
        await self.send(protocol.Progress(request_id=self.request.id, message=message,
                                          progress=percent))


class ReplyData(Protocol):
    """What a handler returns: a payload of ``shared.instructions`` (anything with dump)."""

    def dump(self) -> JsonObject: ...


Handler = Callable[[InstructionContext], Awaitable[ReplyData]]


@dataclass(eq=False)
class _Stream:
    """An open stream's inbox, and whether the server overran it."""

    inbox: asyncio.Queue[StreamInput] = field(default_factory=new_inbox)
    overrun: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _KeyLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


@dataclass(eq=False)
class _Job:
    """One instruction's run; ``reply`` is settled once, by its outcome or by its timeout."""

    request: protocol.Request
    key: str
    reply: asyncio.Future[protocol.Reply]
    task: asyncio.Task[None] | None = None
    started: bool = False      # its handler runs: it holds its resource's turn and a slot
    abandoned: bool = False    # its session ended: nobody waits for its reply any more


class Dispatcher:
    def __init__(self, handlers: Mapping[str, Handler], runtime: ContainerRuntime,
                 facts: FactsSource, max_concurrent: int = 32,
                 streaming: frozenset[str] = frozenset(),
                 network: NetworkService | None = None,
                 dns: DnsService | None = None,
                 health: HealthService | None = None,
                 lb: LbService | None = None) -> None:
        self._handlers = handlers
        self._network = network or NoNetwork()
        self._dns = dns or NoDns()
        self._health = health or NoHealth()
        self._lb = lb or NoLb()
        # Streams (logs, exec) last as long as someone watches: they take no per-resource
        # turn and no timeout, and get what the server sends on them through their inbox.
        self._streaming = streaming
        self._inboxes: dict[str, _Stream] = {}
        self._runtime = runtime
        self._facts = facts
        self._slots = asyncio.Semaphore(max_concurrent)
        self._locks: dict[str, _KeyLock] = {}
        self._jobs: set[_Job] = set()
        self._closed = False

    def prepare(self, request: protocol.Request) -> None:
        """Open a stream's inbox as soon as its request arrives, before its task runs, so
        that input sent right behind the request is not lost."""
        if request.name in self._streaming:
            self._inboxes.setdefault(request.id, _Stream())

    def deliver(self, message: StreamInput) -> None:
        """Hand stream input to the running stream it names; ignore it for a finished one.
        Input beyond a full inbox is dropped and ends the stream (see the module docstring)."""
        stream = self._inboxes.get(message.stream_id)
        if stream is None or stream.overrun.is_set():
            return
        try:
            stream.inbox.put_nowait(message)
        except asyncio.QueueFull:
            log.warning("stream %s: the server sent more than %d messages it had not taken; "
                        "closing it", message.stream_id, INBOX_LIMIT)
            stream.overrun.set()

    async def handle(self, request: protocol.Request, send: Send) -> None:
        """Run one instruction and send its reply; never raises for the instruction's sake.

        Cancelling this (the session ended) gives up the reply, not the work: a handler that
        has started goes on until it ends, keeping its resource's turn.
        """
        if request.name in self._streaming:
            await self._stream(request, send)
            return
        if self._closed:
            await send(_error(request, ErrorCode.CANCELLED,
                              f"the agent is stopping; {request.name} was not run"))
            return
        job, waits = self._start(request, send)
        try:
            if waits:
                await self._job_send(job, send, protocol.Progress(
                    request_id=request.id, message=f"waiting for an earlier instruction about "
                    f"{request.resource_type} {request.resource_id} to finish"))
            reply = await asyncio.shield(job.reply)
        except asyncio.CancelledError:
            self._abandon(job)
            raise
        await send(reply)

    async def close(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop for good: drop the instructions still waiting for their turn, give the running
        ones ``grace`` seconds to end, then cancel them. Later requests are refused."""
        self._closed = True
        for job in list(self._jobs):
            if not job.started and job.task is not None:
                job.task.cancel()
        tasks = {job.task for job in self._jobs if job.task is not None}
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=grace)
        if late:
            log.warning("stopping with %d instructions unfinished after %g s: %s", len(late),
                        grace, ", ".join(sorted(j.request.name for j in self._jobs
                                                if j.task in late)))
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    # --- jobs ---------------------------------------------------------------------------

    def _start(self, request: protocol.Request, send: Send) -> tuple[_Job, bool]:
        """Start the job of ``request``; say whether it must wait for another instruction."""
        key = f"{request.resource_type}:{request.resource_id}"
        entry = self._locks.setdefault(key, _KeyLock())
        entry.users += 1  # until the job's task is done (see _ended), even if never run
        waits = entry.lock.locked()
        job = _Job(request, key, asyncio.get_running_loop().create_future())
        job.task = asyncio.create_task(self._work(job, entry, send))
        job.task.add_done_callback(lambda task: self._ended(job, task))
        self._jobs.add(job)
        return job, waits

    async def _work(self, job: _Job, entry: _KeyLock, send: Send) -> None:
        request = job.request
        async with entry.lock, self._slots:
            job.started = True
            log.debug("instruction %s %s %s started (request %s)", request.name,
                      request.resource_type, request.resource_id, request.id)
            started = time.monotonic()
            timer = asyncio.get_running_loop().call_later(
                request.timeout_ms / 1000, self._expire, job)
            try:
                reply = await self._run(request, lambda m: self._job_send(job, send, m))
            finally:
                timer.cancel()
            self._settle(job, reply, (time.monotonic() - started) * 1000)

    @staticmethod
    async def _job_send(job: _Job, send: Send, message: protocol.AgentMessage) -> None:
        """Progress goes out only while someone waits for the reply, and only before it."""
        if not job.reply.done() and not job.abandoned:
            await send(message)

    def _expire(self, job: _Job) -> None:
        request = job.request
        if job.reply.done():
            return
        job.reply.set_result(_error(request, ErrorCode.TIMEOUT,
                                    f"{request.name} did not finish within "
                                    f"{request.timeout_ms / 1000:g} s"))
        log.warning("instruction %s %s %s timed out; it keeps its turn until it ends",
                    request.name, request.resource_type, request.resource_id)

    def _settle(self, job: _Job, reply: protocol.Reply, elapsed_ms: float) -> None:
        request = job.request
        outcome = "ok" if reply.error is None else f"failed: {reply.error.message}"
        if job.abandoned:
            log.info("instruction %s %s %s ended after its session: %s in %.0f ms; "
                     "reply dropped", request.name, request.resource_type,
                     request.resource_id, outcome, elapsed_ms)
        elif job.reply.done():
            log.info("instruction %s %s %s ended after its timeout: %s in %.0f ms; "
                     "result dropped", request.name, request.resource_type,
                     request.resource_id, outcome, elapsed_ms)
        else:
            log.debug("instruction %s %s %s: %s in %.0f ms", request.name,
                      request.resource_type, request.resource_id, outcome, elapsed_ms)
        if not job.reply.done():
            job.reply.set_result(reply)

    def _abandon(self, job: _Job) -> None:
        """The session of ``job`` ended: a job still waiting for its turn is dropped; one
        running goes on, holding its turn, since its Docker call runs on in its thread."""
        job.abandoned = True
        request = job.request
        if not job.started and job.task is not None:
            job.task.cancel()
        elif not job.reply.done():
            log.info("session ended during %s %s %s; it goes on until it ends",
                     request.name, request.resource_type, request.resource_id)

    def _ended(self, job: _Job, task: asyncio.Task[None]) -> None:
        """Give back the job's share of its resource's entry; settle the reply of a job that
        ended without one (cancelled, or a bug)."""
        self._jobs.discard(job)
        entry = self._locks[job.key]
        entry.users -= 1
        if entry.users == 0:
            del self._locks[job.key]
        request = job.request
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            log.error("instruction %s failed outside its handler", request.name, exc_info=exc)
        if job.reply.done():
            return
        if exc is None:
            job.reply.set_result(_error(request, ErrorCode.CANCELLED,
                                        f"the agent is stopping; {request.name} was cancelled"))
        else:
            job.reply.set_result(_error(request, ErrorCode.INTERNAL,
                                        f"agent error in {request.name}: {exc}"))

    # --- running a handler --------------------------------------------------------------

    async def _stream(self, request: protocol.Request, send: Send) -> None:
        self.prepare(request)
        stream = self._inboxes[request.id]
        started = time.monotonic()
        log.debug("stream %s %s %s started (request %s)", request.name, request.resource_type,
                  request.resource_id, request.id)
        run = asyncio.create_task(self._run(request, send, stream.inbox))
        overrun = asyncio.create_task(stream.overrun.wait())
        try:
            await asyncio.wait({run, overrun}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            overrun.cancel()
            if not run.done():  # overrun, or this wait was cancelled (the session ended)
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run
            del self._inboxes[request.id]
        if run.cancelled():
            reply = _error(request, ErrorCode.INVALID_MESSAGE,
                           f"{request.name} was closed: the server sent more than "
                           f"{INBOX_LIMIT} stream messages it had not taken yet")
        else:
            reply = run.result()
        log.debug("stream %s %s %s ended after %.1f s", request.name, request.resource_type,
                  request.resource_id, time.monotonic() - started)
        await send(reply)

    async def _run(self, request: protocol.Request, send: Send,
                   inbox: asyncio.Queue[StreamInput] | None = None) -> protocol.Reply:
        """Run the handler and turn its outcome into a reply: the one place where exceptions
        become error codes."""
        handler = self._handlers.get(request.name)
        try:
            if handler is None:
                raise InstructionError(f"this agent does not know instruction "
                                       f"{request.name!r}; upgrade it",
                                       ErrorCode.UNKNOWN_INSTRUCTION)
            ctx = InstructionContext(request, self._runtime, self._facts, send,
                                     inbox or new_inbox(), self._network, self._dns,
                                     self._health, self._lb)
            result = await handler(ctx)
            return protocol.Reply(request_id=request.id, data=result.dump())
        except InstructionError as exc:
            return _error(request, exc.code, str(exc))
        except Exception as exc:
            log.exception("instruction %s failed unexpectedly", request.name)
            return _error(request, ErrorCode.INTERNAL, f"agent error in {request.name}: {exc}")


def _error(request: protocol.Request, code: ErrorCode, message: str) -> protocol.Reply:
    return protocol.Reply(request_id=request.id, error=protocol.ReplyError(code, message))
