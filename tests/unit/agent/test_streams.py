"""Stream instructions (logs, exec) through the real dispatcher, on the fake runtime."""

from __future__ import annotations

import asyncio
import base64

from agent.dispatcher import INBOX_LIMIT, Dispatcher
from agent.facts import FactsSource
from agent.handlers import HANDLERS, STREAMING
from shared import protocol
from shared.errors import ErrorCode
from tests.unit.agent.fakes import FakeRuntime

UUID = "c0ffee00-0000-4000-8000-000000000009"


class Harness:
    def __init__(self) -> None:
        self.runtime = FakeRuntime()
        self.sent: list[protocol.AgentMessage] = []
        self.dispatcher = Dispatcher(HANDLERS, self.runtime, FactsSource(self.runtime, {}, None),
                                     streaming=STREAMING)
        self.docker_id = self.runtime.add_container(UUID, "running")

    async def send(self, message: protocol.AgentMessage) -> None:
        self.sent.append(message)

    def start(self, name: str, **data: object) -> tuple[protocol.Request, asyncio.Task[None]]:
        """Begin an instruction the way the connection does: inbox first, then the task."""
        # Streams get 1 ms to show they have no time limit; other instructions have one, so
        # they get plenty.
        request = protocol.Request(id=f"r-{len(self.sent)}-{name}", name=name,
                                   resource_type="container", resource_id="1i1",
                                   data={"uuid": UUID, **data},
                                   timeout_ms=1 if name in STREAMING else 5_000)
        self.dispatcher.prepare(request)
        return request, asyncio.create_task(self.dispatcher.handle(request, self.send))

    def output(self, request: protocol.Request) -> bytes:
        return b"".join(base64.b64decode(m.data) for m in self.sent
                        if isinstance(m, protocol.StreamData) and m.stream_id == request.id)

    def reply(self, request: protocol.Request) -> protocol.Reply:
        replies = [m for m in self.sent
                   if isinstance(m, protocol.Reply) and m.request_id == request.id]
        assert len(replies) == 1
        return replies[0]


async def test_logs_without_follow_sends_the_output_then_one_reply() -> None:
    h = Harness()
    h.runtime.log_output[h.docker_id] = [b"one\n", b"two\n"]
    request, task = h.start("instance.logs", follow=False, tail=10)
    await asyncio.wait_for(task, 5)
    assert h.output(request) == b"one\ntwo\n"
    assert h.reply(request).data == {} and h.sent[-1] == h.reply(request)
    assert ("logs", (h.docker_id, False, 10, False)) in h.runtime.call_args


async def test_followed_logs_run_past_the_timeout_until_the_server_closes_them() -> None:
    h = Harness()
    h.runtime.log_output[h.docker_id] = [b"line\n"]
    request, task = h.start("instance.logs", follow=True)
    await asyncio.sleep(0.05)  # well past the request's 1 ms timeout: streams have none
    assert not task.done() and h.output(request) == b"line\n"
    h.dispatcher.deliver(protocol.StreamClose(stream_id=request.id))
    await asyncio.wait_for(task, 5)
    assert h.reply(request).error is None


async def test_exec_relays_input_resizes_and_replies_the_exit_code() -> None:
    h = Harness()
    request, task = h.start("instance.exec", command=["sh"], tty=True)
    h.dispatcher.deliver(protocol.StreamResize(stream_id=request.id, cols=80, rows=24))
    h.dispatcher.deliver(protocol.StreamData(stream_id=request.id,
                                             data=base64.b64encode(b"typed\n").decode()))
    h.dispatcher.deliver(protocol.StreamData(stream_id=request.id, data=""))
    await asyncio.wait_for(task, 5)
    assert h.output(request) == b"ran sh\ntyped\n"
    assert h.runtime.execs[0].resizes == [(80, 24)]
    assert h.reply(request).data == {"exitCode": 0}


async def test_exec_without_a_command_is_invalid_data() -> None:
    h = Harness()
    request, task = h.start("instance.exec", command=[])
    await asyncio.wait_for(task, 5)
    error = h.reply(request).error
    assert error is not None and error.code is protocol.ErrorCode.INVALID_DATA


async def test_a_stream_takes_no_turn_from_other_instructions_on_its_container() -> None:
    h = Harness()
    stream, stream_task = h.start("instance.logs", follow=True)
    inspect, inspect_task = h.start("instance.inspect")
    inspect_task_result = await asyncio.wait_for(inspect_task, 5)
    assert inspect_task_result is None and h.reply(inspect).data["dockerId"] == h.docker_id
    assert not stream_task.done()
    h.dispatcher.deliver(protocol.StreamClose(stream_id=stream.id))
    await asyncio.wait_for(stream_task, 5)


async def test_input_for_a_finished_stream_is_ignored() -> None:
    h = Harness()
    h.dispatcher.deliver(protocol.StreamData(stream_id="gone", data="eA=="))
    assert h.sent == []


async def test_input_beyond_a_full_inbox_closes_the_stream_with_an_invalid_message_reply(
) -> None:
    """A server that sends faster than a stream takes is cut off, never buffered forever."""
    h = Harness()
    request, task = h.start("instance.logs", follow=True)
    await asyncio.sleep(0.05)  # the stream is running, waiting for the server to close it
    for _ in range(INBOX_LIMIT + 10):  # no await in between: nothing is taken meanwhile
        h.dispatcher.deliver(protocol.StreamResize(stream_id=request.id, cols=80, rows=24))
    await asyncio.wait_for(task, 5)
    reply = h.reply(request)
    assert reply.error == protocol.ReplyError(
        ErrorCode.INVALID_MESSAGE, f"instance.logs was closed: the server sent more than "
        f"{INBOX_LIMIT} stream messages it had not taken yet")
    assert h.sent[-1] == reply
    assert request.id not in h.dispatcher._inboxes  # the inbox went with the stream


async def test_a_stream_inbox_is_bounded() -> None:
    h = Harness()
    request, task = h.start("instance.logs", follow=True)
    assert h.dispatcher._inboxes[request.id].inbox.maxsize == INBOX_LIMIT
    h.dispatcher.deliver(protocol.StreamClose(stream_id=request.id))
    await asyncio.wait_for(task, 5)
