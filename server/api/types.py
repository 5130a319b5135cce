"""Resource types: a schema plus the behaviour behind its REST verbs and actions.

``ResourceType`` gives every type generic create, update, remove and state-machine actions;
a family module subclasses it only where its resources need more (a token to derive, an agent
to disconnect). The list of types is in ``server.resources``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server.api.context import RequestContext
from server.api.errors import Conflict as ApiConflict
from server.api.errors import NotFound, invalid
from server.api.schema import Action, Schema, Scope
from server.store import Conflict, NewRecord, Record

# Fields stored in record columns rather than in the data map.
COLUMN_FIELDS = ("name", "description")


@dataclass(frozen=True)
class Transition:
    """A synchronous state change: from any of ``sources`` to ``target``."""

    sources: frozenset[str]
    target: str


def transitions(**table: tuple[set[str], str]) -> dict[str, Transition]:
    return {name: Transition(frozenset(src), dst) for name, (src, dst) in table.items()}


# Rancher's template for credentials, accounts and the like: its actions, the states they
# are valid in, and the transitions they make.
TEMPLATE_STATES = ("active", "inactive", "removed", "purged")
TEMPLATE = transitions(
    activate=({"inactive"}, "active"),
    deactivate=({"active"}, "inactive"),
    remove=({"inactive", "active"}, "removed"),
    purge=({"removed"}, "purged"),
)
TEMPLATE_ACTIONS = {name: Action(t.sources) for name, t in TEMPLATE.items()}


def now_ms() -> int:
    return int(time.time() * 1000)


class ResourceType:
    """Generic behaviour of a resource type; subclasses override what differs."""

    initial_state = "active"
    transitions: Mapping[str, Transition] = TEMPLATE

    def __init__(self, schema: Schema) -> None:
        self.schema = schema

    # --- scope -------------------------------------------------------------------------

    def owner(self, ctx: RequestContext) -> tuple[int | None, int | None]:
        """(project_id, account_id) for a new record created in this request."""
        if self.schema.scope is Scope.PROJECT:
            if ctx.project is None:
                raise invalid("MissingRequired", "projectId",
                              "no environment in scope: use /v1/projects/<id>/... "
                              "or the X-API-Project-Id header")
            return ctx.project.id, None
        if self.schema.scope is Scope.ACCOUNT:
            return None, ctx.principal.account_id
        return None, None

    # --- verbs -------------------------------------------------------------------------

    async def create(self, ctx: RequestContext, values: dict[str, Any]) -> Record:
        project_id, account_id = self.owner(ctx)
        return await self.store_new(ctx, values, project_id=project_id, account_id=account_id)

    async def store_new(self, ctx: RequestContext, values: Mapping[str, Any], *,
                        project_id: int | None, account_id: int | None,
                        lookup_key: str | None = None, kind: str | None = None,
                        state: str | None = None) -> Record:
        data = {k: v for k, v in values.items() if k not in COLUMN_FIELDS}
        new = NewRecord(type=self.schema.id, kind=kind or self.schema.id,
                        state=state or self.initial_state, name=values.get("name"),
                        description=values.get("description"), project_id=project_id,
                        account_id=account_id, lookup_key=lookup_key, data=data)
        try:
            return await ctx.services.store.create(new)
        except Conflict as exc:
            raise ApiConflict(str(exc), code="NotUnique") from exc

    async def update(self, ctx: RequestContext, record: Record,
                     values: dict[str, Any]) -> Record:
        columns = {k: v for k, v in values.items() if k in COLUMN_FIELDS}
        data = {k: v for k, v in values.items() if k not in COLUMN_FIELDS}
        return await self.write(ctx, record, columns, data)

    async def remove(self, ctx: RequestContext, record: Record) -> Record:
        result = await self.run_action(ctx, record, "remove", {})
        assert isinstance(result, Record)
        return result

    async def write(self, ctx: RequestContext, record: Record, columns: Mapping[str, Any],
                    data: Mapping[str, Any] | None = None) -> Record:
        """Update ``record`` unless someone else changed it since it was read (409)."""
        try:
            return await ctx.services.store.update(record.id, columns, data,
                                                   expected_version=record.version)
        except Conflict as exc:
            raise ApiConflict(str(exc)) from exc

    # --- actions -----------------------------------------------------------------------

    def available_actions(self, ctx: RequestContext, record: Record) -> list[str]:
        return self.schema.valid_actions(record.state)

    async def run_action(self, ctx: RequestContext, record: Record, name: str,
                         values: dict[str, Any]) -> Record | dict[str, Any]:
        """Check the action is valid in the current state, then perform it."""
        if name not in self.schema.actions:
            raise invalid("InvalidAction", "action", f"{self.schema.id} has no action {name!r}")
        if name not in self.available_actions(ctx, record):
            raise invalid("ActionNotAvailable", "action",
                          f"action {name!r} is not available while the "
                          f"{self.schema.id} is {record.state}")
        return await self.perform(ctx, record, name, values)

    async def perform(self, ctx: RequestContext, record: Record, name: str,
                      values: dict[str, Any]) -> Record | dict[str, Any]:
        transition = self.transitions.get(name)
        if transition is None:
            raise NotFound(f"action {name!r} is not implemented for {self.schema.id}")
        return await self.transition(ctx, record, transition)

    async def transition(self, ctx: RequestContext, record: Record,
                         transition: Transition) -> Record:
        columns: dict[str, Any] = {"state": transition.target, "transitioning": "no",
                                   "transitioning_message": None,
                                   "transitioning_progress": None}
        if transition.target == "removed":
            columns["removed"] = now_ms()
        updated = await self.write(ctx, record, columns)
        await self.after_transition(ctx, updated, transition)
        return updated

    async def after_transition(self, ctx: RequestContext, record: Record,
                               transition: Transition) -> None:
        """Side effects of entering a state (disconnect an agent, revoke a key...)."""

    # --- rendering ---------------------------------------------------------------------

    def computed(self, ctx: RequestContext, record: Record) -> dict[str, Any]:
        """Fields derived at render time rather than stored."""
        return {}

    def links(self, ctx: RequestContext, record: Record, self_url: str) -> dict[str, str]:
        return {}

    async def follow_link(self, ctx: RequestContext, record: Record,
                          name: str) -> dict[str, Any]:
        """``GET <resource>/<link>`` for links computed on request (stats and the like)."""
        raise NotFound(f"{self.schema.id} has no link {name!r}")


class TypeRegistry:
    """Every resource type by schema id and collection name, plus embedded schemas."""

    def __init__(self) -> None:
        self._types: dict[str, ResourceType] = {}
        self._collections: dict[str, ResourceType] = {}
        self._embedded: dict[str, Schema] = {}

    def add(self, rtype: ResourceType) -> None:
        schema = rtype.schema
        if schema.id in self._types or schema.id in self._embedded:
            raise ValueError(f"type {schema.id!r} registered twice")
        self._types[schema.id] = rtype
        self._collections[schema.collection_name] = rtype

    def add_embedded(self, schema: Schema) -> None:
        if schema.id in self._types or schema.id in self._embedded:
            raise ValueError(f"type {schema.id!r} registered twice")
        self._embedded[schema.id] = schema

    def get(self, schema_id: str) -> ResourceType | None:
        return self._types.get(schema_id)

    def by_collection(self, name: str) -> ResourceType | None:
        return self._collections.get(name.lower())

    def schema(self, schema_id: str) -> Schema | None:
        rtype = self._types.get(schema_id)
        return rtype.schema if rtype is not None else self._embedded.get(schema_id)

    def schemas(self) -> list[Schema]:
        return [t.schema for t in self._types.values()] + list(self._embedded.values())
