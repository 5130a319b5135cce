"""The aiohttp edge of the API: URL bases, JSON bodies, and the one error middleware."""

from __future__ import annotations

import json
import logging
import math
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestPayloadError

from server.api.errors import (
    ApiError,
    BadRequest,
    BodyTooLarge,
    MethodNotAllowed,
    NotFound,
    Unauthorized,
    ValidationError,
    invalid,
)
from shared.text import encodable

log = logging.getLogger(__name__)

SCHEMAS_URL_KEY = web.RequestKey("schemas_url", str)
VERSIONS = ("v1", "v2-beta")
# Rancher's bodies are a few levels deep; the bound keeps every later walk of a body (the
# parser's, validation's, the store's encoder) far from the recursion limit.
MAX_JSON_DEPTH = 64
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


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
    """The request body as JSON, whatever its Content-Type; None when empty. A body the store
    could not keep (too deep, a string that is not Unicode text, a number out of range) is a
    422 here, before anything looks at it."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge("request body too large") from None
    except (aiohttp.ClientPayloadError, RequestPayloadError, ConnectionError) as exc:
        raise BadRequest(f"the request body could not be read: {exc}") from None
    if not raw.strip():
        return None
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise _too_deep() from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError(f"the request body is not valid JSON: {exc}",
                              code="InvalidBodyContent") from None
    check_json_tree(body)
    return body


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _too_deep() -> ValidationError:
    return ValidationError(f"the request body is nested more than {MAX_JSON_DEPTH} levels deep",
                           code="InvalidBodyContent")


def check_json_tree(body: Any) -> None:
    """Walk a parsed body without recursion: bound its depth, and refuse strings that are not
    storable text (lone surrogates, NUL) and numbers the store cannot hold. The error names the
    top-level field the bad value sits under."""
    stack: list[tuple[Any, int, str | None]] = [(body, 1, None)]
    while stack:
        value, depth, field_name = stack.pop()
        if isinstance(value, dict):
            if depth > MAX_JSON_DEPTH:
                raise _too_deep()
            for key, item in value.items():
                name = field_name if field_name is not None else _printable(key)
                _check_string(key, name)
                stack.append((item, depth + 1, name))
        elif isinstance(value, list):
            if depth > MAX_JSON_DEPTH:
                raise _too_deep()
            stack.extend((item, depth + 1, field_name) for item in value)
        elif isinstance(value, str):
            _check_string(value, field_name)
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int) and not INT_MIN <= value <= INT_MAX:
            raise invalid("InvalidFormat", field_name, f"{field_name or 'the body'} holds a "
                                                       "number that does not fit in 64 bits")
        elif isinstance(value, float) and not math.isfinite(value):
            raise invalid("InvalidFormat", field_name,
                          f"{field_name or 'the body'} holds a number out of range")


def _check_string(text: str, field_name: str | None) -> None:
    if "\x00" in text or (not text.isascii() and not encodable(text)):
        raise invalid("InvalidCharacters", field_name,
                      f"{field_name or 'the body'} holds characters that are not text "
                      "(a lone surrogate or NUL)")


def _printable(key: str) -> str:
    return key.encode("utf-8", "backslashreplace").decode("utf-8")


def header_safe(value: str) -> str:
    """A header value with control and non-ASCII characters percent-encoded: request text (a
    path segment, a forwarded host) never splits or breaks a response header."""
    if value.isascii() and value.isprintable():
        return value
    return "".join(ch if " " <= ch < "\x7f" else quote(ch, safe="", errors="backslashreplace")
                   for ch in value)


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
        response.headers["X-API-Schemas"] = header_safe(
            request.get(SCHEMAS_URL_KEY) or default_schemas_url(request))
        _sanitise_headers(response)
    return response


def _sanitise_headers(response: web.StreamResponse) -> None:
    # Whatever a handler put in a header, it must not make aiohttp drop the connection.
    for name, value in list(response.headers.items()):
        if any(ch < " " or ch == "\x7f" for ch in value):
            response.headers[name] = header_safe(value)
