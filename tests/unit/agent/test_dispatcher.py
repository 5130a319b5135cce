"""The dispatcher: one reply per instruction, errors turned into codes, per-resource ordering,
and handlers that outlive their request's wait (a timeout, a dropped session) keeping their turn."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from agent.dispatcher import Dispatcher, Handler, InstructionContext
from agent.facts import FactsSource
from agent.handlers import HANDLERS
from agent.runtime import RuntimeUnavailable
from shared import protocol
from shared.errors import ErrorCode, InstructionError
from tests.support.timing import seconds
from tests.unit.agent.fakes import FakeRuntime, GatedCreateRuntime, Raw, blank_spec

# Generous: reached only if the dispatcher is broken (a handler would otherwise wait forever).
DEADLOCK_MS = 5_000
DEADLOCK_S = DEADLOCK_MS / 1000


class Outbox:
    """The ``send`` callable the connection would pass: records every message; ``arrived`` is
    set by the first."""

    def __init__(self) -> None:
        self.sent: list[protocol.AgentMessage] = []
        self.arrived = asyncio.Event()

    async def __call__(self, message: protocol.AgentMessage) -> None:
        self.sent.append(message)
        self.arrived.set()

    def replies(self) -> dict[str, protocol.Reply]:
        return {m.request_id: m for m in self.sent if isinstance(m, protocol.Reply)}


def make_dispatcher(handlers: dict[str, Handler], runtime: FakeRuntime | None = None,
                    labels: dict[str, str] | None = None) -> Dispatcher:
    runtime = runtime or FakeRuntime()
    return Dispatcher(handlers, runtime, FactsSource(runtime, labels or {}, None))


def request(name: str = "thing.do", resource_id: str = "1t1", *, request_id: str = "req-1",
            timeout_ms: int = DEADLOCK_MS, data: dict[str, Any] | None = None
            ) -> protocol.Request:
    return protocol.Request(id=request_id, name=name, resource_type="thing",
                            resource_id=resource_id, data=data or {}, timeout_ms=timeout_ms)


async def run(handlers: dict[str, Handler], req: protocol.Request) -> list[protocol.AgentMessage]:
    outbox = Outbox()
    await make_dispatcher(handlers).handle(req, outbox)
    return outbox.sent


# outcomes


async def test_a_handler_result_becomes_one_reply_naming_the_request() -> None:
    async def echo(ctx: InstructionContext) -> Raw:
        return Raw({"got": ctx.request.data, "resource": ctx.request.resource_id})

    sent = await run({"thing.do": echo}, request(request_id="r-42", data={"n": 1}))
    assert sent == [protocol.Reply(request_id="r-42", data={"got": {"n": 1}, "resource": "1t1"})]


async def test_progress_messages_come_before_the_reply() -> None:
    async def steps(ctx: InstructionContext) -> Raw:
        await ctx.progress("pulling image", 10)
        await ctx.progress("starting")
        return Raw({"ok": True})

    sent = await run({"thing.do": steps}, request(request_id="r-1"))
    assert sent == [
        protocol.Progress(request_id="r-1", message="pulling image", progress=10),
        protocol.Progress(request_id="r-1", message="starting", progress=None),
        protocol.Reply(request_id="r-1", data={"ok": True}),
    ]


async def test_an_unknown_instruction_is_replied_to_with_unknown_instruction() -> None:
    sent = await run({}, request("instance.teleport", request_id="r-9"))
    assert len(sent) == 1
    reply = sent[0]
    assert isinstance(reply, protocol.Reply)
    assert reply.request_id == "r-9"
    assert reply.data == {}
    assert reply.error is not None
    assert reply.error.code is ErrorCode.UNKNOWN_INSTRUCTION
    assert "'instance.teleport'" in reply.error.message


@pytest.mark.parametrize("error", [
    InstructionError("Container web-1 does not exist.", ErrorCode.NOT_FOUND),
    InstructionError("Port 80 is taken."),
    RuntimeUnavailable("The Docker engine cannot be reached."),
])
async def test_an_instruction_error_keeps_its_code_and_message(error: InstructionError) -> None:
    async def failing(ctx: InstructionContext) -> Raw:
        await ctx.progress("trying")
        raise error

    sent = await run({"thing.do": failing}, request())
    assert sent[-1] == protocol.Reply(request_id="req-1",
                                      error=protocol.ReplyError(error.code, str(error)))
    assert len(sent) == 2


async def test_an_unexpected_exception_is_an_internal_error_reply(
        caplog: pytest.LogCaptureFixture) -> None:
    async def buggy(ctx: InstructionContext) -> Raw:
        raise KeyError("Id")

    sent = await run({"thing.do": buggy}, request())  # does not raise
    assert len(sent) == 1
    reply = sent[0]
    assert isinstance(reply, protocol.Reply)
    assert reply.error is not None
    assert reply.error.code is ErrorCode.INTERNAL
    assert "thing.do" in reply.error.message
    assert any(r.exc_info for r in caplog.records)  # logged with its traceback


async def test_a_handler_exceeding_its_timeout_is_a_timeout_reply() -> None:
    never = asyncio.Event()

    async def stuck(ctx: InstructionContext) -> Raw:
        await never.wait()
        return Raw({})

    sent = await run({"thing.do": stuck}, request(timeout_ms=1))
    assert len(sent) == 1
    reply = sent[0]
    assert isinstance(reply, protocol.Reply)
    assert reply.error is not None
    assert reply.error.code is ErrorCode.TIMEOUT
    assert reply.error.message == "thing.do did not finish within 0.001 s"


async def test_a_reply_is_sent_for_each_of_many_instructions() -> None:
    async def echo(ctx: InstructionContext) -> Raw:
        return Raw({"id": ctx.request.id})

    outbox = Outbox()
    dispatcher = make_dispatcher({"thing.do": echo})
    await asyncio.gather(*(dispatcher.handle(request(resource_id=f"1t{i % 3 + 1}",
                                                     request_id=f"r{i}"), outbox)
                           for i in range(20)))
    assert {rid: r.data for rid, r in outbox.replies().items()} == {
        f"r{i}": {"id": f"r{i}"} for i in range(20)}
    assert len(outbox.sent) == 20


# ordering


async def test_instructions_for_the_same_resource_run_one_after_another() -> None:
    """B, for the same resource as A, is queued before C; C releases A. B runs after A ends."""
    log: list[str] = []
    a_started, release_a = asyncio.Event(), asyncio.Event()

    async def handler(ctx: InstructionContext) -> Raw:
        name = ctx.request.id
        log.append(f"{name} start")
        if name == "A":
            a_started.set()
            await release_a.wait()
        if name == "C":
            release_a.set()
        log.append(f"{name} end")
        return Raw({})

    dispatcher, outbox = make_dispatcher({"thing.do": handler}), Outbox()
    task_a = asyncio.create_task(dispatcher.handle(request(resource_id="1t1", request_id="A"),
                                                   outbox))
    await a_started.wait()
    task_b = asyncio.create_task(dispatcher.handle(request(resource_id="1t1", request_id="B"),
                                                   outbox))
    task_c = asyncio.create_task(dispatcher.handle(request(resource_id="1t2", request_id="C"),
                                                   outbox))
    await asyncio.gather(task_a, task_b, task_c)
    assert log.index("B start") > log.index("A end")
    assert log.index("C start") < log.index("A end")  # C ran while A was waiting
    assert all(r.error is None for r in outbox.replies().values())


async def test_instructions_for_different_resources_run_concurrently() -> None:
    """Each handler waits for the other to have started: only concurrency lets both finish."""
    started = {"A": asyncio.Event(), "B": asyncio.Event()}

    async def handler(ctx: InstructionContext) -> Raw:
        mine, other = ("A", "B") if ctx.request.id == "A" else ("B", "A")
        started[mine].set()
        await started[other].wait()
        return Raw({"saw": other})

    dispatcher, outbox = make_dispatcher({"thing.do": handler}), Outbox()
    await asyncio.gather(
        dispatcher.handle(request(resource_id="1t1", request_id="A"), outbox),
        dispatcher.handle(request(resource_id="1t2", request_id="B"), outbox),
    )
    assert outbox.replies() == {"A": protocol.Reply(request_id="A", data={"saw": "B"}),
                                "B": protocol.Reply(request_id="B", data={"saw": "A"})}


async def test_a_failed_instruction_does_not_block_the_next_for_its_resource() -> None:
    async def flaky(ctx: InstructionContext) -> Raw:
        if ctx.request.id == "first":
            raise RuntimeError("boom")
        return Raw({"ok": True})

    dispatcher, outbox = make_dispatcher({"thing.do": flaky}), Outbox()
    await dispatcher.handle(request(request_id="first"), outbox)
    await dispatcher.handle(request(request_id="second"), outbox)
    assert outbox.replies()["second"] == protocol.Reply(request_id="second", data={"ok": True})


# the real host.inspect handler


async def test_host_inspect_returns_facts_and_a_docker_summary_with_progress() -> None:
    runtime = FakeRuntime()
    dispatcher = make_dispatcher(dict(HANDLERS), runtime, labels={"zone": "eu-1"})
    outbox = Outbox()
    await dispatcher.handle(protocol.Request(id="r-1", name="host.inspect", resource_type="host",
                                             resource_id="1h3"), outbox)
    *progress, reply = outbox.sent
    assert progress == [
        protocol.Progress(request_id="r-1", message="gathering host facts", progress=10),
        protocol.Progress(request_id="r-1", message="asking the container engine", progress=60),
    ]
    assert isinstance(reply, protocol.Reply)
    assert reply.request_id == "r-1"
    assert reply.error is None
    assert reply.data["docker"] == {
        "version": "20.10.24+dfsg1", "apiVersion": "1.41", "containers": 3,
        "containersRunning": 2, "images": 5, "driver": "overlay2", "name": "vm",
    }
    facts = reply.data["facts"]
    assert isinstance(facts["hostname"], str)
    assert facts["labels"]["zone"] == "eu-1"
    assert isinstance(reply.data["durationMs"], int)
    assert "version" in runtime.calls
    assert "info" in runtime.calls
    protocol.parse(protocol.dump(reply))  # fits the wire


async def test_host_inspect_without_a_docker_engine_replies_runtime_unavailable() -> None:
    runtime = FakeRuntime()
    runtime.error = RuntimeUnavailable("The Docker engine at unix:///var/run/docker.sock "
                                       "cannot be reached.")
    dispatcher, outbox = make_dispatcher(dict(HANDLERS), runtime), Outbox()
    await dispatcher.handle(protocol.Request(id="r-1", name="host.inspect", resource_type="host",
                                             resource_id="1h3"), outbox)
    reply = outbox.sent[-1]
    assert isinstance(reply, protocol.Reply)
    assert reply.error == protocol.ReplyError(ErrorCode.RUNTIME_UNAVAILABLE, str(runtime.error))


# a handler outlives its request's wait


UUID = "5d1e0c2a-7b3f-4e9d-8a6c-0f1e2d3c4b5a"


def create_request(request_id: str, timeout_ms: int = DEADLOCK_MS) -> protocol.Request:
    """``instance.create`` as the server sends it, and re-sends, for one container."""
    spec = blank_spec(uuid=UUID, image="corral-test/busybox:latest", command=["sleep", "300"])
    return protocol.Request(id=request_id, name="instance.create", resource_type="container",
                            resource_id="1i7", data={"container": spec, "registryAuth": None},
                            timeout_ms=timeout_ms)


async def test_a_create_resent_after_its_session_dropped_waits_for_the_first_one() -> None:
    """The session drops while Docker creates the container, and the connection cancels the
    tasks it started. The create the server re-sends on the next session waits for the first
    one's Docker call and answers with its container: one container, not two."""
    runtime = GatedCreateRuntime(limit=DEADLOCK_S)
    dispatcher = make_dispatcher(dict(HANDLERS), runtime)
    first, resent = Outbox(), Outbox()
    waiting = asyncio.create_task(dispatcher.handle(create_request("first"), first))
    assert await asyncio.to_thread(runtime.entered.wait, DEADLOCK_S)
    waiting.cancel()  # what AgentConnection does to its session's tasks when the session ends
    with contextlib.suppress(asyncio.CancelledError):
        await waiting

    resending = asyncio.create_task(dispatcher.handle(create_request("resent"), resent))
    # Its first message: that it waits, or (broken) that it went past its check and creates.
    await asyncio.wait_for(resent.arrived.wait(), DEADLOCK_S)
    runtime.gate.set()
    await asyncio.wait_for(resending, DEADLOCK_S)
    assert await asyncio.to_thread(runtime.wait_idle, DEADLOCK_S)

    assert len(runtime.containers) == 1
    [docker_id] = runtime.containers
    reply = resent.replies()["resent"]
    assert reply.error is None and reply.data["dockerId"] == docker_id
    assert runtime.calls.count("create_container") == 1
    assert first.replies() == {}  # its session is gone: its late result is dropped


