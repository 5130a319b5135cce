"""The write transactions of one server process on SQLite, committed together.

The commit is the dearest part of a small write (SQLite appends every page the transaction
changed to the WAL), and a busy server has several writes ready at once. So each write
transaction runs as a savepoint inside one open database transaction, and the group commits
once the writes ready in the same turn of the event loop have run (or at the
``max_batch``-th). No write is acknowledged before its commit: each waits for the commit of its
group, and the group's listeners hear of its writes in order once it is durable. A failed
commit fails the whole group; a failed member is undone alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from server.store.inline import InlineConnection, InlineEngine

log = logging.getLogger(__name__)
W = TypeVar("W")
MAX_BATCH = 64


class GroupCommit:
    def __init__(self, engine: InlineEngine, max_batch: int = MAX_BATCH) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._lock = asyncio.Lock()
        self._scheduled = False  # a commit is due at the next turn of the event loop
        self._listeners: list[Callable[[], None]] = []
        self._committed: asyncio.Future[None] | None = None

    async def run(self, work: Callable[[InlineConnection], Awaitable[W]],
                  after: Callable[[W], None] | None = None) -> W:
        """``work`` as one member of a group; ``after`` hears of its outcome once committed."""
        async with self._lock:
            try:
                async with self._engine.savepoint() as conn:
                    result = await work(conn)
                committed = self._join(result, after)
            finally:
                if not self._listeners or len(self._listeners) >= self._max_batch:
                    self._commit()  # none pending: end the (empty) transaction at once
                elif self._listeners and not self._scheduled:
                    self._scheduled = True
                    asyncio.get_running_loop().call_soon(self._commit_due)
        await committed
        return result

    def _commit_due(self) -> None:
        self._scheduled = False
        if not self._lock.locked():  # else the member under way schedules it again
            self._commit()

    def _join(self, result: W, after: Callable[[W], None] | None) -> asyncio.Future[None]:
        if self._committed is None:
            self._committed = asyncio.get_running_loop().create_future()
        self._listeners.append((lambda: after(result)) if after is not None else _nothing)
        return self._committed

    def _commit(self) -> None:
        listeners, committed = self._listeners, self._committed
        self._listeners, self._committed = [], None
        try:
            self._engine.commit()
        except Exception as exc:
            if committed is None:
                log.warning("could not end an empty write transaction: %s", exc)
            else:
                committed.set_exception(exc)
            return
        if committed is None:
            return
        for listener in listeners:
            try:
                listener()
            except Exception:  # a listener's bug must not undo what is committed
                log.exception("a commit listener failed")
        committed.set_result(None)


def _nothing() -> None:
    return None
