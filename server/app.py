"""The server application: ``create_app(settings)``, its routes, and what it opens and closes."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator

from aiohttp import web

from server.agents.endpoint import agent_connect
from server.agents.hub import AgentHub
from server.agents.instructions import Instructions
from server.agents.registration import register, script, wheel
from server.agents.streams import StreamTickets, stream_socket
from server.api.auth import KeyCache
from server.api.handlers import SERVICES, api, versions
from server.api.web import api_middleware, json_response
from server.bootstrap import banner, bootstrap
from server.config import Settings
from server.engine.reconcile import Reconciler
from server.engine.registries import RegistryAuth
from server.engine.runner import Runner, server_owner
from server.engine.tables import operation_tables
from server.feed import ChangeFeed
from server.resources import build_types
from server.security import ServerKey
from server.services import Services
from server.sockets import ClientSockets
from server.store.sql import SqlStore
from server.store.urls import sqlite_url
from shared.protocol import AGENT_PATH

log = logging.getLogger(__name__)
SETTINGS = web.AppKey("settings", Settings)


async def healthz(request: web.Request) -> web.Response:
    return json_response({"type": "health", "status": "ok",
                          "agents": len(request.app[SERVICES].hub.connected_hosts())})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/", versions)
    app.router.add_get("/healthz", healthz)
    app.router.add_get(AGENT_PATH, agent_connect)
    app.router.add_post("/v1/register", register)
    app.router.add_get("/v1/scripts/{token}", script)
    app.router.add_get("/v1/scripts/{token}/{filename}", wheel)
    app.router.add_get("/v1/stream", stream_socket)
    app.router.add_route("*", r"/{version:v1|v2-beta}{tail:(/.*)?}", api)


async def _services(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_cache = KeyCache()
    feeds: list[ChangeFeed] = []

    def on_commit(seq: int) -> None:
        for feed in feeds:
            feed.notify(seq)

    store = await SqlStore.open(settings.database_url or sqlite_url(settings.data_dir),
                                on_change=key_cache.on_change, on_commit=on_commit)
    # Other server processes on the same PostgreSQL commit too: look for their changes.
    feed = ChangeFeed(store, poll_interval=1.0 if store.dialect == "postgresql" else None,
                      keep=settings.change_log_keep)
    feeds.append(feed)
    server_key = ServerKey.load_or_create(settings.data_dir)
    hub = AgentHub(store, settings)
    services = Services(settings=settings, store=store, types=build_types(),
                        server_key=server_key, feed=feed, hub=hub, key_cache=key_cache,
                        sockets=ClientSockets())
    services.instructions = Instructions(hub, store)
    services.runner = Runner(services, server_owner(settings.data_dir))
    for type_id, (lifecycle, operations) in operation_tables().items():
        services.runner.register(type_id, lifecycle, operations)
    services.reconciler = Reconciler(services)
    services.registries = RegistryAuth(services)
    services.streams = StreamTickets()
    app[SERVICES] = services
    first = await bootstrap(store, settings, server_key)
    if first is not None:
        print(banner(first), file=sys.stdout, flush=True)
    await feed.start()
    await hub.start()
    # Operations under way when the server stopped carry on once their hosts reconnect.
    await services.runner.resume()
    services.runner.start()
    try:
        yield
    finally:
        await services.runner.stop()
        await services.instructions.progress.stop()
        await hub.stop()
        await feed.stop()
        await store.close()


async def _close_sockets(app: web.Application) -> None:
    # Websocket handlers keep running until their sockets close: close them (agents, change
    # subscriptions, streams) before the server waits for its handlers to finish.
    services = app[SERVICES]
    await services.feed.stop()
    await services.sockets.close_all()
    await services.hub.stop()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[api_middleware], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_services)
    app.on_shutdown.append(_close_sockets)
    setup_routes(app)
    return app