async def test_a_create_resent_after_its_timeout_waits_for_the_first_one() -> None:
    """A create slower than its request's timeout is answered with ``timeout`` at once, but its
    Docker call keeps the container's turn: the re-sent create waits for it and answers with
    the container it made. The late result of the first is not sent."""
    runtime = GatedCreateRuntime(limit=DEADLOCK_S)
    dispatcher = make_dispatcher(dict(HANDLERS), runtime)
    first, resent = Outbox(), Outbox()
    # Long enough for the create to reach Docker (which then waits for the gate), so that the
    # timeout falls during the Docker call.
    short = int(seconds(0.5) * 1000)
    await asyncio.wait_for(dispatcher.handle(create_request("first", short), first), DEADLOCK_S)
    timed_out = first.replies()["first"]
    assert timed_out.error is not None and timed_out.error.code is ErrorCode.TIMEOUT
    assert runtime.entered.is_set(), "the create had not reached Docker within its timeout; " \
        "raise CORRAL_TEST_TIME_SCALE"

    resending = asyncio.create_task(dispatcher.handle(create_request("resent"), resent))
    await asyncio.wait_for(resent.arrived.wait(), DEADLOCK_S)
    runtime.gate.set()
    await asyncio.wait_for(resending, DEADLOCK_S)
    assert await asyncio.to_thread(runtime.wait_idle, DEADLOCK_S)

    assert len(runtime.containers) == 1
    [docker_id] = runtime.containers
    reply = resent.replies()["resent"]
    assert reply.error is None and reply.data["dockerId"] == docker_id
    assert runtime.calls.count("create_container") == 1
    assert first.sent[-1] == timed_out  # nothing after the timeout reply


