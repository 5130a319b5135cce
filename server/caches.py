"""Records read on almost every request (environments) or operation (registries), kept for a
few seconds: dropped the moment this process changes one of their type, while the short life
bounds how long another server's change takes to be seen here."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from server.store import Record

V = TypeVar("V")


class Recent(Generic[V]):
    """Values computed from records of ``types``, by key, for ``seconds``."""

    def __init__(self, types: frozenset[str], seconds: float = 5.0) -> None:
        self._types = types
        self._seconds = seconds
        self._entries: dict[Hashable, tuple[float, V]] = {}

    async def get(self, key: Hashable, load: Callable[[], Awaitable[V]]) -> V:
        entry = self._entries.get(key)
        now = time.monotonic()
        if entry is not None and entry[0] > now:
            return entry[1]
        value = await load()
        self._entries[key] = (now + self._seconds, value)
        return value

    def on_change(self, record: Record) -> None:
        if record.type in self._types:
            self._entries.clear()
