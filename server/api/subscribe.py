"""``GET /v1/subscribe?eventNames=resource.change``: the stream of resource changes as a
websocket, as Rancher's UI and clients consume it. Each change is one text frame:
``{"name": "resource.change", "resourceType", "resourceId", "data": {"resource": {...}}}``,
the resource rendered as the API renders it, for the resources the caller may see (within the
environment in scope, when one is named). A subscriber too slow to keep up is disconnected."""

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
from server.store import Record

EVENT = "resource.change"


def _visible(ctx: RequestContext, record: Record) -> bool:
    rtype = ctx.services.types.get(record.type)
    if rtype is None or not policy.can_use(ctx.principal, rtype.schema) or \
            not policy.can_see(ctx.principal, rtype.schema, record):
        return False
    if ctx.explicit_project and ctx.project is not None and \
            rtype.schema.scope is Scope.PROJECT:
        return record.project_id == ctx.project.id
    return True


def change_event(ctx: RequestContext, record: Record) -> dict[str, Any]:
    rtype = ctx.services.types.get(record.type)
    assert rtype is not None
    return {"name": EVENT, "resourceType": record.type, "resourceId": public_id(rtype, record.id),
            "data": {"resource": render_resource(ctx, rtype, record)}}


async def subscribe(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    names = request.query.getall("eventNames", [EVENT])
    unknown = [n for n in names if n != EVENT]
    if unknown:
        raise invalid("InvalidOption", "eventNames",
                      f"unknown event name {unknown[0]!r}: this server sends {EVENT}")
    ws = web.WebSocketResponse(compress=False, heartbeat=30)
    await ws.prepare(request)
    subscription = ctx.services.events.subscribe()
    reader = asyncio.create_task(_drain_client(ws))
    try:
        while not ws.closed:
            getter = asyncio.create_task(subscription.get())
            done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                break
            record = getter.result()
            if record is None:
                await ws.close(code=1008, message=b"too slow to keep up with the changes")
                break
            if _visible(ctx, record):
                await ws.send_str(json.dumps(change_event(ctx, record), separators=(",", ":")))
    finally:
        subscription.close()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return ws


async def _drain_client(ws: web.WebSocketResponse) -> None:
    """Nothing is expected from the client; reading notices when it leaves."""
    async for msg in ws:
        if msg.type is WSMsgType.ERROR:
            return
