"""Schema migrations on every backend: each applied once and recorded once, also when two
stores open a fresh database at the same time; SQLite has one owner process and any number
of readers; migration 002 fills the indexed columns from the data of rows written before it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import JSON, BigInteger, Column, Connection, Integer, MetaData, String, Table, text
from sqlalchemy.ext.asyncio import create_async_engine

from server.store import Condition, NewRecord, Query, StoreUnavailable, tables
from server.store.migrations import MIGRATIONS, current_version
from server.store.sql import SqlStore, sqlite_url
from server.store.urls import connect_options
from tests.support.databases import POSTGRESQL, backends
from tests.support.databases import test_database as fresh_database

T = TypeVar("T")
EVERY_MIGRATION = [number for number, _, _ in MIGRATIONS]


@pytest.fixture(params=backends())
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a fresh, empty database: a SQLite file, or a PostgreSQL schema of its own."""
    async with fresh_database(request.param) as database:
        yield database or sqlite_url(tmp_path)


async def on_connection(url: str, work: Callable[[Connection], T]) -> T:
    """``work`` on a plain connection to the database at ``url``, in one transaction
    (creating the PostgreSQL schema first, as ``SqlStore.open`` would)."""
    driver_url, connect_args, schema = connect_options(url)
    engine = create_async_engine(driver_url, connect_args=connect_args)
    try:
        async with engine.begin() as conn:
            if schema is not None:
                await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            return await conn.run_sync(work)
    finally:
        await engine.dispose()


def recorded_versions(conn: Connection) -> list[int]:
    return list(conn.execute(text(
        "SELECT version FROM corral_schema_version ORDER BY version")).scalars())


async def test_opening_a_fresh_database_applies_every_migration_once(url: str) -> None:
    store = await SqlStore.open(url)
    await store.close()
    first = await on_connection(url, recorded_versions)
    again = await SqlStore.open(url)  # nothing left to apply
    await again.close()

    assert first == EVERY_MIGRATION
    assert await on_connection(url, recorded_versions) == EVERY_MIGRATION
    assert await on_connection(url, current_version) == EVERY_MIGRATION[-1]


async def _open_two_at_once_and_use_both(url: str) -> None:
    opened = await asyncio.gather(SqlStore.open(url), SqlStore.open(url),
                                  return_exceptions=True)
    stores = [s for s in opened if isinstance(s, SqlStore)]
    failed = [e for e in opened if isinstance(e, BaseException)]
    try:
        if failed:  # the store that did open is closed all the same
            raise failed[0]
        for n, store in enumerate(stores):
            made = await store.create(NewRecord(type="widget", kind="widget", state="active",
                                                name=f"w{n}", data={"hostId": n}))
            assert (await store.get(made.id)) == made
        for store in stores:
            found = await store.list(Query(types=["widget"]))
            assert sorted(w.name or "" for w in found) == ["w0", "w1"]
    finally:
        for store in stores:
            await store.close()


POSTGRESQL_ONLY = pytest.mark.skipif(POSTGRESQL not in backends(),
                                     reason="CORRAL_TEST_POSTGRES names no PostgreSQL server")


@POSTGRESQL_ONLY
async def test_two_stores_opening_an_existing_empty_postgresql_schema_at_once_migrate_it_once(
        ) -> None:
    async with fresh_database(POSTGRESQL) as url:
        assert url is not None
        await on_connection(url, lambda conn: None)  # the schema exists, with no table

        await _open_two_at_once_and_use_both(url)

        assert await on_connection(url, recorded_versions) == EVERY_MIGRATION


@POSTGRESQL_ONLY
async def test_two_stores_opening_a_fresh_postgresql_schema_at_once_migrate_it_once() -> None:
    async with fresh_database(POSTGRESQL) as url:
        assert url is not None

        await _open_two_at_once_and_use_both(url)

        assert await on_connection(url, recorded_versions) == EVERY_MIGRATION


async def test_a_second_owner_of_a_sqlite_database_is_refused_but_a_reader_may_open_it(
        tmp_path: Path) -> None:
    owner = await SqlStore.open(sqlite_url(tmp_path))
    try:
        made = await owner.create(NewRecord(type="widget", kind="widget", state="active"))
        with pytest.raises(StoreUnavailable, match="in use by another corral-server"):
            await SqlStore.open(sqlite_url(tmp_path))
        reader = await SqlStore.open(sqlite_url(tmp_path), owner=False)
        try:
            assert await reader.get(made.id) == made
        finally:
            await reader.close()
    finally:
        await owner.close()


# --- migration 002 on rows written before it -----------------------------------------------

# The resource table as migration 001 left it, for writing a row of that time.
_v1 = MetaData()
_RESOURCE_V1 = Table(
    "resource", _v1,
    Column("id", Integer, primary_key=True),
    Column("type", String(64)), Column("kind", String(64)), Column("uuid", String(64)),
    Column("state", String(64)), Column("created", BigInteger),
    Column("transitioning", String(8)), Column("data", JSON), Column("version", Integer),
)


def version_1_with_rows(rows: list[dict[str, Any]]) -> Callable[[Connection], None]:
    """A database at schema version 1 (only the first migration), holding ``rows``' data."""

    def build(conn: Connection) -> None:
        tables.schema_version.create(conn)
        number, _, first = MIGRATIONS[0]
        first(conn)
        conn.execute(tables.schema_version.insert().values(version=number, applied=0))
        for n, data in enumerate(rows):
            conn.execute(_RESOURCE_V1.insert().values(
                type="container", kind="container", uuid=f"uuid-{n}", state="stopped",
                created=0, transitioning="no", data=data, version=1))

    return build


async def test_migration_002_fills_host_and_external_id_from_the_data_of_older_rows(
        url: str) -> None:
    await on_connection(url, version_1_with_rows([
        {"hostId": 7, "externalId": "abc"},
        {"hostId": "7", "externalId": 12},  # not an int / a string: left out of the columns
        {},
    ]))
    assert await on_connection(url, current_version) == 1

    store = await SqlStore.open(url)
    try:
        by_host = await store.list(Query(types=["container"],
                                         conditions=[Condition("hostId", "eq", 7, "int")]))
        by_external = await store.list(Query(types=["container"],
                                             conditions=[Condition("externalId", "eq", "abc")]))
        without_host = await store.list(Query(types=["container"],
                                              conditions=[Condition("hostId", "null")]))
    finally:
        await store.close()

    assert [r.uuid for r in by_host] == ["uuid-0"]
    assert [r.uuid for r in by_external] == ["uuid-0"]
    assert sorted(r.uuid for r in without_host) == ["uuid-1", "uuid-2"]
    assert await on_connection(url, recorded_versions) == EVERY_MIGRATION


async def test_migration_002_does_not_take_a_boolean_host_id_for_a_host(url: str) -> None:
    await on_connection(url, version_1_with_rows([{"hostId": True}]))

    store = await SqlStore.open(url)
    try:
        found = await store.list(Query(types=["container"],
                                       conditions=[Condition("hostId", "eq", 1, "int")]))
    finally:
        await store.close()

    assert found == []
