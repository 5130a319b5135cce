"""``GET /v1/subscribe?eventNames=resource.change``: the stream of resource changes as a
websocket, as Rancher's UI and clients consume it. Each change is one text frame:
``{"name": "resource.change", "sequence", "resourceType", "resourceId", "data": {"resource":
{...}}}``, the resource rendered as the API renders it when it changed, for the resources the
caller may see (within the environment in scope, when one is named).

The stream is read from the change log: ``since=<sequence>`` resumes after the last change a
client saw, and a client that reads slowly falls behind without losing anything. Only a client
that asks to resume from further back than the log keeps is refused (a 422 before the
websocket opens; close code 4410 if it falls that far behind while connected)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import WSMsgType, web

from server.api import policy
from server.api.context import RequestContext
from server.api.errors import invalid
from server.api.render import public_id, render_resource
from server.api.schema import Scope
from server.feed import FeedClosed, ResumeTooOld
from server.store import Change, Record

EVENT = "resource.change"
TOO_OLD = 4410


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
    return {"name": EVENT, "sequence": change.seq, "resourceType": record.type,
            "resourceId": public_id(rtype, record.id),
            "data": {"resource": render_resource(ctx, rtype, record)}}


def _since(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 18:
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
    ws = web.WebSocketResponse(compress=False, heartbeat=30)
    await ws.prepare(request)
    ctx.services.sockets.add(ws)
    reader = asyncio.create_task(_drain_client(ws))
    try:
        while not ws.closed:
            getter = asyncio.create_task(cursor.next_batch())
            done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                with contextlib.suppress(asyncio.CancelledError, FeedClosed, ResumeTooOld):
                    await getter
                break
            try:
                batch = getter.result()
            except ResumeTooOld as exc:
                await ws.close(code=TOO_OLD, message=str(exc).encode()[:120])
                break
            except FeedClosed:
                await ws.close(code=1001, message=b"server shutting down")
                break
            for change in batch:
                if _visible(ctx, change.record):
                    await ws.send_str(json.dumps(change_event(ctx, change),
                                                 separators=(",", ":")))
    finally:
        ctx.services.sockets.discard(ws)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return ws


async def _drain_client(ws: web.WebSocketResponse) -> None:
    """Nothing is expected from the client; reading notices when it leaves."""
    async for msg in ws:
        if msg.type is WSMsgType.ERROR:
            return
