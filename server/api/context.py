"""Who is asking and where: the principal, the environment in scope, and the URL bases."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from server.api.dialect import IDENTITY, Dialect
from server.store import Actor, ActorKind, Record
from shared.ids import format_id

if TYPE_CHECKING:
    from server.caller import Caller
    from server.services import Services


class PrincipalKind(StrEnum):
    ADMIN = "admin"
    USER = "user"
    AGENT = "agent"
    REGISTRATION = "registration"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. ``credential_id`` is the key or token that authenticated it."""

    kind: PrincipalKind
    account_id: int | None
    credential_id: int
    project_id: int | None = None
    host_id: int | None = None
    default_project_id: int | None = None

    @property
    def actor(self) -> Actor:
        """Who the change log names for what this principal writes."""
        if self.kind is PrincipalKind.AGENT and self.host_id is not None:
            return Actor(ActorKind.AGENT, format_id("1h", self.host_id))
        return Actor(ActorKind.API_KEY, format_id("1c", self.credential_id))


@dataclass
class RequestContext:
    """Everything a resource handler needs to know about the request it serves."""

    principal: Principal
    project: Record | None
    # Version root without project scope, e.g. ``http://h:8080/v1``.
    version_url: str
    # Where collections of this request live: version_url, or .../projects/1a5 when scoped.
    base_url: str
    services: Services
    # Who acts in this request, for the domain operations it calls.
    caller: Caller
    # True when the request named its environment (URL or X-API-Project-Id header).
    explicit_project: bool = False
    # How this request's API version names types, fields and links (server.api.dialect).
    dialect: Dialect = IDENTITY

    @property
    def schemas_url(self) -> str:
        return f"{self.base_url}/schemas"

    @property
    def reveal(self) -> dict[int, dict[str, Any]]:
        """Values shown once, in the response that created them (a new API key's secret)."""
        return self.caller.reveal
