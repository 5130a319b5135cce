"""Declarative schemas: one ``Schema`` per resource type, kept in one ``SchemaRegistry``.

A schema says what a client may send (fields with type, create/update flags, limits), which
HTTP methods and actions exist and in which states each action is valid, which filters a
collection takes, and where the type lives (an environment, an account, or globally).
Rendering a schema to the Rancher ``schema`` JSON is pure and lives here too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from shared.ids import prefix_for

# The modifiers of a filter, by the field's type, as Rancher 1.6 offers them: ordering for
# numbers, dates and ids; equality alone for references, booleans and ``state``. Other enums
# take the string modifiers, as Rancher's (it took them from the column, a string).
STRING_MODIFIERS = ("eq", "ne", "null", "notnull", "prefix", "like", "notlike")
NUMBER_MODIFIERS = ("eq", "ne", "lt", "lte", "gt", "gte", "null", "notnull")
EQUALITY_MODIFIERS = ("eq", "ne", "null", "notnull")
BOOL_MODIFIERS = EQUALITY_MODIFIERS


class Scope(StrEnum):
    """Where a resource belongs: authorization and URL scoping follow from it."""

    PROJECT = "project"
    ACCOUNT = "account"
    GLOBAL = "global"


@dataclass(frozen=True)
class Field:
    """One field of a resource type, as the Rancher schema describes it."""

    type: str = "string"
    create: bool = False
    update: bool = False
    required: bool = False
    nullable: bool = True
    default: Any = None
    options: tuple[str, ...] | None = None
    min: int | None = None
    max: int | None = None
    min_length: int | None = None
    max_length: int | None = None
    unique: bool = False
    filterable: bool = True
    # Read as Rancher's converter read it: one value for a one-element list, an integer for
    # a string (``ports: 80``). Only where Rancher's clients rely on it.
    lenient: bool = False
    # The filter modifiers, where they differ from those of the field's type.
    filter_modifiers: tuple[str, ...] | None = None

    def render(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "nullable": self.nullable,
                               "create": self.create, "update": self.update,
                               "required": self.required}
        if self.default is not None:
            out["default"] = self.default
        if self.options is not None:
            out["options"] = list(self.options)
        for key, value in (("min", self.min), ("max", self.max), ("minLength", self.min_length),
                           ("maxLength", self.max_length)):
            if value is not None:
                out[key] = value
        if self.unique:
            out["unique"] = True
        return out

    @property
    def modifiers(self) -> tuple[str, ...]:
        if self.filter_modifiers is not None:
            return self.filter_modifiers
        if self.type in ("int", "float", "date"):
            return NUMBER_MODIFIERS
        if self.type == "boolean" or self.type.startswith("reference["):
            return EQUALITY_MODIFIERS
        return STRING_MODIFIERS


@dataclass(frozen=True)
class Action:
    """A resource action, valid only while the resource is in one of ``states``."""

    states: frozenset[str]
    input: str | None = None
    output: str | None = None


# Fields every resource has; resources add their own beside them.
COMMON_FIELDS: Mapping[str, Field] = {
    # Ids are row numbers underneath, so they order as Rancher's did.
    "id": Field(type="string", nullable=False, filter_modifiers=NUMBER_MODIFIERS),
    "type": Field(type="string", nullable=False, filterable=False),
    "baseType": Field(type="string", nullable=False, filterable=False),
    "kind": Field(type="string", nullable=False),
    "uuid": Field(type="string", nullable=False),
    "name": Field(type="string", create=True, update=True, max_length=255),
    "description": Field(type="string", create=True, update=True, max_length=1024),
    "state": Field(type="enum", nullable=False, filter_modifiers=EQUALITY_MODIFIERS),
    "accountId": Field(type="reference[account]", filterable=False),
    "transitioning": Field(type="enum", options=("yes", "no", "error"), nullable=False,
                           filterable=False),
    "transitioningMessage": Field(type="string", filterable=False),
    "transitioningProgress": Field(type="int", filterable=False),
    "created": Field(type="date"),
    "createdTS": Field(type="int", filterable=False),
    "removed": Field(type="date"),
    "removedTS": Field(type="int", filterable=False),
}


@dataclass(frozen=True)
class Schema:
    """Everything the framework needs to serve one resource type."""

    id: str
    scope: Scope
    fields: Mapping[str, Field] = field(default_factory=dict)
    states: tuple[str, ...] = ()
    actions: Mapping[str, Action] = field(default_factory=dict)
    collection_methods: tuple[str, ...] = ("GET",)
    resource_methods: tuple[str, ...] = ("GET",)
    base_type: str | None = None
    plural: str | None = None
    prefix: str | None = None
    # Types with no collection of their own (action inputs and outputs, embedded objects).
    embedded: bool = False
    # Links every resource has that ``?include=`` can embed (``ResourceType.linked``).
    links: tuple[str, ...] = ()
    # Endpoints served by a handler of their own (``subscribe``): a collection URL and
    # methods, but only the fields declared here, none of a stored resource's.
    bare: bool = False

    @property
    def base(self) -> str:
        return self.base_type or self.id

    @property
    def plural_name(self) -> str:
        if self.plural:
            return self.plural
        return self.id + ("es" if self.id.endswith(("s", "x")) else "s")

    @property
    def collection_name(self) -> str:
        return self.plural_name.lower()

    @property
    def id_prefix(self) -> str:
        return self.prefix or prefix_for(self.base)

    @property
    def all_fields(self) -> Mapping[str, Field]:
        """Common fields, overridden and extended by the type's own."""
        if self.embedded or self.bare:
            return self.fields
        merged = dict(COMMON_FIELDS)
        merged["state"] = replace(COMMON_FIELDS["state"], options=self.states or None)
        if self.scope is not Scope.GLOBAL:
            # Rancher's admin lists across environments and accounts, and narrows by owner.
            merged["accountId"] = replace(COMMON_FIELDS["accountId"], filterable=True)
        merged.update(self.fields)
        return merged

    def valid_actions(self, state: str) -> list[str]:
        return [name for name, action in self.actions.items() if state in action.states]

    def render(self, base_url: str) -> dict[str, Any]:
        """The schema as Rancher's ``schema`` resource; ``base_url`` is the version root."""
        links = {"self": f"{base_url}/schemas/{self.id}"}
        if not self.embedded:
            links["collection"] = f"{base_url}/{self.collection_name}"
        fields = self.all_fields
        return {
            "id": self.id,
            "type": "schema",
            "links": links,
            "actions": {},
            "pluralName": self.plural_name,
            "baseType": self.base,
            "resourceFields": {name: f.render() for name, f in fields.items()},
            "resourceMethods": list(self.resource_methods) if not self.embedded else [],
            "collectionMethods": list(self.collection_methods) if not self.embedded else [],
            "resourceActions": {name: {"input": a.input, "output": a.output or self.id}
                                for name, a in self.actions.items()},
            "collectionActions": {},
            "collectionFields": {},
            "collectionFilters": {} if self.embedded else {
                name: {"modifiers": list(f.modifiers)}
                for name, f in fields.items() if f.filterable
            },
            "includeableLinks": list(self.links),
        }


