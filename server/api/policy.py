"""Authorization: the one place that decides who may do what, where.

Today an admin may do everything and no other principal may use the REST resources; roles and
environment members will be added here, and nowhere else. As in Rancher, the admin with no
environment in scope reaches every environment and account: it lists across them, filters
by ``accountId`` and creates where ``accountId`` says.
"""

from __future__ import annotations

from enum import StrEnum

from server.api.context import Principal, PrincipalKind
from server.api.errors import Forbidden, NotFound
from server.api.schema import Schema, Scope
from server.store import Record


class Verb(StrEnum):
    LIST = "list"
    READ = "read"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    ACTION = "action"


def can_use(principal: Principal, schema: Schema) -> bool:
    """Whether the principal sees the schema at all (schema sets differ per role)."""
    return principal.kind is PrincipalKind.ADMIN


def check(principal: Principal, verb: Verb, schema: Schema, record: Record | None = None) -> None:
    """Raise unless ``principal`` may apply ``verb`` to ``schema`` (and ``record``)."""
    if not can_use(principal, schema):
        raise Forbidden(f"not allowed to {verb} {schema.plural_name}")
    if record is not None and not can_see(principal, schema, record):
        # A record outside the caller's reach is reported as missing, not as forbidden.
        raise NotFound(f"{schema.id} not found")


def can_see(principal: Principal, schema: Schema, record: Record) -> bool:
    if principal.kind is PrincipalKind.ADMIN:
        return True
    if schema.scope is Scope.ACCOUNT:
        return record.account_id == principal.account_id
    return False


def can_enter_project(principal: Principal, project: Record) -> bool:
    return principal.kind is PrincipalKind.ADMIN and project.state == "active"


def reaches_everywhere(principal: Principal) -> bool:
    """Whether the principal, with no environment in scope, works across all of them."""
    return principal.kind is PrincipalKind.ADMIN


def can_act_for(principal: Principal, account: Record) -> bool:
    """Whether the principal may make things (an API key) that belong to ``account``."""
    if account.type != "account" or account.removed is not None or \
            account.state in ("removed", "purged"):
        return False
    return principal.kind is PrincipalKind.ADMIN or account.id == principal.account_id
