"""The SQL store: SQLAlchemy Core on an async engine, SQLite (WAL) or PostgreSQL (asyncpg).

Every write is a transaction (``transact``) that appends its change-log entries before it
commits. The change log's sequence numbers follow commit order: SQLite has one writer at a
time, and on PostgreSQL each transaction takes an advisory lock just before it writes its
entries, held until it commits, so that a reader that has seen sequence number N never later
finds a smaller one appear.

This module opens the database and runs the store's calls; ``transaction.py`` is one open
transaction, ``statements.py`` the SQL both run.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine, delete, event, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine

from server.store import statements as sql
from server.store import tables
from server.store.inline import Conn, Engine, InlineEngine, OwnerLock
from server.store.interface import (
    SYSTEM,
    Actor,
    Change,
    NewRecord,
    Query,
    Record,
    StoreUnavailable,
    T,
    Work,
)
from server.store.migrations import MIGRATION_LOCK, migrate
from server.store.sql_expr import (
    record_from_json,
    to_record,
)
from server.store.transaction import SqlTransaction
from server.store.urls import connect_options, printable
from server.store.urls import sqlite_url as sqlite_url

_log = tables.change_log
ChangeListener = Callable[[Record], None]
CommitListener = Callable[[Sequence[Change]], None]
PRUNED_THROUGH = "changes_pruned_through"
CONNECT_TIMEOUT = 10.0
W = TypeVar("W")


def _on_sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # Transactions are begun by InlineEngine.begin, not by the driver's guesswork.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    # WAL lets readers proceed during a write; NORMAL sync is durable across process crashes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    # 16 MiB of pages rather than 2: with tens of thousands of records and their change log,
    # the indexes a lookup walks stay in memory instead of being read again each time.
    cursor.execute("PRAGMA cache_size=-16384")
    # LIKE (and so the prefix filter) compares case as PostgreSQL does.
    cursor.execute("PRAGMA case_sensitive_like=ON")
    cursor.close()


class SqlStore:
    """``Store`` on SQLite (called in line) or PostgreSQL (asyncpg).

    ``on_change`` hears of every record a committed transaction wrote, ``on_commit`` of the
    change-log entries of each commit, once committed. Transactions run as tasks of
    their own, shielded from the caller: a request handler cancelled mid-write can neither
    leave a transaction (and SQLite's write lock) half-done nor lose the write. SQLite allows
    one writer at a time, so its transactions also queue on an in-process lock rather than
    spinning on the database's busy timeout.
    """

    def __init__(self, engine: Engine, on_change: ChangeListener | None = None,
                 on_commit: CommitListener | None = None) -> None:
        self._engine = engine
        self.dialect = engine.dialect.name
        self._postgres = self.dialect == "postgresql"
        self._on_change = on_change
        self._on_commit = on_commit
        self._write_lock = asyncio.Lock()
        self._writes: set[asyncio.Task[Any]] = set()

    @classmethod
    async def open(cls, url: str, on_change: ChangeListener | None = None,
                   on_commit: CommitListener | None = None, *,
                   owner: bool = True) -> SqlStore:
        """Connect, apply pending migrations and return the store.

        Raises StoreUnavailable (one line, no password) when the database cannot be reached,
        or, with ``owner``, when another server process has the SQLite database open (a
        reader such as ``registration-command`` passes ``owner=False``).
        """
        postgres = url.startswith("postgresql")
        try:
            driver_url, connect_args, schema = connect_options(url)
            if postgres:
                connect_args["timeout"] = CONNECT_TIMEOUT
            engine: Engine
            if postgres:
                engine = create_async_engine(driver_url, connect_args=connect_args,
                                             pool_pre_ping=True)
            else:
                lock = _sqlite_owner(driver_url) if owner else None
                # Reads begin no transaction and writes end theirs explicitly, so a
                # connection needs no rollback when it goes back to the pool.
                sync = create_engine(driver_url.replace("+aiosqlite", "", 1),
                                     pool_reset_on_return=None)
                event.listen(sync, "connect", _on_sqlite_connect)
                engine = InlineEngine(sync, sql.DIRECT, lock)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreUnavailable(f"cannot use the database {printable(url)}: {exc}") from None
        try:
            async with engine.begin() as conn:
                if schema is not None:
                    # Under the migrations' lock: IF NOT EXISTS does not hold against a
                    # second server creating the same schema at the same moment.
                    await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                       {"key": MIGRATION_LOCK})
                    await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
                await conn.run_sync(migrate)
        except BaseException as exc:
            await engine.dispose()
            reason = _unreachable(exc)
            if reason is not None:
                raise StoreUnavailable(
                    f"cannot open the database {printable(url)}: {reason}") from None
            raise
        return cls(engine, on_change, on_commit)

    async def close(self) -> None:
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        await self._engine.dispose()

    # --- writing ------------------------------------------------------------------------

    async def transact(self, work: Work[T], *, actor: Actor = SYSTEM) -> T:
        async def logged(conn: Conn) -> tuple[T, SqlTransaction, list[Change]]:
            tx = SqlTransaction(conn, self._postgres)
            result = await work(tx)
            return result, tx, await tx.log(actor)

        result, _, _ = await self._write(logged, after=lambda done: self._announce(*done[1:]))
        return result

    def _announce(self, tx: SqlTransaction, entries: list[Change]) -> None:
        if self._on_change is not None:
            for pending in tx.written.values():
                self._on_change(pending.record)
        if entries and self._on_commit is not None:
            self._on_commit(entries)

    async def create(self, new: NewRecord, *, actor: Actor = SYSTEM) -> Record:
        async def work(tx: SqlTransaction) -> Record:
            return await tx.create(new)

        return await self.transact(work, actor=actor)  # type: ignore[arg-type]

    async def update(
        self,
        record_id: int,
        changes: Mapping[str, Any],
        data: Mapping[str, Any] | None = None,
        expected_version: int | None = None,
        *,
        expected_states: Collection[str] | None = None,
        actor: Actor = SYSTEM,
    ) -> Record:
        async def work(tx: SqlTransaction) -> Record:
            return await tx.update(record_id, changes, data, expected_version,
                                   expected_states=expected_states)

        return await self.transact(work, actor=actor)  # type: ignore[arg-type]

    # --- reading ------------------------------------------------------------------------

    async def get(self, record_id: int) -> Record | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sql.GET, {"id": record_id})).first()
        return to_record(row) if row is not None else None

    async def get_by_lookup(self, type_: str, lookup_key: str) -> Record | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sql.BY_LOOKUP, {"type": type_, "key": lookup_key})).first()
        return to_record(row) if row is not None else None

    async def get_by_uuid(self, uuid: str) -> Record | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sql.BY_UUID, {"uuid": uuid})).first()
        return to_record(row) if row is not None else None

    async def list(self, query: Query) -> list[Record]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(*sql.select_for(query))).all()
        return [to_record(row) for row in rows]

    # --- the change log -----------------------------------------------------------------

    async def changes_after(self, seq: int, limit: int = 500) -> builtins.list[Change]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(sql.CHANGES_AFTER, {"seq": seq, "lim": limit})).all()
        return [Change(seq=r.seq, kind=r.kind, record=record_from_json(r.record),
                       fields=tuple(r.fields), actor=r.actor, time=r.time) for r in rows]

    async def last_seq(self) -> int:
        async with self._engine.connect() as conn:
            found = (await conn.execute(sql.LAST_SEQ)).scalar()
        return int(found or 0)

    async def pruned_through(self) -> int:
        stmt = select(tables.meta.c.value).where(tables.meta.c.key == PRUNED_THROUGH)
        async with self._engine.connect() as conn:
            found = (await conn.execute(stmt)).scalar()
        return int(found or 0)

    async def prune_changes(self, keep: int, older_than_ms: int) -> int:
        async def prune(conn: Conn) -> int:
            newest = (await conn.execute(select(func.max(_log.c.seq)))).scalar() or 0
            aged = (await conn.execute(select(func.max(_log.c.seq))
                                       .where(_log.c.time < older_than_ms))).scalar() or 0
            through = min(newest - keep, aged)
            if through <= 0:
                return 0
            gone = (await conn.execute(delete(_log).where(_log.c.seq <= through))).rowcount
            await conn.execute(sql.upsert(self._postgres, tables.meta,
                                      {"key": PRUNED_THROUGH, "value": through}, ["key"]))
            return int(gone or 0)

        return int(await self._raw_write(prune))

    # --- claims -------------------------------------------------------------------------

    async def claim(self, record_id: int, owner: str, operation: str, ttl_ms: int) -> bool:
        async def take(conn: Conn) -> bool:
            return await sql.claim(conn, self._postgres, record_id, owner, operation, ttl_ms)

        return bool(await self._raw_write(take))

    async def release(self, record_id: int, owner: str) -> None:
        async def drop(conn: Conn) -> None:
            await sql.release(conn, record_id, owner)

        await self._raw_write(drop)

    async def _raw_write(self, work: Callable[[Conn], Awaitable[Any]]) -> Any:
        """A write outside the resource table (claims, pruning): no change-log entry."""
        return await self._write(work)

    async def _write(self, work: Callable[[Conn], Awaitable[W]],
                     after: Callable[[W], None] | None = None) -> W:
        """Run ``work`` in a write transaction, as a task of its own shielded from the
        caller; ``after`` hears of the outcome once committed, even if the caller left."""

        async def transaction() -> W:
            lock = self._write_lock if not self._postgres else contextlib.nullcontext()
            async with lock:
                async with self._engine.begin() as conn:
                    result = await work(conn)
                if after is not None:
                    after(result)
            return result

        task: asyncio.Task[W] = asyncio.ensure_future(transaction())
        self._writes.add(task)
        task.add_done_callback(_settled(self._writes))
        return await asyncio.shield(task)


def _settled(tasks: set[asyncio.Task[Any]]) -> Callable[[asyncio.Task[Any]], None]:
    """Forget a finished write; its outcome went to the caller, or nowhere if it left."""

    def done(task: asyncio.Task[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()

    return done


def _sqlite_owner(url: str) -> OwnerLock:
    path = make_url(url).database
    assert path is not None
    lock = OwnerLock(Path(path))
    try:
        taken = lock.acquire()
    except OSError as exc:
        raise StoreUnavailable(f"cannot open the database {path}: {exc.strerror}") from None
    if not taken:
        raise StoreUnavailable(f"the database {path} is in use by another corral-server "
                               f"process (it holds {lock.path}); stop that one first")
    return lock


def _unreachable(exc: BaseException) -> str | None:
    """Why the database could not be reached, or None for any other failure."""
    if isinstance(exc, OSError | TimeoutError):
        return exc.strerror or str(exc) or type(exc).__name__
    if isinstance(exc, DBAPIError):
        orig = exc.orig
        return (str(orig) or type(orig).__name__).splitlines()[0] if orig is not None \
            else str(exc).splitlines()[0]
    name = type(exc).__module__
    if name.startswith("asyncpg"):  # refused credentials, unknown database
        return (str(exc) or type(exc).__name__).splitlines()[0]
    return None



