"""SQLite, called in line: a synchronous SQLAlchemy engine behind the small part of the
asyncio engine's interface that the SQL store uses.

SQLite runs in this process: an indexed read or a write in WAL mode takes tens of
microseconds, less than the round trip to a database thread that an asyncio driver needs for
every statement (measured here: about 0.1 ms a hop, and a transaction makes several). So the
store calls SQLite directly from the event loop, and a transaction runs from BEGIN to COMMIT
without yielding to other tasks. One server process owns a SQLite database (the data dir's
lock), so a write never waits for another process's lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection
from sqlalchemy import Engine as SyncEngine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.store.sqlite_direct import DirectStatements, Known, run_sql


class InlineConnection:
    """An ``AsyncConnection`` look-alike over a synchronous connection: the store's prebuilt
    statements run on the driver itself (``sqlite_direct``), the rest through SQLAlchemy."""

    def __init__(self, conn: Connection, direct: DirectStatements) -> None:
        self.sync_connection = conn
        self.dbapi: Any = conn.connection.dbapi_connection
        self._direct = direct

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        prebuilt = self._direct.get(statement)
        if prebuilt is not None:
            return prebuilt.run(self.dbapi, parameters)
        return self.sync_connection.execute(statement, parameters)

    async def run_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(self.sync_connection, *args)

    @contextlib.asynccontextmanager
    async def begin_nested(self) -> AsyncIterator[None]:
        with self.sync_connection.begin_nested():
            yield


class InlineEngine:
    """An ``AsyncEngine`` look-alike over a synchronous engine, for the SQL store.

    It keeps two connections open for its whole life, both in SQLite's autocommit mode: one
    for reads (each a single statement, atomic by itself, so each sees the latest commit) and
    one for writes, whose transactions it begins and ends itself: ``begin()`` is a write
    transaction, BEGIN IMMEDIATE (the write lock at once, so two processes never both read
    and then fail to upgrade) to COMMIT. The
    store runs one write transaction at a time, so neither connection is ever shared by two
    tasks at once."""

    def __init__(self, engine: SyncEngine, direct: Known,
                 lock: OwnerLock | None = None) -> None:
        self.sync_engine = engine
        self.dialect = engine.dialect
        self._lock = lock
        self._direct = DirectStatements(engine.dialect, direct)
        self._reader: InlineConnection | None = None
        self._writer: InlineConnection | None = None

    def _open(self) -> InlineConnection:
        conn = self.sync_engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return InlineConnection(conn, self._direct)

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[InlineConnection]:
        if self._reader is None:
            self._reader = self._open()
        yield self._reader

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[InlineConnection]:
        if self._writer is None:
            self._writer = self._open()
        conn = self._writer
        raw = conn.dbapi
        run_sql(raw, "BEGIN IMMEDIATE")
        try:
            yield conn
            run_sql(raw, "COMMIT")
        except BaseException:
            if raw.in_transaction:
                run_sql(raw, "ROLLBACK")
            raise

    async def dispose(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                conn.sync_connection.close()
        self._reader = self._writer = None
        self.sync_engine.dispose()
        if self._lock is not None:
            self._lock.release()


class OwnerLock:
    """The one server process of a SQLite database: an exclusive lock on a file beside it,
    held while the store is open and let go by the kernel if the process dies."""

    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor lets go of the lock
            self._fd = None


# The asyncio engine (PostgreSQL, asyncpg) or SQLite called in line: one interface.
Engine = AsyncEngine | InlineEngine
Conn = AsyncConnection | InlineConnection
