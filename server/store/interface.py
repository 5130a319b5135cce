"""The store interface: typed records of every resource type, queries, and their errors.

Every resource, whatever its type, is one ``Record``: the columns Rancher gives every resource
(uuid, kind, name, state, ...) plus a ``data`` map holding the type's own fields. Records of all
types share one number sequence, so a number alone identifies a record.

Exception tree::

    StoreError
    ├── Conflict        an update lost a race (the record's version moved) or broke a unique key
    └── NotFoundError   the record does not exist
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Operator = Literal["eq", "ne", "lt", "lte", "gt", "gte", "prefix", "like", "notlike", "null",
                   "notnull"]
ValueKind = Literal["string", "int", "float", "bool"]

# Record attributes stored in their own columns; everything else lives in ``data``.
COLUMNS = frozenset({
    "id", "type", "kind", "uuid", "name", "description", "state", "project_id", "account_id",
    "created", "removed", "transitioning", "transitioning_message", "transitioning_progress",
    "lookup_key",
})


class StoreError(Exception):
    """Base of the store's errors."""


class Conflict(StoreError):
    """The record changed since it was read, or a unique key is taken."""


class NotFoundError(StoreError):
    """No record with that id."""


@dataclass(frozen=True)
class Record:
    """One stored resource. ``created`` and ``removed`` are epoch milliseconds."""

    id: int
    type: str
    kind: str
    uuid: str
    name: str | None
    description: str | None
    state: str
    project_id: int | None
    account_id: int | None
    created: int
    removed: int | None
    transitioning: str
    transitioning_message: str | None
    transitioning_progress: int | None
    lookup_key: str | None
    data: Mapping[str, Any]
    version: int


@dataclass(frozen=True)
class NewRecord:
    """What a caller supplies to create a record; the store fills id, uuid, created, version."""

    type: str
    kind: str
    state: str
    name: str | None = None
    description: str | None = None
    project_id: int | None = None
    account_id: int | None = None
    lookup_key: str | None = None
    uuid: str | None = None
    transitioning: str = "no"
    transitioning_message: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Condition:
    """One filter: ``field`` is a column name or a key of ``data``."""

    field: str
    op: Operator
    value: Any = None
    kind: ValueKind = "string"


@dataclass(frozen=True)
class Query:
    """A page of records of some types, AND of all conditions, in a stable order."""

    types: Sequence[str]
    conditions: Sequence[Condition] = ()
    project_id: int | None = None
    account_id: int | None = None
    # Removed records are listed only if removed at or after this time (epoch ms);
    # None lists them all.
    removed_since: int | None = None
    sort: str = "id"
    sort_kind: ValueKind = "int"
    descending: bool = False
    limit: int = 100
    offset: int = 0


class Store(Protocol):
    """Persistence for records; every write is atomic and announced on the change stream."""

    async def create(self, new: NewRecord) -> Record: ...

    async def get(self, record_id: int) -> Record | None: ...

    async def get_by_lookup(self, type_: str, lookup_key: str) -> Record | None: ...

    async def get_by_uuid(self, uuid: str) -> Record | None: ...

    async def list(self, query: Query) -> list[Record]: ...

    async def update(
        self,
        record_id: int,
        changes: Mapping[str, Any],
        data: Mapping[str, Any] | None = None,
        expected_version: int | None = None,
    ) -> Record:
        """Set ``changes`` (columns) and merge ``data`` into the data map.

        With ``expected_version``, raise Conflict unless the record is still at that version.
        A key of ``data`` whose value is None is removed from the map.
        """
        ...

    async def close(self) -> None: ...
