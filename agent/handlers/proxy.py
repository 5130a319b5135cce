"""``instance.proxy``: a connection from this host to one of a container's ports, relayed as
stream data both ways, for the server's container proxy. The server sends the request bytes;
the container's answer goes back until it closes the connection or the server closes the
stream. A container without an address of its own (host networking) is reached on loopback.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl

from agent.dispatcher import InstructionContext
from agent.handlers.instances import require_container
from shared import protocol
from shared.containers import ContainerStatus
from shared.errors import ErrorCode, InstructionError
from shared.instructions import NoData, ProxyRequest

CONNECT_TIMEOUT = 10.0
CHUNK = 32 * 1024


def _client_tls() -> ssl.SSLContext:
    # A container's certificate is its own, rarely one a client could verify: Rancher's proxy
    # did not check it either. The connection never leaves this host.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def proxy(ctx: InstructionContext) -> NoData:
    request = ProxyRequest.parse(ctx.request.data)
    container = await require_container(ctx, request.uuid)
    if container.status is not ContainerStatus.RUNNING:
        raise InstructionError(f"container {request.uuid} is not running", ErrorCode.CONFLICT)
    address = container.ip_address or "127.0.0.1"
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            reader, writer = await asyncio.open_connection(
                address, request.port,
                ssl=_client_tls() if request.scheme == "https" else None)
    except (OSError, TimeoutError) as exc:
        raise InstructionError(f"could not connect to {address}:{request.port} of container "
                               f"{request.uuid}: {exc or 'timed out'}") from None
    await relay(ctx, reader, writer)
    return NoData()


async def relay(ctx: InstructionContext, reader: asyncio.StreamReader,
                writer: asyncio.StreamWriter) -> None:
    """Relay the stream and a connection both ways until the peer closes the connection or
    the server closes the stream; then close the connection."""
    answer = asyncio.create_task(_answer(ctx, reader))
    asks = asyncio.create_task(_ask(ctx, writer))
    try:
        await asyncio.wait({answer, asks}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        asks.cancel()
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, asyncio.CancelledError):
            await writer.wait_closed()
        with contextlib.suppress(OSError, ssl.SSLError, asyncio.CancelledError):
            await answer


async def _answer(ctx: InstructionContext, reader: asyncio.StreamReader) -> None:
    """The peer's bytes to the server, until it closes the connection."""
    while chunk := await reader.read(CHUNK):
        await ctx.send(protocol.StreamData(stream_id=ctx.request.id,
                                           data=base64.b64encode(chunk).decode()))


async def _ask(ctx: InstructionContext, writer: asyncio.StreamWriter) -> None:
    """The server's bytes to the peer, until the server closes the stream. The write side
    stays open: an HTTP server may take a half-closed connection for a gone client."""
    while True:
        message = await ctx.inbox.get()
        match message:
            case protocol.StreamData():
                chunk = base64.b64decode(message.data, validate=False)
                if chunk:
                    writer.write(chunk)
                    await writer.drain()
            case protocol.StreamClose():
                return
            case _:
                continue
