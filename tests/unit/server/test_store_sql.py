"""The SQL store on a real SQLite file: records, look-ups, queries, updates, migrations."""

from __future__ import annotations

import gc
import sqlite3
import threading
import warnings
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from server.store import Condition, Conflict, NewRecord, Query, Record
from server.store.interface import NotFoundError, StoreUnavailable
from server.store.migrations import MIGRATIONS, latest_version
from server.store.sql import SqlStore, sqlite_url

DEADLOCK_SECONDS = 10.0  # only reached if a thread hangs


@pytest.fixture
def announced() -> list[Record]:
    return []


@pytest.fixture
async def store(tmp_path: Path, announced: list[Record],
                database: str | None) -> AsyncIterator[SqlStore]:
    sql_store = await SqlStore.open(database or sqlite_url(tmp_path), on_change=announced.append)
    try:
        yield sql_store
    finally:
        await sql_store.close()


def widget(**overrides: Any) -> NewRecord:
    values: dict[str, Any] = {"type": "widget", "kind": "widget", "state": "active"}
    values.update(overrides)
    return NewRecord(**values)


async def ids(store: SqlStore, *conditions: Condition, **query: Any) -> list[int]:
    query.setdefault("types", ["widget"])
    return [r.id for r in await store.list(Query(conditions=conditions, **query))]


async def create_all(store: SqlStore, data: Sequence[dict[str, Any]]) -> list[int]:
    return [(await store.create(widget(data=d))).id for d in data]


def schema_versions(data_dir: Path) -> list[tuple[int, int]]:
    with sqlite3.connect(data_dir / "corral.db") as conn:
        return conn.execute("SELECT version, applied FROM corral_schema_version").fetchall()


# create and get


async def test_create_fills_id_uuid_created_and_version(store: SqlStore) -> None:
    record = await store.create(widget(name="w1", description="d", project_id=5,
                                       data={"size": 3, "labels": {"a": "b"}}))
    assert record.id >= 1
    assert record.version == 1
    assert len(record.uuid) == 36
    assert record.created > 1_600_000_000_000  # epoch milliseconds
    assert (record.name, record.description, record.project_id, record.account_id) == (
        "w1", "d", 5, None)
    assert (record.removed, record.transitioning, record.lookup_key) == (None, "no", None)
    assert record.data == {"size": 3, "labels": {"a": "b"}}


async def test_get_returns_what_create_returned(store: SqlStore) -> None:
    record = await store.create(widget(data={"x": [1, 2]}))
    assert await store.get(record.id) == record


async def test_get_of_a_missing_id_is_none(store: SqlStore) -> None:
    assert await store.get(12345) is None


async def test_records_of_all_types_share_one_number_sequence(store: SqlStore) -> None:
    first = await store.create(widget())
    second = await store.create(widget(type="gadget", kind="gadget"))
    assert second.id == first.id + 1


async def test_create_keeps_a_given_uuid(store: SqlStore) -> None:
    record = await store.create(widget(uuid="fixed-uuid"))
    assert record.uuid == "fixed-uuid"


async def test_get_by_lookup_finds_by_type_and_key(store: SqlStore) -> None:
    record = await store.create(widget(lookup_key="AK1"))
    assert await store.get_by_lookup("widget", "AK1") == record
    assert await store.get_by_lookup("gadget", "AK1") is None
    assert await store.get_by_lookup("widget", "AK2") is None


async def test_a_taken_lookup_key_of_the_same_type_is_a_conflict(
        store: SqlStore, announced: list[Record]) -> None:
    first = await store.create(widget(lookup_key="AK1"))
    with pytest.raises(Conflict, match="widget"):
        await store.create(widget(lookup_key="AK1"))
    assert announced == [first]


async def test_the_same_lookup_key_may_be_used_by_another_type_or_be_absent_many_times(
        store: SqlStore) -> None:
    await store.create(widget(lookup_key="AK1"))
    await store.create(widget(type="gadget", kind="gadget", lookup_key="AK1"))
    await store.create(widget())
    await store.create(widget())
    assert len(await ids(store, types=["widget", "gadget"])) == 4


async def test_a_taken_uuid_is_a_conflict(store: SqlStore) -> None:
    await store.create(widget(uuid="u1"))
    with pytest.raises(Conflict):
        await store.create(widget(uuid="u1"))


# list