async def test_an_instruction_waiting_for_its_resource_says_so_before_it_runs() -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def handler(ctx: InstructionContext) -> Raw:
        if ctx.request.id == "A":
            started.set()
            await release.wait()
        return Raw({})

    dispatcher, first, second = make_dispatcher({"thing.do": handler}), Outbox(), Outbox()
    task_a = asyncio.create_task(dispatcher.handle(request(request_id="A"), first))
    await started.wait()
    task_b = asyncio.create_task(dispatcher.handle(request(request_id="B"), second))
    await asyncio.wait_for(second.arrived.wait(), DEADLOCK_S)
    release.set()
    await asyncio.gather(task_a, task_b)
    assert second.sent == [
        protocol.Progress(request_id="B", progress=None,
                          message="waiting for an earlier instruction about thing 1t1 to finish"),
        protocol.Reply(request_id="B", data={}),
    ]


async def test_a_timed_out_handler_keeps_its_slot_until_it_ends() -> None:
    """With one slot, an instruction for another resource runs only once the timed-out
    handler has really ended: a bounded number of handlers run, timed out or not."""
    events: list[str] = []
    release = asyncio.Event()

    async def handler(ctx: InstructionContext) -> Raw:
        events.append(f"{ctx.request.id} start")
        if ctx.request.id == "slow":
            await release.wait()
        events.append(f"{ctx.request.id} end")
        return Raw({})

    runtime = FakeRuntime()
    dispatcher = Dispatcher({"thing.do": handler}, runtime, FactsSource(runtime, {}, None),
                            max_concurrent=1)
    slow, other = Outbox(), Outbox()
    await dispatcher.handle(request(request_id="slow", timeout_ms=1), slow)
    error = slow.replies()["slow"].error
    assert error is not None and error.code is ErrorCode.TIMEOUT
    task = asyncio.create_task(dispatcher.handle(request(resource_id="1t2", request_id="other"),
                                                 other))
    release.set()
    await asyncio.wait_for(task, DEADLOCK_S)
    assert events == ["slow start", "slow end", "other start", "other end"]
    assert other.replies()["other"].error is None
    assert slow.sent == [slow.replies()["slow"]]  # its late result is dropped


