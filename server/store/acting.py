"""A store whose writes are recorded as one actor's: what a caller's operations write through."""

from __future__ import annotations

import builtins
from collections.abc import Collection, Mapping
from typing import Any

from server.store.interface import (
    Actor,
    Change,
    NewRecord,
    Query,
    Record,
    Store,
    T,
    Work,
)


class ActingStore:
    """``Store`` that records every write as ``actor``'s, whatever actor a call names."""

    def __init__(self, store: Store, actor: Actor) -> None:
        self.inner = store
        self.actor = actor

    async def get(self, record_id: int) -> Record | None:
        return await self.inner.get(record_id)

    async def get_by_lookup(self, type_: str, lookup_key: str) -> Record | None:
        return await self.inner.get_by_lookup(type_, lookup_key)

    async def get_by_uuid(self, uuid: str) -> Record | None:
        return await self.inner.get_by_uuid(uuid)

    async def list(self, query: Query) -> builtins.list[Record]:
        return await self.inner.list(query)

    async def create(self, new: NewRecord, *, actor: Actor | None = None) -> Record:
        return await self.inner.create(new, actor=self.actor)

    async def update(self, record_id: int, changes: Mapping[str, Any],
                     data: Mapping[str, Any] | None = None,
                     expected_version: int | None = None, *,
                     expected_states: Collection[str] | None = None,
                     actor: Actor | None = None) -> Record:
        return await self.inner.update(record_id, changes, data, expected_version,
                                       expected_states=expected_states, actor=self.actor)

    async def transact(self, work: Work[T], *, actor: Actor | None = None) -> T:
        return await self.inner.transact(work, actor=self.actor)

    async def changes_after(self, seq: int, limit: int = 500) -> builtins.list[Change]:
        return await self.inner.changes_after(seq, limit)

    async def last_seq(self) -> int:
        return await self.inner.last_seq()

    async def pruned_through(self) -> int:
        return await self.inner.pruned_through()

    async def prune_changes(self, keep: int, older_than_ms: int) -> int:
        return await self.inner.prune_changes(keep, older_than_ms)

    async def claim(self, record_id: int, owner: str, operation: str, ttl_ms: int) -> bool:
        return await self.inner.claim(record_id, owner, operation, ttl_ms)

    async def release(self, record_id: int, owner: str) -> None:
        await self.inner.release(record_id, owner)

    async def close(self) -> None:
        """The inner store belongs to someone else: closing a view closes nothing."""
