"""SQLite's write transactions of one process commit in groups: fewer commits than writes, no
write acknowledged before it is durable, a failed member undone alone, a failed commit failing
its whole group, and listeners told in order."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from server.store import Change, NewRecord, Transaction
from server.store.inline import InlineEngine
from server.store.sql import SqlStore, sqlite_url


class Heard:
    def __init__(self) -> None:
        self.seqs: list[int] = []

    def __call__(self, entries: Sequence[Change]) -> None:
        self.seqs.extend(e.seq for e in entries)


@pytest.fixture
def heard() -> Heard:
    return Heard()


@pytest.fixture
async def store(tmp_path: Path, heard: Heard) -> AsyncIterator[SqlStore]:
    opened = await SqlStore.open(sqlite_url(tmp_path), on_commit=heard)
    try:
        yield opened
    finally:
        await opened.close()


def _engine(store: SqlStore) -> InlineEngine:
    engine = store._engine
    assert isinstance(engine, InlineEngine)
    return engine


def widget(name: str) -> NewRecord:
    return NewRecord(type="widget", kind="widget", state="active", name=name)


def names_on_disk(data_dir: Path) -> set[str]:
    """What another connection sees: only committed rows."""
    with sqlite3.connect(data_dir / "corral.db") as conn:
        return {row[0] for row in conn.execute("SELECT name FROM resource WHERE type='widget'")}


async def test_concurrent_writes_share_commits_and_each_is_durable_when_it_returns(
        store: SqlStore, tmp_path: Path) -> None:
    commits: list[str] = []
    async with _engine(store).savepoint() as conn:
        conn.dbapi.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT"
                                      else None)
    _engine(store).commit()
    commits.clear()
    seen_on_return: list[bool] = []

    async def write(n: int) -> None:
        await store.create(widget(f"w{n}"))
        seen_on_return.append(f"w{n}" in names_on_disk(tmp_path))

    await asyncio.gather(*(write(n) for n in range(30)))
    assert all(seen_on_return) and len(seen_on_return) == 30
    assert 1 <= len(commits) < 30


async def test_a_failing_member_is_undone_alone(store: SqlStore, tmp_path: Path) -> None:
    async def failing(tx: Transaction) -> None:
        await tx.create(widget("bad"))
        raise RuntimeError("the member's own failure")

    async def good(n: int) -> None:
        await store.create(widget(f"good{n}"))

    results = await asyncio.gather(good(1), store.transact(failing), good(2),
                                   return_exceptions=True)
    assert isinstance(results[1], RuntimeError)
    assert names_on_disk(tmp_path) == {"good1", "good2"}


async def test_a_failed_commit_fails_its_whole_group_and_nothing_is_announced(
        store: SqlStore, tmp_path: Path, heard: Heard, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = _engine(store)
    real_commit = engine.commit
    calls = 0

    def failing_once() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            engine._writer.dbapi.execute("ROLLBACK")  # type: ignore[union-attr]
            raise sqlite3.OperationalError("disk I/O error")
        real_commit()

    monkeypatch.setattr(engine, "commit", failing_once)
    results = await asyncio.gather(*(store.create(widget(f"lost{n}")) for n in range(5)),
                                   return_exceptions=True)
    assert all(isinstance(r, sqlite3.OperationalError) for r in results)
    assert names_on_disk(tmp_path) == set() and heard.seqs == []
    made = await store.create(widget("after"))  # the store goes on
    assert names_on_disk(tmp_path) == {"after"} and await store.get(made.id) == made


async def test_listeners_hear_of_every_write_in_commit_order(store: SqlStore,
                                                            heard: Heard) -> None:
    await asyncio.gather(*(store.create(widget(f"w{n}")) for n in range(20)))
    assert len(heard.seqs) == 20 and heard.seqs == sorted(heard.seqs)
    assert heard.seqs == [c.seq for c in await store.changes_after(0)]


async def test_a_failing_write_alone_leaves_no_transaction_open(store: SqlStore) -> None:
    async def failing(tx: Transaction) -> None:
        await tx.create(widget("bad"))
        raise RuntimeError("alone")

    with pytest.raises(RuntimeError):
        await store.transact(failing)
    writer = _engine(store)._writer
    assert writer is not None and not writer.dbapi.in_transaction