async def test_an_instruction_still_queued_when_its_session_ends_never_runs() -> None:
    """Only instructions that have started keep running without their session; one still
    queued never runs (the server re-sends what it still needs)."""
    ran: list[str] = []
    started, release = asyncio.Event(), asyncio.Event()

    async def handler(ctx: InstructionContext) -> Raw:
        ran.append(ctx.request.id)
        started.set()
        await release.wait()
        return Raw({})

    dispatcher, outbox = make_dispatcher({"thing.do": handler}), Outbox()
    task_a = asyncio.create_task(dispatcher.handle(request(request_id="A"), outbox))
    await started.wait()
    task_b = asyncio.create_task(dispatcher.handle(request(request_id="B"), outbox))
    await asyncio.wait_for(outbox.arrived.wait(), DEADLOCK_S)  # B is queued
    task_a.cancel()
    task_b.cancel()
    for task in (task_a, task_b):
        with contextlib.suppress(asyncio.CancelledError):
            await task
    release.set()
    task_c = asyncio.create_task(dispatcher.handle(request(request_id="C"), outbox))
    await asyncio.wait_for(task_c, DEADLOCK_S)  # C ran after A ended
    assert ran == ["A", "C"]
    assert list(outbox.replies()) == ["C"]


async def test_closing_lets_a_running_docker_call_end_and_sends_its_reply() -> None:
    runtime = GatedCreateRuntime(limit=DEADLOCK_S)
    dispatcher, outbox = make_dispatcher(dict(HANDLERS), runtime), Outbox()
    task = asyncio.create_task(dispatcher.handle(create_request("first"), outbox))
    assert await asyncio.to_thread(runtime.entered.wait, DEADLOCK_S)
    closing = asyncio.create_task(dispatcher.close(grace=DEADLOCK_S))
    runtime.gate.set()
    await asyncio.wait_for(closing, DEADLOCK_S)
    assert runtime.creating() == 0 and len(runtime.containers) == 1  # returned after the call
    await asyncio.wait_for(task, DEADLOCK_S)
    reply = outbox.replies()["first"]
    assert reply.error is None and reply.data["dockerId"] in runtime.containers


