"""The server application: ``create_app(settings)``, its routes, and what it opens and closes."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator

from aiohttp import web

from server.agents.docker_socket import DOCKER_SOCKET_PATH, docker_socket
from server.agents.endpoint import agent_connect
from server.agents.proxy import PROXY_PATH, container_proxy
from server.agents.registration import register, script, wheel
from server.agents.streams import stream_socket
from server.api.client_headers import client_headers
from server.api.handlers import SERVICES, api, versions
from server.api.web import api_middleware, json_response
from server.bootstrap import banner
from server.config import Settings
from server.edge import handler_options
from server.wiring import running_services
from shared.protocol import AGENT_PATH

log = logging.getLogger(__name__)
SETTINGS = web.AppKey("settings", Settings)


async def healthz(request: web.Request) -> web.Response:
    return json_response({"type": "health", "status": "ok",
                          "agents": len(request.app[SERVICES].hub.connected_hosts())})


async def api_certificate(request: web.Request) -> web.Response:
    """The public key that checks the tokens this server signs, as Rancher served its own
    token-signing key to its agents: public, so no credentials."""
    return web.Response(body=request.app[SERVICES].tokens.public_pem(),
                        content_type="application/x-pem-file")


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/", versions)
    app.router.add_get("/healthz", healthz)
    app.router.add_get(AGENT_PATH, agent_connect)
    app.router.add_post("/v1/register", register)
    app.router.add_get("/v1/scripts/api.crt", api_certificate)  # before the tokens' route
    app.router.add_get("/v1/scripts/{token}", script)
    app.router.add_get("/v1/scripts/{token}/{filename}", wheel)
    app.router.add_get("/v1/stream", stream_socket)
    app.router.add_get(DOCKER_SOCKET_PATH + "{slash:/?}", docker_socket)
    app.router.add_route("*", PROXY_PATH + r"/{token}{tail:(/.*)?}", container_proxy)
    app.router.add_route("*", r"/{version:v1|v2-beta}{tail:(/.*)?}", api)


async def _services(app: web.Application) -> AsyncIterator[None]:
    async with running_services(app[SETTINGS]) as (services, first):
        app[SERVICES] = services
        if first is not None:
            print(banner(first), file=sys.stdout, flush=True)
        yield


async def _close_sockets(app: web.Application) -> None:
    # Websocket handlers keep running until their sockets close: close them (agents, change
    # subscriptions, streams) before the server waits for its handlers to finish.
    services = app[SERVICES]
    await services.feed.stop()
    await services.sockets.close_all()
    await services.hub.stop()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[client_headers(settings.trusted_proxies), api_middleware],
                          client_max_size=settings.max_body_bytes,
                          handler_args=handler_options(settings))
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_services)
    app.on_shutdown.append(_close_sockets)
    setup_routes(app)
    return app