async def test_list_returns_only_the_given_types_in_id_order(store: SqlStore) -> None:
    a = await store.create(widget())
    await store.create(widget(type="gadget", kind="gadget"))
    c = await store.create(widget())
    assert await ids(store) == [a.id, c.id]
    assert len(await ids(store, types=["widget", "gadget"])) == 3
    assert await ids(store, types=["nothing"]) == []


async def test_list_filters_on_columns(store: SqlStore) -> None:
    a = await store.create(widget(name="alpha", state="active"))
    b = await store.create(widget(name="beta", state="inactive"))
    c = await store.create(widget(name=None, state="active", kind="special"))
    assert await ids(store, Condition("name", "eq", "alpha")) == [a.id]
    assert await ids(store, Condition("state", "ne", "active")) == [b.id]
    assert await ids(store, Condition("name", "ne", "alpha")) == [b.id, c.id]  # null included
    assert await ids(store, Condition("kind", "eq", "special")) == [c.id]
    assert await ids(store, Condition("name", "null")) == [c.id]
    assert await ids(store, Condition("name", "notnull")) == [a.id, b.id]
    assert await ids(store, Condition("id", "eq", b.id, "int")) == [b.id]
    assert await ids(store, Condition("id", "eq", -1, "int")) == []


async def test_list_filters_on_data_strings(store: SqlStore) -> None:
    red, _blue, _none = await create_all(store, [{"color": "red"}, {"color": "blue"}, {}])
    assert await ids(store, Condition("color", "eq", "red")) == [red]
    assert await ids(store, Condition("color", "eq", "green")) == []
    assert await ids(store, Condition("color", "eq", "red"),
                     Condition("color", "eq", "blue")) == []  # conditions are ANDed


@pytest.mark.parametrize(("op", "value", "expected"), [
    ("eq", 10, [1]),
    ("ne", 10, [0, 2, 3]),      # the row without the key is "not 10"
    ("lt", 10, [0]),
    ("lte", 10, [0, 1]),
    ("gt", 10, [2]),
    ("gte", 10, [1, 2]),
    ("gt", 9, [1, 2]),          # compared as numbers: "9" > "10" as text
])
async def test_list_compares_data_integers_as_numbers(store: SqlStore, op: Any, value: int,
                                                      expected: list[int]) -> None:
    created = await create_all(store, [{"size": 9}, {"size": 10}, {"size": 100}, {}])
    assert await ids(store, Condition("size", op, value, "int")) == [created[i]
                                                                      for i in expected]


async def test_list_compares_data_floats_and_booleans(store: SqlStore) -> None:
    a, b, c = await create_all(store, [{"ratio": 0.25, "on": True},
                                       {"ratio": 2, "on": False}, {}])
    assert await ids(store, Condition("ratio", "gt", 0.5, "float")) == [b]
    assert await ids(store, Condition("ratio", "lte", 0.25, "float")) == [a]
    assert await ids(store, Condition("on", "eq", True, "bool")) == [a]
    assert await ids(store, Condition("on", "eq", False, "bool")) == [b]
    assert await ids(store, Condition("on", "ne", True, "bool")) == [b, c]


async def test_prefix_treats_underscore_and_percent_literally(store: SqlStore) -> None:
    codes = ["a_b", "axb", "a%c", "abc", "a_b_c", "xa_"]
    created = dict(zip(codes, await create_all(store, [{"code": c} for c in codes]),
                       strict=True))
    assert await ids(store, Condition("code", "prefix", "a_")) == [created["a_b"],
                                                                    created["a_b_c"]]
    assert await ids(store, Condition("code", "prefix", "a%")) == [created["a%c"]]
    assert await ids(store, Condition("code", "prefix", "ax")) == [created["axb"]]


async def test_prefix_on_a_column_is_escaped_too(store: SqlStore) -> None:
    a = await store.create(widget(name="web_1"))
    await store.create(widget(name="webx1"))
    assert await ids(store, Condition("name", "prefix", "web_")) == [a.id]


async def test_like_and_notlike_use_sql_wildcards(store: SqlStore) -> None:
    a_b, axb, abc, none = await create_all(store, [{"code": "a_b"}, {"code": "axb"},
                                                   {"code": "abc"}, {}])
    assert await ids(store, Condition("code", "like", "a_b")) == [a_b, axb]
    assert await ids(store, Condition("code", "like", "%b%")) == [a_b, axb, abc]
    assert await ids(store, Condition("code", "notlike", "a_b")) == [abc, none]


