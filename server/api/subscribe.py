"""``GET /v1/subscribe?eventNames=resource.change``: the stream of resource changes as a
websocket, as Rancher's UI and clients consume it. Each change is one text frame:
``{"name": "resource.change", "sequence", "resourceType", "resourceId", "data": {"resource":
{...}}}``, the resource rendered as the API renders it when it changed, for the resources the
caller may see (within the environment in scope, when one is named).

The stream is read from the change log: ``since=<sequence>`` resumes after the last change a
client saw, and a client that reads slowly falls behind without losing anything. Only a client
that asks to resume from further back than the log keeps is refused (a 422 before the
websocket opens; close code 4410 if it falls that far behind while connected).

What one subscriber makes the server hold is bounded: frames wait for it in a queue of at
most OUTBOX_BYTES, and a client that leaves them there for STALL_SECONDS is closed with 4429
and the sequence to resume from. Frames from the client mean nothing: they are read and
dropped; one over MAX_CLIENT_FRAME closes the socket with 1009 and a reason."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from typing import Any

from aiohttp import WSMsgType, web

from server.api import policy
from server.api.context import RequestContext
from server.api.errors import invalid
from server.api.render import public_id, render_resource
from server.api.schema import Scope
from server.feed import Cursor, FeedClosed, ResumeTooOld
from server.store import Change, Record
from shared.protocol import CloseCode, close_reason

log = logging.getLogger("corral.subscribe")
EVENT = "resource.change"
TOO_OLD = 4410
OUTBOX_BYTES = 4 * 1024 * 1024
STALL_SECONDS = 30.0  # a client that takes nothing for this long is closed
CLOSE_SECONDS = 10.0  # for a close frame to get past a client that does not read
MAX_CLIENT_FRAME = 64 * 1024
# Frames up to this size are read whole, so that one over MAX_CLIENT_FRAME is refused with a
# close handshake; a larger one makes aiohttp give up on the connection as it arrives.
READ_LIMIT = 1024 * 1024


class Outbox:
    """Frames on their way to one subscriber: one writer task sends them in order; the feed
    waits for room, and gives up on a client that makes none."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws
        self._frames: deque[tuple[int, str]] = deque()
        self._bytes = 0
        self._room = asyncio.Event()
        self._room.set()
        self._writer: asyncio.Task[None] | None = None
        self.sent = 0  # the sequence of the last frame written to the socket
        self.failed = False

    def put(self, seq: int, text: str) -> None:
        self._frames.append((seq, text))
        self._bytes += len(text)
        if self._bytes > OUTBOX_BYTES:
            self._room.clear()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def room(self) -> bool:
        """Wait for the queue to be under its bound; False if the client took nothing for
        STALL_SECONDS."""
        try:
            async with asyncio.timeout(STALL_SECONDS):
                await self._room.wait()
        except TimeoutError:
            return False
        return True

    async def _write(self) -> None:
        try:
            while self._frames:
                seq, text = self._frames.popleft()
                self._bytes -= len(text)
                if self._bytes <= OUTBOX_BYTES // 2:
                    self._room.set()
                # The frame is in the socket's buffer once send_str starts (no compression),
                # ahead of any close frame: the client has it even if the wait is cut short.
                self.sent = seq
                await self._ws.send_str(text)
        except (ConnectionError, RuntimeError):
            self.failed = True  # the client left; the reader notices
            self._room.set()

    async def close(self) -> None:
        """Drop what is left and end the writer."""
        self._frames.clear()
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer


def _visible(ctx: RequestContext, record: Record) -> bool:
    rtype = ctx.services.types.get(record.type)
    if rtype is None or not policy.can_use(ctx.principal, rtype.schema) or \
            not policy.can_see(ctx.principal, rtype.schema, record):
        return False
    if ctx.explicit_project and ctx.project is not None and \
            rtype.schema.scope is Scope.PROJECT:
        return record.project_id == ctx.project.id
    return True


def change_event(ctx: RequestContext, change: Change) -> dict[str, Any]:
    record = change.record
    rtype = ctx.services.types.get(record.type)
    assert rtype is not None
    return {"name": EVENT, "sequence": change.seq,
            "resourceType": ctx.dialect.type_out(record.type),
            "resourceId": ctx.dialect.id_out(public_id(rtype, record.id)),
            "data": {"resource": render_resource(ctx, rtype, record)}}