# ``/v1/subscribe``, the change stream (server/api/subscribe.py), described as Rancher does.
SUBSCRIBE = Schema(
    id="subscribe",
    scope=Scope.GLOBAL,
    plural="subscribe",
    bare=True,
    collection_methods=("GET", "POST"),
    fields={
        "eventNames": Field(type="array[string]", create=True, nullable=False, min_length=1,
                            filter_modifiers=("eq",)),
        # In the admin's schema (go-rancher's client has it); the project role lacks it.
        "agentId": Field(type="reference[agent]", create=True, filterable=False),
    },
)


class SchemaRegistry:
    """All schemas, by id and by collection name; the single list of resource types."""

    def __init__(self, schemas: Iterable[Schema] = ()) -> None:
        self._by_id: dict[str, Schema] = {}
        self._by_collection: dict[str, Schema] = {}
        for schema in schemas:
            self.add(schema)

    def add(self, schema: Schema) -> None:
        if schema.id in self._by_id:
            raise ValueError(f"schema {schema.id!r} registered twice")
        self._by_id[schema.id] = schema
        if not schema.embedded:
            self._by_collection[schema.collection_name] = schema

    def get(self, schema_id: str) -> Schema | None:
        return self._by_id.get(schema_id)

    def by_collection(self, name: str) -> Schema | None:
        return self._by_collection.get(name.lower())

    def __iter__(self) -> Any:
        return iter(self._by_id.values())
