"""``host.dockersocket``: a connection from this agent to its own Docker engine, relayed as
stream data both ways, for the host's ``dockersocket`` action (``rancher docker``). The bytes
are the client's Docker Engine API requests and Docker's answers, never looked at here; the
stream ends when the engine closes the connection or the server closes the stream.

This is root on the host for whoever holds the server's ticket: the server gives one only to
callers allowed the host's actions.
"""

from __future__ import annotations

import asyncio
import ssl

from agent.dispatcher import InstructionContext
from agent.handlers.proxy import relay
from agent.runtime import EngineEndpoint, RuntimeUnavailable
from shared.instructions import NoData

CONNECT_TIMEOUT = 10.0


async def docker_socket(ctx: InstructionContext) -> NoData:
    NoData.parse(ctx.request.data)
    endpoint = await asyncio.to_thread(ctx.runtime.engine_endpoint)
    reader, writer = await _connect(endpoint)
    await relay(ctx, reader, writer)
    return NoData()


async def _connect(endpoint: EngineEndpoint) -> tuple[asyncio.StreamReader,
                                                      asyncio.StreamWriter]:
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            if endpoint.path is not None:
                return await asyncio.open_unix_connection(endpoint.path)
            return await asyncio.open_connection(endpoint.host, endpoint.port,
                                                 ssl=endpoint.tls)
    except (OSError, ssl.SSLError, TimeoutError) as exc:
        raise RuntimeUnavailable(f"could not connect to the Docker engine at "
                                 f"{endpoint.address}: {exc or 'timed out'}") from None
