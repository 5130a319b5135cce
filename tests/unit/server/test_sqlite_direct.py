"""The store's prebuilt statements run on sqlite3 directly: the same rows, errors and writes as
SQLAlchemy's own execution, and updates that set only what changed."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import IntegrityError

from server.store import NewRecord
from server.store import statements as sql
from server.store.inline import InlineEngine
from server.store.sql import SqlStore, sqlite_url
from server.store.sqlite_direct import DirectStatement


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    opened = await SqlStore.open(sqlite_url(tmp_path))
    try:
        yield opened
    finally:
        await opened.close()


def _engine(store: SqlStore) -> InlineEngine:
    engine = store._engine
    assert isinstance(engine, InlineEngine)
    return engine


async def _both(store: SqlStore, statement: Any, params: dict[str, Any]) -> tuple[Any, Any]:
    """The rows of ``statement`` run directly and through SQLAlchemy, as plain tuples."""
    async with _engine(store).connect() as conn:
        direct = (await conn.execute(statement, params)).all()
        through = conn.sync_connection.execute(statement, params).all()
    return [tuple(r) for r in direct], [tuple(r) for r in through]


async def test_reads_give_what_sqlalchemy_gives(store: SqlStore) -> None:
    made = await store.create(NewRecord(type="widget", kind="widget", state="active",
                                        lookup_key="k1", data={"n": 1, "tags": ["a"]}))
    await store.update(made.id, {"state": "inactive"}, {"n": 2.5})
    cases = [(sql.GET, {"id": made.id}), (sql.BY_UUID, {"uuid": made.uuid}),
             (sql.BY_LOOKUP, {"type": "widget", "key": "k1"}), (sql.LAST_SEQ, {}),
             (sql.CHANGES_AFTER, {"seq": 0, "lim": 10})]
    for statement, params in cases:
        direct, through = await _both(store, statement, params)
        assert direct == through and direct, statement


async def test_a_direct_row_reads_by_name_and_mapping(store: SqlStore) -> None:
    made = await store.create(NewRecord(type="widget", kind="widget", state="active",
                                        data={"n": 1}))
    async with _engine(store).connect() as conn:
        row = (await conn.execute(sql.GET, {"id": made.id})).first()
    assert row.state == "active" and row._mapping["data"] == {"n": 1}


async def test_a_taken_key_raises_sqlalchemys_integrity_error_and_leaves_no_transaction(
        store: SqlStore) -> None:
    await store.create(NewRecord(type="widget", kind="widget", state="active", uuid="u-1"))
    with pytest.raises(IntegrityError):
        async with _engine(store).begin() as conn:
            values = {c.name: None for c in sql.tables.resource.c if c.name != "id"}
            values.update(type="widget", kind="widget", uuid="u-1", state="active",
                          created=1, transitioning="no", data={}, version=1)
            await conn.execute(sql.INSERT, values)
    # The failed transaction was rolled back: the next write begins and commits.
    again = await store.create(NewRecord(type="widget", kind="widget", state="active"))
    assert (await store.get(again.id)) == again


async def test_an_update_sets_only_the_columns_that_changed(store: SqlStore) -> None:
    made = await store.create(NewRecord(type="container", kind="container", state="creating",
                                        name="web", data={"hostId": 4, "image": "busybox"}))
    statements: list[str] = []
    async with _engine(store).begin() as conn:
        conn.dbapi.set_trace_callback(statements.append)
    try:
        updated = await store.update(made.id, {"state": "starting", "name": "web"},
                                     {"image": "busybox"})
        moved = await store.update(made.id, {}, {"hostId": 7})
    finally:
        async with _engine(store).begin() as conn:
            conn.dbapi.set_trace_callback(None)
    updates = [s for s in statements if s.startswith("UPDATE")]
    assert len(updates) == 2
    set_columns = [sorted(re.findall(r"(?:^|, )(\w+)=", u.split(" SET ")[1].split(" WHERE ")[0]))
                   for u in updates]
    assert set_columns == [["state", "version"], ["data", "host_id", "version"]]
    assert updated.state == "starting" and moved.data["hostId"] == 7
    assert await store.get(made.id) == moved


def test_a_statement_with_a_list_expanded_at_run_time_is_refused() -> None:
    dialect = create_engine("sqlite://").dialect
    statement = sql.select_for(sql.Query(types=["a", "b"]))[0]
    with pytest.raises(ValueError, match="not a statement for direct use"):
        DirectStatement(statement, dialect)
