"""The HTTP server under the app: aiohttp's protocol with the settings' limits and header
timeout, answering in Rancher's error body what aiohttp refuses before any route sees it.

aiohttp parses each request head itself; a request line or header field over its limit, or a
head that is not HTTP, never reaches the middleware. Its ``RequestHandler.handle_error``
answers those in plain text and logs a traceback at ERROR; ``EdgeRequestHandler`` answers them
as the API answers any bad request, and logs them at DEBUG (they are the client's doing, and
the open internet sends plenty). ``EdgeSite`` listens with that handler; ``serve`` runs the
app on it until SIGINT or SIGTERM.

The header timeout is aiohttp's keep-alive timer, which runs from the moment a connection
opens and again from the end of each response, and closes the connection if no complete
request head has arrived by then: a client trickling its head (or never finishing a websocket
upgrade request) is cut after ``header_timeout``, as is an idle keep-alive connection.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestPayloadError

from server.api.errors import ApiError, BadRequest
from server.api.web import header_safe, json_response
from server.config import Settings

log = logging.getLogger(__name__)


def handler_options(settings: Settings) -> dict[str, Any]:
    """aiohttp's per-connection options (``handler_args``) from the settings."""
    return {"keepalive_timeout": settings.header_timeout,
            "max_line_size": settings.max_request_line_bytes,
            "max_field_size": settings.max_header_field_bytes}


def _sized(status: int, code: str, message: str) -> ApiError:
    error = BadRequest(message, code=code)
    error.status = status
    return error


def refusal(exc: BaseException | None, max_line: int, max_field: int) -> ApiError:
    """The API error for a request head aiohttp could not take."""
    if isinstance(exc, LineTooLong):
        # aiohttp says which limit was exceeded only by the limit it names.
        if str(exc.args[1]) == str(max_line) and max_line != max_field:
            return _sized(414, "RequestURITooLong",
                          f"the request line is longer than {max_line} bytes")
        return _sized(431, "RequestHeaderFieldsTooLarge",
                      f"a header field is longer than {max_field} bytes")
    if isinstance(exc, BadHttpMessage) and "Too many headers" in exc.message:
        return _sized(431, "RequestHeaderFieldsTooLarge", "the request has too many headers")
    name = type(exc).__name__ if exc is not None else "BadRequest"
    return BadRequest(f"the request is not valid HTTP ({name})")


class EdgeRequestHandler(web.RequestHandler):
    """aiohttp's protocol, with its own error answers in Rancher's error body."""

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status >= 500 or not isinstance(exc, HttpProcessingError | None):
            # Something escaped the API middleware: a bug, logged as one.
            self.log_exception("error handling a request from %s", request.remote,
                               exc_info=exc)
            error = ApiError("internal server error")
            error.status = status
        else:
            log.debug("refused a request from %s: %s", request.remote, exc or message)
            error = refusal(exc, self.max_line_size, self.max_field_size)
        if request.writer.output_size > 0:
            raise ConnectionError("a response was sent already; no room for the error")
        response = json_response(error.body(), status=error.status)
        response.headers["X-API-Schemas"] = header_safe(f"{self._origin()}/v1/schemas")
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        # After answering a request whose body could not be decoded, aiohttp drains the rest
        # of that body and meets the same error again: the client's doing, not a bug.
        exc = kw.get("exc_info")
        if isinstance(exc, RequestPayloadError | HttpProcessingError):
            log.debug("dropped a connection from %s: %s", self.peername, exc)
            return
        super().log_exception(*args, **kw)

    def _origin(self) -> str:
        # The head could not be read, so its Host header cannot be trusted: the socket says.
        sockname = self.sockname
        if isinstance(sockname, tuple):
            host = str(sockname[0])
            host = f"[{host}]" if ":" in host else host
            return f"http://{host}:{sockname[1]}"
        return "http://localhost"


class EdgeSite(web.BaseSite):
    """A TCP site whose connections are ``EdgeRequestHandler``s."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int,
                 options: dict[str, Any]) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._options = options

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def port(self) -> int:
        """The bound port (the one asked for until the site starts)."""
        if self._server is not None:
            sockets = getattr(self._server, "sockets", None) or ()
            for sock in sockets:
                return int(sock.getsockname()[1])
        return self._port

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        manager = self._runner.server
        assert manager is not None

        def connection() -> EdgeRequestHandler:
            return EdgeRequestHandler(manager, loop=loop, **self._options)

        self._server = await loop.create_server(connection, self._host, self._port,
                                                backlog=self._backlog)


async def serve(app: web.Application, settings: Settings) -> None:
    """Serve ``app`` on the settings' address until SIGINT or SIGTERM, then shut down."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(app, shutdown_timeout=5)
    await runner.setup()
    try:
        await EdgeSite(runner, settings.host, settings.port, handler_options(settings)).start()
        await stop.wait()
    finally:
        await runner.cleanup()
