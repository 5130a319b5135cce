"""Resource types: a schema and a lifecycle, plus the rules behind their verbs and actions.

``ResourceType`` gives every type generic create, update, remove and actions driven by its
declared lifecycle (``server.lifecycle``): a step without a transitional state is written at
once; a step with one is recorded and handed to the runner, which carries out its operation.
A family module subclasses it only where its resources need more (a token to derive, an agent
to disconnect). Every verb takes a ``Caller``, never a request, so the server's own loops use
the same rules as the REST API. The list of types is in ``server.resources``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from server.api.errors import Conflict as ApiConflict
from server.api.errors import NotFound, invalid
from server.api.schema import Schema, Scope
from server.lifecycle import TEMPLATE, Lifecycle, Step
from server.store import Conflict, NewRecord, Record, Transaction

if TYPE_CHECKING:
    from server.api.context import RequestContext
    from server.caller import Caller

# Fields stored in record columns rather than in the data map.
COLUMN_FIELDS = ("name", "description")

TEMPLATE_STATES = TEMPLATE.state_names
TEMPLATE_ACTIONS = TEMPLATE.actions()


@dataclass(frozen=True)
class Linked:
    """What a resource's link leads to: records of other types (rendered as the API renders
    them) and objects of an embedded type (rendered as given). ``one`` marks a link to a
    single object rather than a collection; ``partial`` a collection cut at its limit."""

    resource_type: str
    records: Sequence[Record] = ()
    objects: Sequence[Mapping[str, Any]] = ()
    one: bool = False
    partial: bool = False


def now_ms() -> int:
    return int(time.time() * 1000)


def entered(state: str, *, transitional: bool = False) -> dict[str, Any]:
    """The columns of a record entering ``state``: ``transitioning`` follows from the step."""
    columns: dict[str, Any] = {"state": state, "transitioning": "yes" if transitional else "no",
                               "transitioning_message": "In Progress" if transitional else None,
                               "transitioning_progress": None}
    if state == "removed":
        columns["removed"] = now_ms()
    return columns


class ResourceType:
    """Generic behaviour of a resource type; subclasses override what differs."""

    lifecycle: Lifecycle = TEMPLATE
    # Whether the ``update`` action is Rancher's update process asked for alone: its body
    # changes what a PUT's would (a type with an update operation of its own says False).
    update_action_is_put = False

    def __init__(self, schema: Schema) -> None:
        self.schema = schema

    def listed_types(self) -> tuple[str, ...]:
        """The record types its collection lists and finds (a base type lists its kinds)."""
        return (self.schema.id,)

    @property
    def initial_state(self) -> str:
        return self.lifecycle.initial

    # --- scope -------------------------------------------------------------------------

    def owner(self, caller: Caller) -> tuple[int | None, int | None]:
        """(project_id, account_id) for a new record created by ``caller``."""
        if self.schema.scope is Scope.PROJECT:
            if caller.project is None:
                raise invalid("MissingRequired", "projectId",
                              "no environment in scope: use /v1/projects/<id>/... "
                              "or the X-API-Project-Id header")
            return caller.project.id, None
        if self.schema.scope is Scope.ACCOUNT:
            return None, caller.account_id
        return None, None

    # --- verbs -------------------------------------------------------------------------

    async def create(self, caller: Caller, values: dict[str, Any]) -> Record:
        project_id, account_id = self.owner(caller)
        return await self.store_new(caller, values, project_id=project_id,
                                    account_id=account_id)

    async def store_new(self, caller: Caller, values: Mapping[str, Any], *,
                        project_id: int | None, account_id: int | None,
                        lookup_key: str | None = None, kind: str | None = None,
                        state: str | None = None) -> Record:
        data = {k: v for k, v in values.items() if k not in COLUMN_FIELDS}
        new = NewRecord(type=self.schema.id, kind=kind or self.schema.id,
                        state=state or self.initial_state, name=values.get("name"),
                        description=values.get("description"), project_id=project_id,
                        account_id=account_id, lookup_key=lookup_key, data=data)
        try:
            return await caller.store.create(new)
        except Conflict as exc:
            raise ApiConflict(str(exc), code="NotUnique") from exc

    async def update(self, caller: Caller, record: Record, values: dict[str, Any]) -> Record:
        columns = {k: v for k, v in values.items() if k in COLUMN_FIELDS}
        data = {k: v for k, v in values.items() if k not in COLUMN_FIELDS}
        return await self.write(caller, record, columns, data)

    async def remove(self, caller: Caller, record: Record) -> Record:
        result = await self.run_action(caller, record, "remove", {})
        assert isinstance(result, Record)
        return result

    async def merge(self, caller: Caller, record: Record, values: Mapping[str, Any]) -> Record:
        """Update ``record`` key by key, whatever was written to it since it was read: for
        types Corral itself writes all the time (a service's currentScale, a stack's
        healthState), where a client's fields neither undo those writes nor they them."""
        columns = {k: v for k, v in values.items() if k in COLUMN_FIELDS}
        data = {k: v for k, v in values.items() if k not in COLUMN_FIELDS}
        try:
            return await caller.store.update(record.id, columns, data)
        except Conflict as exc:
            raise ApiConflict(str(exc)) from exc

    async def write(self, caller: Caller, record: Record, columns: Mapping[str, Any],
                    data: Mapping[str, Any] | None = None) -> Record:
        """Update ``record`` unless someone else changed it since it was read (409)."""
        try:
            return await caller.store.update(record.id, columns, data,
                                             expected_version=record.version)
        except Conflict as exc:
            raise ApiConflict(str(exc)) from exc

    # --- actions -----------------------------------------------------------------------

    def available_actions(self, record: Record) -> list[str]:
        return self.schema.valid_actions(record.state)

    async def run_action(self, caller: Caller, record: Record, name: str,
                         values: dict[str, Any]) -> Record | dict[str, Any]:
        """Check the action is valid in the current state, then perform it."""
        if name not in self.schema.actions:
            raise invalid("InvalidAction", "action", f"{self.schema.id} has no action {name!r}")
        if name not in self.available_actions(record):
            raise invalid("ActionNotAvailable", "action",
                          f"action {name!r} is not available while the "
                          f"{self.schema.id} is {record.state}")
        return await self.perform(caller, record, name, values)

    async def perform(self, caller: Caller, record: Record, name: str,
                      values: dict[str, Any]) -> Record | dict[str, Any]:
        """Carry out an action: its lifecycle step, or (in subclasses) a verb."""
        row = self.lifecycle.step(name)
        if row is None:
            raise NotFound(f"action {name!r} is not implemented for {self.schema.id}")
        return await self.take_step(caller, record, row)

    async def take_step(self, caller: Caller, record: Record, row: Step,
                        data: Mapping[str, Any] | None = None,
                        target: str | None = None) -> Record:
        """Enter the step's transitional state and hand it to the runner, or reach its target
        at once (``target`` overrides the table's, for targets known only now).

        The step was chosen for the state ``record`` is in: it holds while the record is in a
        state the step may be taken from, whatever background writes (facts, health, network
        versions, an operation that finished meanwhile) did."""
        if row.transitional is not None:
            runner = caller.services.runner
            operation = row.operation
            assert operation is not None

            async def enter(tx: Transaction) -> tuple[Record, bool]:
                updated = await tx.update(record.id, entered(row.transitional or "",
                                                             transitional=True),
                                          data, expected_states=row.sources | {record.state})
                return updated, await runner.claim_in(tx, record.id, operation)

            try:
                updated, claimed = await caller.store.transact(enter)
            except Conflict as exc:
                raise ApiConflict(str(exc)) from exc
            runner.submit(updated.id, claimed=claimed)
            return updated
        try:
            updated = await caller.store.update(record.id, entered(target or row.target), data,
                                                expected_states=row.sources | {record.state})
        except Conflict as exc:
            raise ApiConflict(str(exc)) from exc
        await self.after_step(caller, updated, row)
        return updated

    async def after_step(self, caller: Caller, record: Record, row: Step) -> None:
        """Side effects of a step reached at once (disconnect an agent, revoke a key...)."""

    # --- rendering ---------------------------------------------------------------------

    def computed(self, ctx: RequestContext, record: Record) -> dict[str, Any]:
        """Fields derived at render time rather than stored."""
        return {}

    def links(self, ctx: RequestContext, record: Record, self_url: str) -> dict[str, str]:
        return {}

    async def linked(self, caller: Caller, record: Record, name: str) -> Linked:
        """What the link ``name`` (one of ``schema.links``) leads to: ``GET <resource>/<name>``
        answers it, and ``?include=<name>`` embeds it in the resource."""
        raise NotFound(f"{self.schema.id} has no link {name!r}")

    async def follow_link(self, caller: Caller, record: Record, name: str) -> dict[str, Any]:
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

    def types(self) -> list[ResourceType]:
        return list(self._types.values())

    def by_collection(self, name: str) -> ResourceType | None:
        return self._collections.get(name.lower())

    def schema(self, schema_id: str) -> Schema | None:
        rtype = self._types.get(schema_id)
        return rtype.schema if rtype is not None else self._embedded.get(schema_id)

    def schemas(self) -> list[Schema]:
        return [t.schema for t in self._types.values()] + list(self._embedded.values())