def _since(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:  # not "²", which int() refuses
        raise invalid("InvalidFormat", "since", "since must be a change sequence number")
    return int(raw)


async def subscribe(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    names = request.query.getall("eventNames", [EVENT])
    unknown = [n for n in names if n != EVENT]
    if unknown:
        raise invalid("InvalidOption", "eventNames",
                      f"unknown event name {unknown[0]!r}: this server sends {EVENT}")
    since = _since(request.query.get("since"))
    if since is not None and since < await ctx.services.store.pruned_through():
        raise invalid("InvalidOption", "since",
                      f"changes after {since} are no longer kept; list the resources again "
                      "and subscribe without since")
    # Placed before the handshake completes, so that no change after it is missed.
    cursor = ctx.services.feed.follow(since)
    ws = web.WebSocketResponse(compress=False, heartbeat=30, max_msg_size=READ_LIMIT)
    await ws.prepare(request)
    ctx.services.sockets.add(ws)
    outbox = Outbox(ws)
    reader = asyncio.create_task(_drain_client(ws))
    try:
        await _follow(ctx, ws, cursor, outbox, reader, since or 0, request.remote or "?")
    finally:
        ctx.services.sockets.discard(ws)
        await outbox.close()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return ws


async def _follow(ctx: RequestContext, ws: web.WebSocketResponse, cursor: Cursor,
                  outbox: Outbox, reader: asyncio.Task[str | None], since: int,
                  peer: str) -> None:
    """Queue each visible change for the client until it leaves or falls too far behind."""
    outbox.sent = since
    while not ws.closed and not outbox.failed:
        getter = asyncio.create_task(cursor.next_batch())
        done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
        if getter not in done:
            getter.cancel()
            with contextlib.suppress(asyncio.CancelledError, FeedClosed, ResumeTooOld):
                await getter
            if (refusal := reader.result()) is not None:
                await _close(ws, CloseCode.MESSAGE_TOO_BIG, refusal)
            return
        try:
            batch = getter.result()
        except ResumeTooOld as exc:
            await _close(ws, TOO_OLD, str(exc))
            return
        except FeedClosed:
            await _close(ws, 1001, "server shutting down")
            return
        for change in batch:
            if _visible(ctx, change.record):
                outbox.put(change.seq, json.dumps(change_event(ctx, change),
                                                  separators=(",", ":")))
            if not await outbox.room():
                await _too_slow(ws, outbox, peer)
                return


async def _too_slow(ws: web.WebSocketResponse, outbox: Outbox, peer: str) -> None:
    log.warning("closing the change subscription of %s: it read nothing for %g s",
                peer, STALL_SECONDS)
    sent = outbox.sent
    await outbox.close()
    await _close(ws, CloseCode.OVERLOADED,
                 f"this client reads too slowly; subscribe again with since={sent}")


async def _close(ws: web.WebSocketResponse, code: int, reason: str) -> None:
    """Close with a reason, giving up on a client that does not read even that."""
    try:
        async with asyncio.timeout(CLOSE_SECONDS):
            await ws.close(code=code, message=close_reason(reason))
    except (TimeoutError, ConnectionError, RuntimeError) as exc:
        log.debug("change subscription closed without its close frame: %r", exc)


async def _drain_client(ws: web.WebSocketResponse) -> str | None:
    """Nothing is expected from the client (its frames are dropped); reading notices when it
    leaves (None), or sends a frame too big to take: the reason to close with, which
    ``_follow`` does (a close from this task could be cancelled halfway through)."""
    async for msg in ws:
        if msg.type is WSMsgType.ERROR:
            return None
        if msg.type is WSMsgType.TEXT:
            size = len(msg.data.encode(errors="surrogatepass"))
        elif msg.type is WSMsgType.BINARY:
            size = len(msg.data)
        else:
            continue
        if size > MAX_CLIENT_FRAME:
            return f"frames from a subscriber are at most {MAX_CLIENT_FRAME} bytes"
    return None
