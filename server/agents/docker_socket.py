"""A host's Docker socket, relayed through its agent session: Rancher's ``dockersocket`` host
action, which ``rancher docker`` uses. No port is opened on the host.

The action issues a stream ticket (``server.agents.streams``) for the host; like the
container proxy's it is good for many connections until it expires, since the Docker client
opens a connection per request (``docker run -it`` opens several). ``GET /v1/dockersocket``
(a websocket, ``?token=...``) starts a ``host.dockersocket`` stream, which the agent connects
to its own Docker engine, and relays the raw Docker Engine API bytes both ways: binary frames
(a text frame counts as its UTF-8 bytes) to the engine, binary frames back. The socket closes
with 1000 when the engine closes the connection, with 1014 and the agent's reason when the
agent could not reach its engine, and the agent is told to stop when the client leaves.

Whoever holds a ticket is root on the host: the action is a host action, under the same
authorization as the others, and each connection is logged at INFO.
"""

from __future__ import annotations

import logging

from aiohttp import WSMsgType, web

from server.agents.session import ServerStream
from server.agents.streams import MAX_CLIENT_FRAME, Ending, Refusal, Ticket, relay
from server.api.errors import Unauthorized, Unavailable
from server.api.handlers import SERVICES
from shared import protocol
from shared.errors import HostNotConnected, InstructionError

DOCKER_SOCKET_PATH = "/v1/dockersocket"
INSTRUCTION = "host.dockersocket"
# Long enough for the connections of one Docker command (a ``docker run -it`` attaches, then
# waits for the exit on a second connection); short, since the ticket is root on the host.
DOCKER_SOCKET_SECONDS = 900.0
BAD_GATEWAY = 1014  # RFC 6455's registry: the server's upstream (here, the engine) failed

log = logging.getLogger("corral.docker_socket")


def docker_socket_ticket(request: web.Request) -> Ticket:
    ticket = request.app[SERVICES].streams.lookup(request.query.get("token", ""))
    if ticket is None or ticket.instruction != INSTRUCTION:
        raise Unauthorized("this Docker socket token is unknown or expired: ask the host's "
                           "dockersocket action for a new one")
    return ticket


async def docker_socket(request: web.Request) -> web.StreamResponse:
    ticket = docker_socket_ticket(request)
    services = request.app[SERVICES]
    try:  # before the upgrade, so that a host away is a 503 with Rancher's error body
        stream = services.instructions.open_stream(ticket.host_id, INSTRUCTION, "host",
                                                   ticket.resource_id, ticket.data)
    except HostNotConnected as exc:
        raise Unavailable(str(exc), code="HostNotConnected") from exc
    ws = web.WebSocketResponse(max_msg_size=MAX_CLIENT_FRAME, compress=False, heartbeat=30)
    try:
        await ws.prepare(request)
    except BaseException:
        stream.close()
        raise
    log.info("host %s: its Docker socket opened for %s (stream %s)", ticket.resource_id,
             request.remote, stream.id)
    with services.sockets.holding(ws):
        await relay(ws, stream, _client_to_engine(ws, stream), _engine_to_client(ws, stream),
                    _outcome)
    return ws


async def _client_to_engine(ws: web.WebSocketResponse, stream: ServerStream) -> Refusal | None:
    """The client's bytes to the engine, until it leaves or the host's session ends: every
    frame is bytes for the engine, so none is refused."""
    async for msg in ws:
        try:
            if msg.type is WSMsgType.BINARY:
                await stream.write(msg.data)
            elif msg.type is WSMsgType.TEXT:
                await stream.write(msg.data.encode("utf-8", errors="surrogatepass"))
        except HostNotConnected:
            return None  # the agent went away: its end of the stream ends it
    return None


async def _engine_to_client(ws: web.WebSocketResponse, stream: ServerStream) -> None:
    try:
        while (chunk := await stream.next_chunk()) is not None:
            await ws.send_bytes(chunk)
    except (ConnectionError, RuntimeError) as exc:  # the client is gone
        log.debug("docker socket %s: its client went away: %s", stream.id, exc)


def _outcome(ending: Ending) -> tuple[int, str]:
    """Normal when the engine closed the connection, 1014 with the agent's reason when it
    could not reach the engine."""
    if isinstance(ending, InstructionError):
        return BAD_GATEWAY, str(ending) or "the Docker engine could not be reached"
    if isinstance(ending, TimeoutError):
        return BAD_GATEWAY, "the host's agent did not end the connection cleanly"
    return protocol.CloseCode.NORMAL, "the Docker engine closed the connection"
