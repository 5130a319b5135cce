"""Streams between an API client and a container, through the host's agent session: no port
is opened on a host. The ``logs`` and ``execute`` actions issue a short-lived, single-use
ticket; ``GET /v1/stream?token=...`` (a websocket) redeems it and relays bytes both ways.

Frames to the client: logs as text; exec output base64-encoded text, as Rancher's terminal
expects. Frames from the client (exec): base64 text (or binary) for input, an empty frame for
end of input, and ``{"resize": {"cols": C, "rows": R}}`` to resize the terminal. The socket
closes with the command's exit code in the reason.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from server.agents.session import ServerStream
from server.api.errors import Unauthorized
from server.api.handlers import SERVICES
from shared.errors import HostNotConnected, InstructionError

if TYPE_CHECKING:
    from server.services import Services

TICKET_SECONDS = 60.0
MAX_CLIENT_FRAME = 1024 * 1024


@dataclass(frozen=True)
class Ticket:
    host_id: int
    instruction: str  # instance.logs or instance.exec
    resource_id: str
    data: dict[str, Any]
    expires: float = field(default_factory=lambda: time.monotonic() + TICKET_SECONDS)


class StreamTickets:
    """Tickets in memory: valid for a minute, good for one connection."""

    def __init__(self) -> None:
        self._tickets: dict[str, Ticket] = {}

    def issue(self, ticket: Ticket) -> str:
        now = time.monotonic()
        for token in [t for t, v in self._tickets.items() if v.expires < now]:
            del self._tickets[token]
        token = secrets.token_urlsafe(32)
        self._tickets[token] = ticket
        return token

    def redeem(self, token: str) -> Ticket | None:
        ticket = self._tickets.pop(token, None)
        if ticket is None or ticket.expires < time.monotonic():
            return None
        return ticket


async def _client_to_agent(ws: web.WebSocketResponse, stream: ServerStream) -> None:
    async for msg in ws:
        if msg.type is WSMsgType.BINARY:
            stream.write(msg.data)
        elif msg.type is WSMsgType.TEXT:
            text = msg.data.strip()
            if text.startswith("{"):
                try:
                    resize = json.loads(text)["resize"]
                    stream.resize(int(resize["cols"]), int(resize["rows"]))
                except (ValueError, KeyError, TypeError):
                    await ws.close(code=4400, message=b"control frames are "
                                   b'{"resize": {"cols": C, "rows": R}}')
                    return
                continue
            try:
                stream.write(base64.b64decode(text, validate=True))
            except binascii.Error:
                await ws.close(code=4400, message=b"input frames must be base64")
                return


async def _agent_to_client(ws: web.WebSocketResponse, stream: ServerStream,
                           as_base64: bool) -> None:
    while (chunk := await stream.output.get()) is not None:
        if as_base64:
            await ws.send_str(base64.b64encode(chunk).decode())
        else:
            await ws.send_str(chunk.decode("utf-8", errors="replace"))


async def stream_socket(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    ticket = services.streams.redeem(request.query.get("token", ""))
    if ticket is None:
        raise Unauthorized("this stream token is unknown, used or expired: ask for a new one")
    ws = web.WebSocketResponse(max_msg_size=MAX_CLIENT_FRAME, compress=False, heartbeat=30)
    await ws.prepare(request)
    with services.sockets.holding(ws):
        return await _relay(ws, services, ticket)


async def _relay(ws: web.WebSocketResponse, services: Services,
                 ticket: Ticket) -> web.WebSocketResponse:
    try:
        stream = services.instructions.open_stream(ticket.host_id, ticket.instruction,
                                                   "container", ticket.resource_id,
                                                   ticket.data)
    except HostNotConnected as exc:
        await ws.close(code=1011, message=str(exc).encode()[:120])
        return ws
    inbound = asyncio.create_task(_client_to_agent(ws, stream))
    outbound = asyncio.create_task(_agent_to_client(
        ws, stream, as_base64=ticket.instruction == "instance.exec"))
    try:
        await asyncio.wait({inbound, outbound}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stream.close()
        inbound.cancel()
    reason = "stream ended"
    try:
        await asyncio.wait_for(outbound, 10)
        result = await asyncio.wait_for(stream.result, 10)
        if result.get("exitCode") is not None:
            reason = f"exit code {result['exitCode']}"
    except (InstructionError, TimeoutError) as exc:
        reason = str(exc) or "the stream did not end cleanly"
    finally:
        outbound.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await outbound
    await ws.close(code=1000, message=reason.encode()[:120])
    return ws
