"""Stream instructions: a container's logs and an interactive command in it. Output goes to
the server as ``streamData`` (base64); the reply comes when the stream ends."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from typing import Any

from agent.dispatcher import InstructionContext
from agent.handlers.instances import require_container
from shared import protocol
from shared.errors import InstructionError
from shared.instructions import ExecRequest, ExecResult, LogsRequest, NoData


async def _forward(ctx: InstructionContext, read: Any) -> None:
    """Send every chunk ``read()`` returns (in a thread) until it returns None."""
    while (chunk := await asyncio.to_thread(read)) is not None:
        await ctx.send(protocol.StreamData(stream_id=ctx.request.id,
                                           data=base64.b64encode(chunk).decode()))


async def _until_closed(ctx: InstructionContext) -> None:
    while not isinstance(await ctx.inbox.get(), protocol.StreamClose):
        pass


async def logs(ctx: InstructionContext) -> NoData:
    """The container's output: the last ``tail`` lines, then new lines while ``follow``."""
    request = LogsRequest.parse(ctx.request.data)
    container = await require_container(ctx, request.uuid)
    stream = await asyncio.to_thread(
        ctx.runtime.logs, container.docker_id, follow=request.follow, tail=request.tail,
        timestamps=request.timestamps)
    closed = asyncio.create_task(_until_closed(ctx))
    forward = asyncio.create_task(_forward(ctx, lambda: next(stream, None)))
    try:
        await asyncio.wait({closed, forward}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stream.close()  # ends a read blocked in its thread
        closed.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await forward
    return NoData()


async def execute(ctx: InstructionContext) -> ExecResult:
    """Run a command in the container, relaying its input and output; reply its exit code."""
    request = ExecRequest.parse(ctx.request.data)
    container = await require_container(ctx, request.uuid)
    session = await asyncio.to_thread(ctx.runtime.exec, container.docker_id,
                                      list(request.command), tty=request.tty,
                                      stdin=request.attach_stdin)
    forward = asyncio.create_task(_forward(ctx, session.read))
    inputs = asyncio.create_task(_relay_input(ctx, session))
    try:
        await asyncio.wait({forward, inputs}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        inputs.cancel()
        session.close()
        with contextlib.suppress(asyncio.CancelledError):
            await forward
    return ExecResult(await asyncio.to_thread(session.exit_code))


async def _relay_input(ctx: InstructionContext, session: Any) -> None:
    """Pass input and resizes on until the server closes the stream. A command that stopped
    reading, or a resize that came too late, ends nothing: the output still counts."""
    accepting = True
    while True:
        message = await ctx.inbox.get()
        match message:
            case protocol.StreamData():
                if not accepting:
                    continue
                chunk = base64.b64decode(message.data, validate=False)
                try:
                    if chunk:
                        await asyncio.to_thread(session.write, chunk)
                    else:  # an empty chunk is end of input
                        await asyncio.to_thread(session.close_input)
                except InstructionError:
                    accepting = False
            case protocol.StreamResize():
                with contextlib.suppress(InstructionError):
                    await asyncio.to_thread(session.resize, message.cols, message.rows)
            case protocol.StreamClose():
                return