async def test_null_and_notnull_treat_a_missing_key_as_null(store: SqlStore) -> None:
    has, missing = await create_all(store, [{"color": "red"}, {"size": 1}])
    assert await ids(store, Condition("color", "null")) == [missing]
    assert await ids(store, Condition("color", "notnull")) == [has]


async def test_ne_on_data_includes_rows_without_the_key(store: SqlStore) -> None:
    _red, blue, none = await create_all(store, [{"color": "red"}, {"color": "blue"}, {}])
    assert await ids(store, Condition("color", "ne", "red")) == [blue, none]


async def test_sort_by_a_data_field_breaks_ties_by_id(store: SqlStore) -> None:
    a, b, c, d = await create_all(store, [{"rank": 2}, {"rank": 1}, {"rank": 2}, {"rank": 10}])
    assert await ids(store, sort="rank", sort_kind="int") == [b, a, c, d]
    assert await ids(store, sort="rank", sort_kind="int", descending=True) == [d, c, a, b]


async def test_sort_by_a_column(store: SqlStore) -> None:
    b = await store.create(widget(name="b"))
    a = await store.create(widget(name="a"))
    assert await ids(store, sort="name", sort_kind="string") == [a.id, b.id]
    assert await ids(store, descending=True) == [a.id, b.id]


async def test_limit_and_offset_page_through_the_order(store: SqlStore) -> None:
    created = await create_all(store, [{"n": i} for i in range(7)])
    assert await ids(store, limit=3) == created[:3]
    assert await ids(store, limit=3, offset=3) == created[3:6]
    assert await ids(store, limit=3, offset=6) == created[6:]
    assert await ids(store, limit=3, offset=9) == []


async def test_removed_since_keeps_live_records_and_recently_removed_ones(
        store: SqlStore) -> None:
    live = await store.create(widget())
    old, recent = await create_all(store, [{}, {}])
    await store.update(old, {"removed": 1_000})
    await store.update(recent, {"removed": 5_000})
    assert await ids(store, removed_since=5_000) == [live.id, recent]
    assert await ids(store, removed_since=1_000) == [live.id, old, recent]
    assert await ids(store, removed_since=5_001) == [live.id]
    assert await ids(store) == [live.id, old, recent]


async def test_project_and_account_filters(store: SqlStore) -> None:
    p1 = await store.create(widget(project_id=1))
    p2 = await store.create(widget(project_id=2))
    a7 = await store.create(widget(account_id=7))
    both = await store.create(widget(project_id=1, account_id=7))
    assert await ids(store, project_id=1) == [p1.id, both.id]
    assert await ids(store, project_id=2) == [p2.id]
    assert await ids(store, account_id=7) == [a7.id, both.id]
    assert await ids(store, project_id=1, account_id=7) == [both.id]


# update


async def test_update_merges_data_and_sets_columns(store: SqlStore) -> None:
    record = await store.create(widget(data={"a": 1, "b": {"x": 1}}))
    updated = await store.update(record.id, {"state": "inactive", "name": "n"},
                                 {"b": {"y": 2}, "c": 3})
    assert updated.data == {"a": 1, "b": {"y": 2}, "c": 3}
    assert (updated.state, updated.name) == ("inactive", "n")
    assert updated.version == record.version + 1
    assert (updated.id, updated.uuid, updated.created) == (record.id, record.uuid,
                                                           record.created)
    assert await store.get(record.id) == updated


async def test_update_with_a_none_value_deletes_the_key(store: SqlStore) -> None:
    record = await store.create(widget(data={"a": 1, "b": 2}))
    updated = await store.update(record.id, {}, {"a": None, "missing": None})
    assert updated.data == {"b": 2}


async def test_update_with_the_expected_version_succeeds(store: SqlStore) -> None:
    record = await store.create(widget())
    updated = await store.update(record.id, {"name": "x"}, expected_version=record.version)
    assert updated.name == "x"


async def test_update_with_a_stale_version_is_a_conflict_and_changes_nothing(
        store: SqlStore, announced: list[Record]) -> None:
    record = await store.create(widget(data={"a": 1}))
    current = await store.update(record.id, {"name": "first"})
    with pytest.raises(Conflict, match="changed by someone else"):
        await store.update(record.id, {"name": "second"}, {"a": 2},
                           expected_version=record.version)
    assert await store.get(record.id) == current
    assert announced == [record, current]