async def test_closing_cancels_a_handler_still_running_after_the_grace() -> None:
    started, never = asyncio.Event(), asyncio.Event()

    async def stuck(ctx: InstructionContext) -> Raw:
        started.set()
        await never.wait()
        return Raw({})

    dispatcher, outbox = make_dispatcher({"thing.do": stuck}), Outbox()
    task = asyncio.create_task(dispatcher.handle(request(), outbox))
    await started.wait()
    await asyncio.wait_for(dispatcher.close(grace=0), DEADLOCK_S)
    await asyncio.wait_for(task, DEADLOCK_S)
    assert outbox.sent == [protocol.Reply(request_id="req-1", error=protocol.ReplyError(
        ErrorCode.CANCELLED, "the agent is stopping; thing.do was cancelled"))]


async def test_a_closed_dispatcher_refuses_new_instructions_as_cancelled() -> None:
    async def echo(ctx: InstructionContext) -> Raw:
        raise AssertionError("a closed dispatcher ran a handler")

    dispatcher, outbox = make_dispatcher({"thing.do": echo}), Outbox()
    await dispatcher.close()
    await dispatcher.handle(request(), outbox)
    assert outbox.sent == [protocol.Reply(request_id="req-1", error=protocol.ReplyError(
        ErrorCode.CANCELLED, "the agent is stopping; thing.do was not run"))]
