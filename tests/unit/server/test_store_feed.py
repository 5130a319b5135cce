"""The change feed: every change once, in order, whoever reads and however slowly; a reader
behind the log's retention is told so."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.feed import ChangeFeed, ResumeTooOld
from server.store import Change, NewRecord
from server.store.sql import SqlStore, sqlite_url
from tests.support.timing import seconds


@pytest.fixture
async def store(tmp_path: Path, database: str | None) -> AsyncIterator[SqlStore]:
    feeds: list[ChangeFeed] = []
    sql_store = await SqlStore.open(database or sqlite_url(tmp_path),
                                    on_commit=lambda entries: [f.notify(entries) for f in feeds])
    sql_store.feeds = feeds  # type: ignore[attr-defined]
    try:
        yield sql_store
    finally:
        await sql_store.close()


async def started(store: SqlStore, **options: int) -> ChangeFeed:
    feed = ChangeFeed(store, prune_interval=3600, **options)  # type: ignore[arg-type]
    store.feeds.append(feed)  # type: ignore[attr-defined]
    await feed.start()
    return feed


async def widgets(store: SqlStore, count: int) -> list[int]:
    return [(await store.create(NewRecord(type="widget", kind="widget", state="active",
                                          name=f"w{i}"))).id for i in range(count)]


async def read(feed: ChangeFeed, since: int | None, count: int) -> list[Change]:
    cursor = feed.follow(since)
    out: list[Change] = []
    async with asyncio.timeout(seconds(10)):
        while len(out) < count:
            out.extend(await cursor.next_batch())
    return out


async def test_a_reader_gets_every_change_after_its_start_in_order(store: SqlStore) -> None:
    feed = await started(store)
    try:
        cursor = feed.follow()
        ids = await widgets(store, 5)
        got: list[Change] = []
        async with asyncio.timeout(seconds(10)):
            while len(got) < 5:
                got.extend(await cursor.next_batch())
        assert [c.record.id for c in got] == ids
        assert [c.kind for c in got] == ["create"] * 5
        assert [c.seq for c in got] == sorted({c.seq for c in got})
    finally:
        await feed.stop()


async def test_a_reader_far_behind_the_window_catches_up_from_the_log(store: SqlStore) -> None:
    feed = await started(store, window=10)
    try:
        start = feed.position
        ids = await widgets(store, 120)
        await feed.catch_up()
        got = await read(feed, start, 120)
        assert [c.record.id for c in got] == ids  # nothing dropped, nothing twice
    finally:
        await feed.stop()


async def test_an_update_is_logged_with_the_fields_it_changed_and_the_record_after_it(
        store: SqlStore) -> None:
    feed = await started(store)
    try:
        (record_id,) = await widgets(store, 1)
        await feed.catch_up()
        since = feed.position
        await store.update(record_id, {"state": "inactive"}, {"size": 3})
        (change,) = await read(feed, since, 1)
        assert change.kind == "update" and set(change.fields) == {"state", "size"}
        assert change.record.state == "inactive" and change.record.data == {"size": 3}
        assert change.actor == "system"
    finally:
        await feed.stop()


async def test_entries_handed_over_at_commit_equal_the_log(store: SqlStore) -> None:
    feed = await started(store)
    try:
        since = feed.position
        (record_id,) = await widgets(store, 1)
        await store.update(record_id, {"state": "inactive"}, {"size": 3, "tags": ("a", 1)})
        handed = await read(feed, since, 2)
        assert handed == await store.changes_after(since)
    finally:
        await feed.stop()


async def test_commits_the_feed_was_not_told_of_are_read_in_order(
        store: SqlStore, tmp_path: Path, database: str | None) -> None:
    # A writer this feed hears nothing from (another server process, on PostgreSQL) leaves a
    # gap before the next commit it does hear of: that commit must wait behind the gap.
    feed = await started(store)
    try:
        since = feed.position
        other = await SqlStore.open(database or sqlite_url(tmp_path), owner=False)
        try:
            unseen = (await other.create(NewRecord(type="widget", kind="widget",
                                                   state="active", name="unseen"))).id
        finally:
            await other.close()
        (seen,) = await widgets(store, 1)
        got = await read(feed, since, 2)
        assert [c.record.id for c in got] == [unseen, seen]
    finally:
        await feed.stop()


async def test_resuming_from_before_the_retention_is_refused(store: SqlStore) -> None:
    await widgets(store, 30)
    assert await store.prune_changes(keep=10, older_than_ms=2**62) == 20
    assert await store.pruned_through() == 20
    feed = await started(store)  # a new process: what was pruned is gone for good
    try:
        with pytest.raises(ResumeTooOld):
            await feed.follow(5).next_batch()
        kept = await read(feed, 20, 10)
        assert [c.seq for c in kept] == list(range(21, 31))
    finally:
        await feed.stop()


async def test_pruning_keeps_every_entry_younger_than_the_age_given(store: SqlStore) -> None:
    await widgets(store, 30)
    assert await store.prune_changes(keep=10, older_than_ms=0) == 0
    assert await store.pruned_through() == 0