async def test_update_with_the_expected_state_ignores_other_writes_but_not_a_new_state(
        store: SqlStore) -> None:
    record = await store.create(widget(data={"a": 1}))
    await store.update(record.id, {}, {"fact": 2})  # a background write: the state holds
    moved = await store.update(record.id, {"state": "inactive"}, expected_states={"active"})
    assert moved.state == "inactive" and moved.data == {"a": 1, "fact": 2}
    with pytest.raises(Conflict, match="is inactive now, no longer active"):
        await store.update(record.id, {"state": "removed"}, expected_states={"active"})
    assert await store.get(record.id) == moved


async def test_update_of_a_missing_record_is_not_found(store: SqlStore) -> None:
    with pytest.raises(NotFoundError, match="12345"):
        await store.update(12345, {"name": "x"})


async def test_update_of_an_unknown_column_is_refused(store: SqlStore) -> None:
    record = await store.create(widget())
    with pytest.raises(ValueError, match="not record columns"):
        await store.update(record.id, {"colour": "red"})


async def test_update_to_a_taken_lookup_key_is_a_conflict(store: SqlStore) -> None:
    await store.create(widget(lookup_key="k1"))
    other = await store.create(widget(lookup_key="k2"))
    with pytest.raises(Conflict):
        await store.update(other.id, {"lookup_key": "k1"})
    assert (await store.get(other.id)) == other


async def test_every_create_and_update_is_announced_once_with_the_new_record(
        store: SqlStore, announced: list[Record]) -> None:
    created = await store.create(widget())
    first = await store.update(created.id, {"name": "a"})
    second = await store.update(created.id, {}, {"k": "v"})
    other = await store.create(widget(type="gadget", kind="gadget"))
    assert announced == [created, first, second, other]


# migrations


async def test_reopening_keeps_the_data_and_does_not_migrate_again(tmp_path: Path) -> None:
    store = await SqlStore.open(sqlite_url(tmp_path))
    record = await store.create(widget(lookup_key="k", data={"a": 1}))
    await store.close()
    versions = schema_versions(tmp_path)
    assert [v for v, _ in versions] == [number for number, _, _ in MIGRATIONS]

    reopened = await SqlStore.open(sqlite_url(tmp_path))
    try:
        assert await reopened.get(record.id) == record
        assert await reopened.get_by_lookup("widget", "k") == record
        assert (await reopened.create(widget())).id == record.id + 1
    finally:
        await reopened.close()
    assert schema_versions(tmp_path) == versions


async def open_refused(data_dir: Path) -> tuple[str, list[str]]:
    """Open a database one schema version ahead of the code, which must fail.

    Returns the RuntimeError's message and the ResourceWarnings raised when whatever the failed
    ``open`` left behind is garbage-collected (collected here, so a leak stays in this test).
    """
    store = await SqlStore.open(sqlite_url(data_dir))
    await store.close()
    with sqlite3.connect(data_dir / "corral.db") as conn:
        conn.execute("INSERT INTO corral_schema_version (version, applied) VALUES (99, 0)")
    message = ""
    threads_before = set(threading.enumerate())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            await SqlStore.open(sqlite_url(data_dir))
        except RuntimeError as exc:
            message = str(exc)
            exc.__traceback__ = None  # its frames hold the engine
        gc.collect()
    # A collected aiosqlite connection stops its worker thread, which then calls back into this
    # event loop: let it finish while the loop is open, or it fails in a later test.
    for thread in set(threading.enumerate()) - threads_before:
        thread.join(timeout=DEADLOCK_SECONDS)
    return message, [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


async def test_a_database_from_a_newer_corral_is_refused(tmp_path: Path) -> None:
    message, _ = await open_refused(tmp_path)
    assert message == ("the database is at schema version 99, newer than this Corral "
                       f"({latest_version()}); upgrade Corral")


async def test_a_refused_database_leaves_no_connection_open(tmp_path: Path) -> None:
    _, leaks = await open_refused(tmp_path)
    assert leaks == []


# one server process per SQLite database


async def test_a_second_owner_of_a_sqlite_database_is_refused(tmp_path: Path) -> None:
    first = await SqlStore.open(sqlite_url(tmp_path))
    try:
        with pytest.raises(StoreUnavailable, match="in use by another corral-server"):
            await SqlStore.open(sqlite_url(tmp_path))
        reader = await SqlStore.open(sqlite_url(tmp_path), owner=False)
        await reader.close()
    finally:
        await first.close()
    again = await SqlStore.open(sqlite_url(tmp_path))  # let go on close
    await again.close()
