"""The container proxy: HTTP requests to a container's port, carried by its host's agent.

The ``proxy`` action issues a stream ticket (``server.agents.streams``) for one container
port; unlike a logs or exec ticket it may be used for many requests until it expires, as
Rancher's proxy token could. ``<any method> /v1/container-proxy/<token>/<path>`` sends
``<path>`` to the container as an HTTP/1.0 request (so the answer needs no chunked decoding
and ends with the connection), through an ``instance.proxy`` stream on the agent, which opens
the connection to the container's address, and relays the answer back. No port is opened on
any host. The answer's ``Location`` is kept under the proxy's prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterable

from aiohttp import web
from multidict import CIMultiDict

from server.agents.session import ServerStream
from server.agents.streams import Ticket
from server.api.errors import ApiError, BadRequest, NotFound, Unavailable
from server.api.handlers import SERVICES
from shared.errors import HostNotConnected, InstructionError

PROXY_PATH = "/v1/container-proxy"
PROXY_SECONDS = 3600.0
INPUT_CHUNK = 64 * 1024  # within the stream's input frame limit, base64 and all
MAX_HEAD = 64 * 1024
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "transfer-encoding", "upgrade", "host",
                        "content-length"})


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class BadGateway(ApiError):
    status = 502
    code = "BadGateway"


def proxy_ticket(request: web.Request) -> Ticket:
    ticket = request.app[SERVICES].streams.lookup(request.match_info["token"])
    if ticket is None or ticket.instruction != "instance.proxy":
        raise NotFound("this proxy token is unknown or expired: ask the container's proxy "
                       "action for a new one")
    return ticket


def request_head(request: web.Request, prefix: str, body_length: int) -> bytes:
    """The request as the container gets it: its path below the prefix, its headers without
    the hop-by-hop ones and the caller's credentials, and where it came from."""
    target = request_target(request.raw_path, prefix)
    headers = [(k, v) for k, v in request.headers.items()
               if k.lower() not in HOP_BY_HOP and k.lower() != "authorization"]
    headers += [("Host", request.host), ("Connection", "close"),
                ("Content-Length", str(body_length)),
                ("X-Forwarded-For", request.remote or ""),
                ("X-Forwarded-Proto", request.scheme), ("X-Forwarded-Host", request.host),
                ("X-Forwarded-Prefix", prefix)]
    lines = [f"{request.method} {target} HTTP/1.0", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", errors="replace")


def request_target(raw_path: str, prefix: str) -> str:
    """The path and query below the prefix, still percent-encoded as the client sent them
    (decoded, ``%0d%0a`` would end the request line early)."""
    target = raw_path[len(prefix):] if raw_path.startswith(prefix) else "/"
    if not target.startswith("/"):
        target = "/" + target
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in target):
        raise BadRequest("the path must not hold spaces or control characters")
    return target


def parse_head(head: bytes, prefix: str) -> tuple[int, str, CIMultiDict[str]]:
    """Status, reason and headers of the container's answer (without hop-by-hop ones)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or \
            not (parts[1].isascii() and parts[1].isdigit() and len(parts[1]) == 3):
        raise BadGateway(f"the container did not answer with HTTP: {lines[0][:80]!r}")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        name, value = name.strip(), value.strip()
        # A line the client could not be sent as it came is dropped, not passed on.
        if not sep or not _TOKEN.fullmatch(name) or _UNSAFE.search(value) or \
                name.lower() in HOP_BY_HOP - {"content-length"}:
            continue
        if name.lower() == "location" and value.startswith("/"):
            value = prefix + value
        headers.add(name, value)
    status = int(parts[1])
    if not 100 <= status <= 999:
        raise BadGateway(f"the container answered with status {status}")
    reason = parts[2] if len(parts) > 2 and not _UNSAFE.search(parts[2]) else ""
    return status, reason, headers


def chunks(data: bytes, size: int) -> Iterable[bytes]:
    return (data[i:i + size] for i in range(0, len(data), size))


async def container_proxy(request: web.Request) -> web.StreamResponse:
    ticket = proxy_ticket(request)
    services = request.app[SERVICES]
    prefix = f"{PROXY_PATH}/{request.match_info['token']}"
    body = await request.read()
    try:
        stream = services.instructions.open_stream(ticket.host_id, ticket.instruction,
                                                   "container", ticket.resource_id,
                                                   ticket.data)
    except HostNotConnected as exc:
        raise Unavailable(str(exc), code="HostNotConnected") from exc
    try:
        for chunk in chunks(request_head(request, prefix, len(body)) + body, INPUT_CHUNK):
            await stream.write(chunk)
        return await _relay_answer(request, stream, prefix)
    except HostNotConnected as exc:  # the session closed under the request
        raise Unavailable(str(exc), code="HostNotConnected") from exc
    finally:
        stream.close()


async def _relay_answer(request: web.Request, stream: ServerStream,
                        prefix: str) -> web.StreamResponse:
    head, rest = await _read_head(stream)
    status, reason, headers = parse_head(head, prefix)
    response = web.StreamResponse(status=status, reason=reason or None, headers=headers)
    await response.prepare(request)
    if rest:
        await response.write(rest)
    while (chunk := await stream.next_chunk()) is not None:
        await response.write(chunk)
    await response.write_eof()
    return response


async def _read_head(stream: ServerStream) -> tuple[bytes, bytes]:
    """The answer's status line and headers, and what came after them."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = await stream.next_chunk()
        if chunk is None:
            raise BadGateway(await _failure(stream, received))
        received += chunk
        if len(received) > MAX_HEAD and b"\r\n\r\n" not in received[:MAX_HEAD + 4]:
            raise BadGateway("the container's answer has a head over 64 KiB")
    head, _, rest = received.partition(b"\r\n\r\n")
    return head, rest


async def _failure(stream: ServerStream, received: bytes) -> str:
    """Why the stream ended before an answer: the agent's error, or an empty answer."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            try:
                await stream.result
            except InstructionError as exc:
                return f"the container could not be reached: {exc}"
    if received:
        return "the container's answer ended inside its head"
    return "the container closed the connection without answering"
