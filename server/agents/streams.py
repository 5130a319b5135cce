"""Streams between an API client and a container, through the host's agent session: no port
is opened on a host. The ``logs`` and ``execute`` actions issue a short-lived, single-use
ticket; ``GET /v1/stream?token=...`` (a websocket) redeems it and relays bytes both ways.

Frames to the client: logs as text; exec output base64-encoded text, as Rancher's terminal
expects. Frames from the client (exec): base64 text (or binary) for input, an empty frame for
end of input, and ``{"resize": {"cols": C, "rows": R}}`` to resize the terminal. The socket
closes with the command's exit code in the reason; a frame it cannot take closes it with 4400
and the reason.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from server.agents.session import ServerStream
from server.api.errors import Unauthorized
from server.api.handlers import SERVICES
from server.tokens import TokenRefused, TokenSigner
from shared import protocol, wirejson
from shared.errors import HostNotConnected, InstructionError, ProtocolError
from shared.protocol import CloseCode

if TYPE_CHECKING:
    from server.services import Services

log = logging.getLogger("corral.streams")
TICKET_SECONDS = 60.0
# Input as a terminal or a pipe sends it; base64 and the envelope keep it within the
# streamData frame limit on its way to the agent.
MAX_CLIENT_FRAME = 256 * 1024
RESIZE_FORMAT = '{"resize": {"cols": C, "rows": R}}'
# The tickets this endpoint takes (proxy and Docker socket tickets have endpoints of their own).
STREAM_INSTRUCTIONS = frozenset({"instance.logs", "instance.exec"})


@dataclass(frozen=True)
class Ticket:
    host_id: int
    instruction: str  # instance.logs, instance.exec, instance.proxy, ...
    resource_id: str
    data: dict[str, Any]
    # Until when it is good, in seconds since the epoch.
    expires: float = field(default_factory=lambda: time.time() + TICKET_SECONDS)


class StreamTickets:
    """Tickets as tokens the server signs (``server.tokens``): what a ticket grants travels
    in it, so no table of tickets is kept. A ticket redeemed for a stream is good once: the
    ids of redeemed ones are kept here until they expire. (Only the server holding a host's
    agent session can open its streams, so that one server's memory is where it counts.)"""

    def __init__(self, signer: TokenSigner) -> None:
        self._signer = signer
        self._redeemed: dict[str, float] = {}

    def issue(self, ticket: Ticket) -> str:
        grant = {"hostId": ticket.host_id, "instruction": ticket.instruction,
                 "resourceId": ticket.resource_id, "data": ticket.data}
        return self._signer.sign({"grant": grant}, ticket.expires - time.time())

    def redeem(self, token: str) -> Ticket | None:
        """The ticket of a token not redeemed before."""
        found = self._verified(token)
        if found is None:
            return None
        ticket, token_id = found
        now = time.time()
        for seen in [t for t, until in self._redeemed.items() if until < now]:
            del self._redeemed[seen]
        if token_id in self._redeemed:
            log.debug("a stream token was offered again after it was used")
            return None
        self._redeemed[token_id] = ticket.expires
        return ticket

    def lookup(self, token: str) -> Ticket | None:
        """A ticket good for many connections until it expires (the container proxy's)."""
        found = self._verified(token)
        return found[0] if found is not None else None

    def _verified(self, token: str) -> tuple[Ticket, str] | None:
        try:
            claims = self._signer.verify(token)
        except TokenRefused as exc:
            log.debug("a stream token was refused: %s", exc)
            return None
        grant: Any = claims.get("grant")
        try:
            ticket = Ticket(host_id=int(grant["hostId"]), instruction=str(grant["instruction"]),
                            resource_id=str(grant["resourceId"]), data=dict(grant["data"]),
                            expires=float(claims["exp"]))
        except (TypeError, KeyError, ValueError):  # signed by us, so never: refuse anyway
            return None
        return ticket, str(claims.get("jti"))


class ClientFrameError(Exception):
    """A frame from the stream's client that the stream cannot take; the reason is for it."""


def parse_resize(text: str) -> tuple[int, int]:
    """The terminal size of a ``{"resize": {"cols": C, "rows": R}}`` control frame."""
    try:
        frame = wirejson.loads(text)
    except ProtocolError as exc:
        raise ClientFrameError(f"control frame: {exc}") from None
    resize = frame.get("resize") if isinstance(frame, dict) else None
    if not isinstance(resize, dict):
        raise ClientFrameError(f"control frames are {RESIZE_FORMAT}")
    return _terminal_size(resize.get("cols")), _terminal_size(resize.get("rows"))


def _terminal_size(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and \
            0 < value <= protocol.MAX_TERMINAL_SIZE:
        return value
    raise ClientFrameError(f"control frames are {RESIZE_FORMAT}, C and R between 1 and "
                           f"{protocol.MAX_TERMINAL_SIZE}")


def parse_input(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):  # ValueError: text outside ASCII
        raise ClientFrameError("input frames must be base64") from None


async def _client_to_agent(ws: web.WebSocketResponse, stream: ServerStream) -> Refusal | None:
    """Relay the client's input and resizes until it leaves (None) or sends a frame the
    stream cannot take (4400 and the reason, for ``relay`` to close the socket with)."""
    async for msg in ws:
        try:
            if msg.type is WSMsgType.BINARY:
                await stream.write(msg.data)
            elif msg.type is WSMsgType.TEXT:
                text = msg.data.strip()
                if text.startswith("{"):
                    cols, rows = parse_resize(text)
                    await stream.resize(cols, rows)
                else:
                    await stream.write(parse_input(text))
        except ClientFrameError as exc:
            return CloseCode.INVALID_MESSAGE, str(exc)
        except HostNotConnected:
            return None  # the agent went away: its end of the stream ends it
    return None


async def _agent_to_client(ws: web.WebSocketResponse, stream: ServerStream,
                           as_base64: bool) -> None:
    try:
        while (chunk := await stream.next_chunk()) is not None:
            if as_base64:
                await ws.send_str(base64.b64encode(chunk).decode())
            else:
                await ws.send_str(chunk.decode("utf-8", errors="replace"))
    except (ConnectionError, RuntimeError) as exc:  # the client is gone
        log.debug("stream %s: its client went away: %s", stream.id, exc)


async def stream_socket(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    ticket = services.streams.redeem(request.query.get("token", ""))
    if ticket is None or ticket.instruction not in STREAM_INSTRUCTIONS:
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
        await close_quietly(ws, 1011, str(exc))
        return ws
    await relay(ws, stream, _client_to_agent(ws, stream),
                _agent_to_client(ws, stream, as_base64=ticket.instruction == "instance.exec"),
                _outcome)
    return ws


# How a stream's socket closes, from how the agent ended the stream: its reply, its error, or
# no end within RESULT_WAIT.
Ending = dict[str, Any] | InstructionError | TimeoutError
Outcome = Callable[[Ending], tuple[int, str]]
# A close code and reason for a client whose frame the stream refused.
Refusal = tuple[int, str]
RESULT_WAIT = 10.0


async def relay(ws: web.WebSocketResponse, stream: ServerStream,
                inbound: Coroutine[Any, Any, Refusal | None],
                outbound: Coroutine[Any, Any, None], outcome: Outcome) -> None:
    """Run a stream's two halves (client to agent, agent to client) until either ends; then
    close the stream and, unless the client is gone, close its socket: with the refusal when
    the inbound half refused a frame, else as ``outcome`` says of how the agent's side ended.

    Only this function closes the socket, after both halves have stopped: a half that
    closed it itself could be cancelled halfway through the close handshake (the other half
    failing to write to the closing socket ends first), which aborts the connection."""
    inbound_task = asyncio.create_task(inbound)
    outbound_task = asyncio.create_task(outbound)
    try:
        await asyncio.wait({inbound_task, outbound_task}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        await _stopped(outbound_task)
        raise
    finally:
        stream.close()
        refusal = await _stopped(inbound_task)
    if refusal is not None or ws.closed:  # refused a frame, or the client left
        await _stopped(outbound_task)
        if refusal is not None:
            await close_quietly(ws, *refusal)
        return
    ending: Ending
    try:
        await asyncio.wait_for(outbound_task, RESULT_WAIT)
        ending = await asyncio.wait_for(stream.result, RESULT_WAIT)
    except (InstructionError, TimeoutError) as exc:
        ending = exc
    finally:
        await _stopped(outbound_task)
    code, reason = outcome(ending)
    await close_quietly(ws, code, reason)


async def _stopped(task: asyncio.Task[Refusal | None] | asyncio.Task[None]) -> Refusal | None:
    """Cancel ``task`` unless it is done; what it returned, None when it was cancelled."""
    task.cancel()
    try:
        return await task
    except asyncio.CancelledError:
        return None


def _outcome(ending: Ending) -> tuple[int, str]:
    """A stream closes normally, with the exit code when it has one."""
    if isinstance(ending, Exception):
        return CloseCode.NORMAL, str(ending) or "the stream did not end cleanly"
    if ending.get("exitCode") is not None:
        return CloseCode.NORMAL, f"exit code {ending['exitCode']}"
    return CloseCode.NORMAL, "stream ended"


async def close_quietly(ws: web.WebSocketResponse, code: int, reason: str) -> None:
    """Close the client's socket; a client already gone is no error."""
    try:
        await ws.close(code=code, message=protocol.close_reason(reason))
    except (ConnectionError, RuntimeError) as exc:
        log.debug("stream socket already gone: %s", exc)
