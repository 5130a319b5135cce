"""The databases tests run on: SQLite always; PostgreSQL where ``CORRAL_TEST_POSTGRES`` names a
server (``scripts/test`` starts one and sets it). Each test gets a schema of its own there,
dropped afterwards. With ``CORRAL_TEST_REQUIRE_POSTGRES=1`` (CI), a missing server is an error,
not a quietly smaller test run."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator

import asyncpg

from server.store.urls import engine_url

SQLITE = "sqlite"
POSTGRESQL = "postgresql"


def postgres_base() -> str | None:
    url = os.environ.get("CORRAL_TEST_POSTGRES") or None
    if url is None and os.environ.get("CORRAL_TEST_REQUIRE_POSTGRES") == "1":
        raise RuntimeError("CORRAL_TEST_REQUIRE_POSTGRES=1 but CORRAL_TEST_POSTGRES is not set")
    return url


def backends() -> list[str]:
    return [SQLITE, POSTGRESQL] if postgres_base() else [SQLITE]


@contextlib.asynccontextmanager
async def test_database(backend: str) -> AsyncIterator[str | None]:
    """The ``--db`` URL of a fresh database (None: the data dir's SQLite file)."""
    if backend == SQLITE:
        yield None
        return
    base = postgres_base()
    assert base is not None
    schema = f"t_{uuid.uuid4().hex[:16]}"
    try:
        yield engine_url(f"{base}?schema={schema}")
    finally:
        conn = await asyncpg.connect(base)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
