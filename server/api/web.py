"""The aiohttp edge of the API: URL bases, JSON bodies, and the one error middleware."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from server.api.errors import (
    ApiError,
    BadRequest,
    BodyTooLarge,
    MethodNotAllowed,
    NotFound,
    Unauthorized,
    ValidationError,
)

log = logging.getLogger(__name__)

SCHEMAS_URL_KEY = web.RequestKey("schemas_url", str)
VERSIONS = ("v1", "v2-beta")


def origin(request: web.Request) -> str:
    """``scheme://host[:port]`` as the client sees the server, proxies included."""
    proto = request.headers.get("X-Forwarded-Proto", request.scheme).split(",")[0].strip()
    host = request.headers.get("X-Forwarded-Host", request.host).split(",")[0].strip()
    return f"{proto}://{host}"


def default_schemas_url(request: web.Request) -> str:
    parts = request.path.split("/")
    version = parts[1] if len(parts) > 1 and parts[1] in VERSIONS else "v1"
    return f"{origin(request)}/{version}/schemas"


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body, separators=(",", ":")), status=status,
                        content_type="application/json", charset="utf-8")


async def read_json(request: web.Request) -> Any:
    """The request body as JSON, whatever its Content-Type; None when empty."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge("request body too large") from None
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError(f"the request body is not valid JSON: {exc}",
                              code="InvalidBodyContent") from None


def error_response(request: web.Request, error: ApiError) -> web.Response:
    response = json_response(error.body(), status=error.status)
    if isinstance(error, Unauthorized) and \
            request.headers.get("X-API-No-Challenge", "").lower() != "true":
        response.headers["WWW-Authenticate"] = 'Basic realm="Corral"'
    return response


def _from_http(exc: web.HTTPException) -> ApiError:
    if exc.status == 404:
        return NotFound("no such resource")
    if exc.status == 405:
        return MethodNotAllowed("method not allowed here")
    if exc.status == 413:
        return BodyTooLarge("request body too large")
    error = BadRequest(exc.reason or "bad request")
    error.status = exc.status
    return error


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into Rancher's error body and add ``X-API-Schemas`` to every reply."""
    try:
        response = await handler(request)
    except ApiError as exc:
        response = error_response(request, exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(request, _from_http(exc))
    except Exception:
        log.exception("unhandled error serving %s %s", request.method, request.path)
        response = error_response(request, ApiError("internal server error"))
    if not response.prepared:
        response.headers["X-API-Schemas"] = request.get(SCHEMAS_URL_KEY) \
            or default_schemas_url(request)
    return response
