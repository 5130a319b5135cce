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
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


class InlineConnection:
    """An ``AsyncConnection`` look-alike over a synchronous connection."""

    def __init__(self, conn: Connection) -> None:
        self.sync_connection = conn

    async def execute(self, statement: Any, parameters: Any = None) -> CursorResult[Any]:
        return self.sync_connection.execute(statement, parameters)

    async def run_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(self.sync_connection, *args)

    @contextlib.asynccontextmanager
    async def begin_nested(self) -> AsyncIterator[None]:
        with self.sync_connection.begin_nested():
            yield


class InlineEngine:
    """An ``AsyncEngine`` look-alike over a synchronous engine."""

    def __init__(self, engine: SyncEngine, lock: OwnerLock | None = None) -> None:
        self.sync_engine = engine
        self.dialect = engine.dialect
        self._lock = lock

    def execution_options(self, **options: Any) -> InlineEngine:
        return InlineEngine(self.sync_engine.execution_options(**options))

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[InlineConnection]:
        with self.sync_engine.connect() as conn:
            yield InlineConnection(conn)

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[InlineConnection]:
        with self.sync_engine.begin() as conn:
            yield InlineConnection(conn)

    async def dispose(self) -> None:
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
