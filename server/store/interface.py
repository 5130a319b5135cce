"""The store interface: typed records of every resource type, queries, and their errors.

Every resource, whatever its type, is one ``Record``: the columns Rancher gives every resource
(uuid, kind, name, state, ...) plus a ``data`` map holding the type's own fields. Records of all
types share one number sequence, so a number alone identifies a record.

Every write happens in a transaction, and every transaction appends one entry per record it
wrote to the change log, in the same transaction: a sequence number, the record as it is after
the change, the fields that changed, the actor and the time. Readers of the log (the resource
change stream, the engine's loops) resume from the last sequence number they saw, so a change
is never lost, whoever is slow.

Exception tree::

    StoreError
    ├── Conflict          an update lost a race (the record's version moved) or broke a unique key
    ├── NotFoundError     the record does not exist
    └── StoreUnavailable  the database cannot be opened (bad URL, unreachable server, refused
                          credentials); the message says which, without the password
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol, TypeVar

Operator = Literal["eq", "ne", "lt", "lte", "gt", "gte", "prefix", "like", "notlike", "null",
                   "notnull"]
ValueKind = Literal["string", "int", "float", "bool"]

# Record attributes stored in their own columns; everything else lives in ``data``.
COLUMNS = frozenset({
    "id", "type", "kind", "uuid", "name", "description", "state", "project_id", "account_id",
    "created", "removed", "transitioning", "transitioning_message", "transitioning_progress",
    "lookup_key",
})

# Data keys mirrored into indexed columns of their own on every write, for the look-ups that
# everything makes (containers of a host, a container by its Docker id). The data map stays
# the source of truth; a condition or sort on one of these keys uses its column.
INDEXED_DATA = {"hostId": "host_id", "externalId": "external_id"}


class StoreError(Exception):
    """Base of the store's errors."""


class Conflict(StoreError):
    """The record changed since it was read, or a unique key is taken."""


class NotFoundError(StoreError):
    """No record with that id."""


class StoreUnavailable(StoreError):
    """The database could not be opened; ``str()`` is one line for the operator."""


class ActorKind(StrEnum):
    """Who makes a change: recorded with every entry of the change log."""

    SYSTEM = "system"
    ACCOUNT = "account"
    API_KEY = "apiKey"
    AGENT = "agent"


@dataclass(frozen=True)
class Actor:
    """The one who writes: an account, one of its API keys, a host's agent, or Corral itself.

    ``id`` is the public id of the account, key or host (None for the system).
    """

    kind: ActorKind
    id: str | None = None

    def __str__(self) -> str:
        return self.kind.value if self.id is None else f"{self.kind.value}:{self.id}"

    @classmethod
    def parse(cls, text: str) -> Actor:
        kind, _, ident = text.partition(":")
        return cls(ActorKind(kind), ident or None)


SYSTEM = Actor(ActorKind.SYSTEM)


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


ChangeKind = Literal["create", "update"]


@dataclass(frozen=True)
class Change:
    """One entry of the change log: ``record`` as it was right after the change."""

    seq: int
    kind: ChangeKind
    record: Record
    # Names of the columns and data keys that changed (every field, on create).
    fields: tuple[str, ...]
    actor: str
    time: int


T = TypeVar("T")


class Reader(Protocol):
    """Reads, in or out of a transaction."""

    async def get(self, record_id: int) -> Record | None: ...

    async def get_by_lookup(self, type_: str, lookup_key: str) -> Record | None: ...

    async def get_by_uuid(self, uuid: str) -> Record | None: ...

    async def list(self, query: Query) -> list[Record]: ...


class Transaction(Reader, Protocol):
    """Several reads and writes that commit together, or not at all.

    Reads see the transaction's own writes. ``lock`` serialises transactions that touch the
    same record (a host whose capacity is being claimed), also across server processes.
    """

    async def create(self, new: NewRecord) -> Record: ...

    async def update(
        self,
        record_id: int,
        changes: Mapping[str, Any],
        data: Mapping[str, Any] | None = None,
        expected_version: int | None = None,
        *,
        expected_states: Collection[str] | None = None,
    ) -> Record: ...

    async def lock(self, record_id: int) -> Record | None:
        """The record, locked until the transaction ends."""
        ...

    async def last_seq(self) -> int:
        """The newest sequence number of the change log, as this transaction sees it."""
        ...

    async def claim(self, record_id: int, owner: str, operation: str, ttl_ms: int) -> bool:
        """As ``Store.claim``, committed with the rest of the transaction."""
        ...

    async def release(self, record_id: int, owner: str) -> None:
        """As ``Store.release``, committed with the rest of the transaction."""
        ...


Work = Callable[[Transaction], Awaitable[T]]


class Store(Reader, Protocol):
    """Persistence for records; every write is atomic and recorded in the change log."""

    async def create(self, new: NewRecord, *, actor: Actor = SYSTEM) -> Record: ...

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
        *,
        expected_states: Collection[str] | None = None,
        actor: Actor = SYSTEM,
    ) -> Record:
        """Set ``changes`` (columns) and merge ``data`` into the data map.

        With ``expected_version``, raise Conflict unless the record is still at that version;
        with ``expected_states``, unless it is in one of them (a lifecycle step checked against
        the states it may be taken from, whatever else was written meanwhile).
        A key of ``data`` whose value is None is removed from the map.
        """
        ...

    async def transact(self, work: Work[T], *, actor: Actor = SYSTEM) -> T:
        """Run ``work`` in one transaction; its writes are logged as ``actor``'s."""
        ...

    async def changes_after(self, seq: int, limit: int = 500) -> builtins.list[Change]:
        """Entries of the change log after ``seq``, oldest first."""
        ...

    async def last_seq(self) -> int:
        """The sequence number of the newest change (0 before the first)."""
        ...

    async def pruned_through(self) -> int:
        """Changes up to this sequence number are no longer kept (0: none pruned)."""
        ...

    async def prune_changes(self, keep: int, older_than_ms: int) -> int:
        """Drop entries beyond the newest ``keep`` and older than ``older_than_ms`` (epoch
        ms); return how many went."""
        ...

    async def claim(self, record_id: int, owner: str, operation: str, ttl_ms: int) -> bool:
        """Take (or renew) the claim on ``record_id``'s operation; False if another owner
        holds an unexpired claim on it."""
        ...

    async def release(self, record_id: int, owner: str) -> None:
        """Give up ``owner``'s claim on ``record_id`` (nothing if it holds none)."""
        ...

    async def close(self) -> None: ...
