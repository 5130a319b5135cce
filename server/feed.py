"""The change log, followed: every reader of changes (the resource change stream, the engine's
loops) reads here, from the sequence number it last saw, and never loses a change.

The entries a transaction of this process just committed go straight into a window of recent
changes when they follow the newest entry already there; anything else (the commits of other
server processes on PostgreSQL, found every ``poll_interval``, or a gap) one tailer task per
process reads from the store. A reader takes its next changes from the window, or, when it
has fallen behind the window, from the log in the store itself. Nothing is dropped for being
slow; only a reader that falls behind the log's retention (``ResumeTooOld``) has to start over
from the current state.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from server.store import Change, Store

log = logging.getLogger(__name__)

# Recent changes kept in memory for readers (each holds its record): a reader further
# behind reads the log in the store instead.
WINDOW = 2_000
BATCH = 500


class ResumeTooOld(Exception):
    """The changes after the requested sequence number are no longer kept."""


class FeedClosed(Exception):
    """The feed stopped (the server is shutting down)."""


class ChangeFeed:
    def __init__(self, store: Store, *, window: int = WINDOW,
                 poll_interval: float | None = None, keep: int = 100_000,
                 min_age_s: float = 600.0, prune_interval: float = 60.0) -> None:
        self._store = store
        self._window = window
        self._poll = poll_interval
        self._keep, self._min_age_s, self._prune_interval = keep, min_age_s, prune_interval
        self._seqs: list[int] = []
        self._changes: list[Change] = []
        # Every change after ``_floor`` up to ``_cursor`` is in the window.
        self._floor = 0
        self._cursor = 0
        # The newest sequence number this process committed (its own writes, at once).
        self.committed = 0
        self._wake = asyncio.Event()
        self._arrived = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._reading = asyncio.Lock()  # one reader of the log at a time: no entry twice

    @property
    def position(self) -> int:
        """The newest sequence number this process has read from the log."""
        return self._cursor

    async def start(self) -> None:
        self._cursor = self._floor = await self._store.last_seq()
        self.committed = max(self.committed, self._cursor)
        self._tasks = [asyncio.create_task(self._tail()), asyncio.create_task(self._prune())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._arrived.set()  # wake readers so that they notice the feed is gone

    def notify(self, entries: Sequence[Change]) -> None:
        """A transaction of this process committed these change-log entries (in order)."""
        last = entries[-1].seq
        self.committed = max(self.committed, last)
        if last <= self._cursor:
            return
        # Sequence numbers follow commit order, so entries that start right after the
        # cursor leave nothing unread before them; a read under way may be fetching them.
        if entries[0].seq == self._cursor + 1 and not self._reading.locked():
            self._add(list(entries))
        else:
            self._wake.set()

    def follow(self, since: int | None = None) -> Cursor:
        """A reader of every change after ``since`` (None: after the newest one read)."""
        return Cursor(self, self._cursor if since is None else since)

    async def consume(self, since: int, on_batch: Callable[[list[Change]], Awaitable[None]],
                      on_restart: Callable[[], Awaitable[None]]) -> None:
        """Hand every batch of changes after ``since`` to ``on_batch``, in order, until the
        feed closes. A reader that fell behind the log's retention starts again from now,
        after ``on_restart`` (which must look at everything again: changes were missed)."""
        cursor = self.follow(since)
        while True:
            try:
                batch = await cursor.next_batch()
            except FeedClosed:
                return
            except ResumeTooOld:
                cursor = self.follow()
                await on_restart()
                continue
            await on_batch(batch)

    def ready_after(self, seq: int) -> list[Change]:
        """The changes after ``seq`` the window already holds (a batch at most), at once."""
        return self._from_window(seq) or []

    async def catch_up(self) -> None:
        """Read everything committed so far into the window (tests and shutdown)."""
        await self._read_new()

    # --- the tailer ---------------------------------------------------------------------

    async def _tail(self) -> None:
        while True:
            if self._poll is None:
                await self._wake.wait()
            else:
                # Not wait_for: on 3.11 it can swallow a cancellation that arrives as the
                # event is set, and the feed would never stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll):
                        await self._wake.wait()
            self._wake.clear()
            try:
                await self._read_new()
            except Exception:
                log.exception("could not read the change log; retrying")
                await asyncio.sleep(1.0)
                self._wake.set()

    async def _read_new(self) -> None:
        async with self._reading:
            await self._read_batches()

    async def _read_batches(self) -> None:
        while True:
            batch = await self._store.changes_after(self._cursor, BATCH)
            if not batch:
                return
            self._add(batch)
            if len(batch) < BATCH:
                return

    def _add(self, batch: list[Change]) -> None:
        """Changes that follow the cursor, into the window; wake the readers."""
        self._seqs.extend(c.seq for c in batch)
        self._changes.extend(batch)
        self._cursor = batch[-1].seq
        if len(self._seqs) > 2 * self._window:
            cut = len(self._seqs) - self._window
            self._floor = self._seqs[cut - 1]
            del self._seqs[:cut], self._changes[:cut]
        arrived, self._arrived = self._arrived, asyncio.Event()
        arrived.set()

    async def _prune(self) -> None:
        while True:
            await asyncio.sleep(self._prune_interval)
            try:
                cutoff = int((time.time() - self._min_age_s) * 1000)
                gone = await self._store.prune_changes(self._keep, cutoff)
                if gone:
                    log.debug("pruned %d change-log entries", gone)
            except Exception:
                log.exception("could not prune the change log")

    # --- for cursors --------------------------------------------------------------------

    def _from_window(self, after: int) -> list[Change] | None:
        """Changes after ``after`` held in the window, or None if it does not reach back."""
        if after < self._floor:
            return None
        start = bisect.bisect_right(self._seqs, after)
        return self._changes[start:start + BATCH]


class Cursor:
    """One reader's place in the change log."""

    def __init__(self, feed: ChangeFeed, seq: int) -> None:
        self._feed = feed
        self.seq = seq

    async def next_batch(self) -> list[Change]:
        """The next changes in order (waiting for some); raise ResumeTooOld if they are gone."""
        while True:
            arrived = self._feed._arrived
            batch = self._feed._from_window(self.seq)
            if batch is None:
                batch = await self._from_store()
            if batch:
                self.seq = batch[-1].seq
                return batch
            if not self._feed._tasks:
                raise FeedClosed("the server is shutting down")
            await arrived.wait()

    async def _from_store(self) -> list[Change]:
        store = self._feed._store
        if self.seq < await store.pruned_through():
            raise ResumeTooOld(f"changes after {self.seq} are no longer kept")
        return await store.changes_after(self.seq, BATCH)
