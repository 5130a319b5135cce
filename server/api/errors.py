"""API errors and the Rancher error body.

Exception tree (every one renders as ``{"type": "error", "status", "code", "message", ...}``)::

    ApiError
    ├── BadRequest          400
    ├── Unauthorized        401  missing or wrong credentials
    ├── Forbidden           403  authenticated, but not allowed
    ├── NotFound            404
    ├── MethodNotAllowed    405
    ├── Conflict            409  the resource changed meanwhile, or a unique key is taken
    ├── BodyTooLarge        413
    ├── ValidationError     422  Rancher's codes: MissingRequired, InvalidType, InvalidOption, ...
    ├── TooManyRequests     429  too many failed authentications from the client's address
    └── Unavailable         503  a host or service needed for the request is not there
"""

from __future__ import annotations

import uuid
from typing import Any


class ApiError(Exception):
    status = 500
    code = "ServerError"

    def __init__(self, message: str | None = None, *, code: str | None = None,
                 detail: str | None = None, field_name: str | None = None) -> None:
        super().__init__(message or code or self.code)
        self.message = message
        if code is not None:
            self.code = code
        self.detail = detail
        self.field_name = field_name

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": str(uuid.uuid4()), "type": "error", "links": {}, "actions": {},
            "status": self.status, "code": self.code, "message": self.message,
            "detail": self.detail,
        }
        if self.field_name is not None:
            out["fieldName"] = self.field_name
        return out


class BadRequest(ApiError):
    status = 400
    code = "BadRequest"


class Unauthorized(ApiError):
    status = 401
    code = "Unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "Forbidden"


class NotFound(ApiError):
    status = 404
    code = "NotFound"


class MethodNotAllowed(ApiError):
    status = 405
    code = "MethodNotAllowed"


class Conflict(ApiError):
    status = 409
    code = "Conflict"


class BodyTooLarge(ApiError):
    status = 413
    code = "RequestEntityTooLarge"


class ValidationError(ApiError):
    status = 422
    code = "InvalidBodyContent"


class TooManyRequests(ApiError):
    status = 429
    code = "TooManyRequests"


class Unavailable(ApiError):
    status = 503
    code = "ServiceUnavailable"


def invalid(code: str, field_name: str | None, message: str) -> ValidationError:
    """A 422 with one of Rancher's validation codes."""
    return ValidationError(message, code=code, field_name=field_name)
