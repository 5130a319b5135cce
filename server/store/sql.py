"""The SQL store: SQLAlchemy Core on an async engine, SQLite (WAL) or PostgreSQL (asyncpg).

Every write is a transaction (``transact``) that appends its change-log entries before it
commits. The change log's sequence numbers follow commit order: SQLite has one writer at a
time, and on PostgreSQL each transaction takes an advisory lock just before it writes its
entries, held until it commits, so that a reader that has seen sequence number N never later
finds a smaller one appear.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import time
import uuid as uuidlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import and_, bindparam, create_engine, delete, event, func, or_, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from server.store import tables
from server.store.inline import InlineConnection, InlineEngine, OwnerLock
from server.store.interface import (
    COLUMNS,
    SYSTEM,
    Actor,
    Change,
    ChangeKind,
    Conflict,
    NewRecord,
    NotFoundError,
    Query,
    Record,
    StoreUnavailable,
    T,
    Work,
)
from server.store.migrations import MIGRATION_LOCK, migrate
from server.store.sql_expr import (
    condition,
    expression,
    like_prefix,
    mirrored,
    record_from_json,
    record_json,
    to_record,
)
from server.store.urls import connect_options, printable
from server.store.urls import sqlite_url as sqlite_url

# The asyncio engine (PostgreSQL, asyncpg) or SQLite called in line: the same interface.
Engine = AsyncEngine | InlineEngine
Conn = AsyncConnection | InlineConnection
ChangeListener = Callable[[Record], None]
CommitListener = Callable[[int], None]
_t = tables.resource
_log = tables.change_log
# Key of the advisory lock that orders change-log writes on PostgreSQL.
CHANGE_LOG_LOCK = 0x636C6F67  # "clog"
PRUNED_THROUGH = "changes_pruned_through"
CONNECT_TIMEOUT = 10.0


def now_ms() -> int:
    return int(time.time() * 1000)


def _on_sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # Transactions are begun by _on_sqlite_begin, not by the driver's guesswork.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    # WAL lets readers proceed during a write; NORMAL sync is durable across process crashes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    # LIKE (and so the prefix filter) compares case as PostgreSQL does.
    cursor.execute("PRAGMA case_sensitive_like=ON")
    cursor.close()


def _on_sqlite_begin(conn: Any) -> None:
    # A write takes the database's write lock at BEGIN, so two processes never both read and
    # then fail to upgrade to writing. A read is one statement, atomic by itself: it begins
    # nothing, which saves a round trip to the database thread.
    if conn.get_execution_options().get("corral_write", False):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class _Pending:
    """A record written in the open transaction: its latest state and what changed."""

    __slots__ = ("fields", "kind", "record")

    def __init__(self, kind: ChangeKind, record: Record, fields: set[str]) -> None:
        self.kind = kind
        self.record = record
        self.fields = fields


class SqlTransaction:
    """The ``Transaction`` of one open database transaction."""

    def __init__(self, conn: Conn, postgres: bool) -> None:
        self._conn = conn
        self._postgres = postgres
        self.written: dict[int, _Pending] = {}

    async def get(self, record_id: int) -> Record | None:
        row = (await self._conn.execute(_GET, {"id": record_id})).first()
        return to_record(row) if row is not None else None

    async def get_by_lookup(self, type_: str, lookup_key: str) -> Record | None:
        row = (await self._conn.execute(_BY_LOOKUP, {"type": type_, "key": lookup_key})).first()
        return to_record(row) if row is not None else None

    async def get_by_uuid(self, uuid: str) -> Record | None:
        row = (await self._conn.execute(_BY_UUID, {"uuid": uuid})).first()
        return to_record(row) if row is not None else None

    async def list(self, query: Query) -> list[Record]:
        rows = (await self._conn.execute(*_select(query))).all()
        return [to_record(row) for row in rows]

    async def lock(self, record_id: int) -> Record | None:
        stmt = _LOCK if self._postgres else _GET
        row = (await self._conn.execute(stmt, {"id": record_id})).first()
        return to_record(row) if row is not None else None

    async def create(self, new: NewRecord) -> Record:
        data = _as_stored(new.data)
        values = {
            "type": new.type, "kind": new.kind, "uuid": new.uuid or str(uuidlib.uuid4()),
            "name": new.name, "description": new.description, "state": new.state,
            "project_id": new.project_id, "account_id": new.account_id, "created": now_ms(),
            "removed": None, "transitioning": new.transitioning,
            "transitioning_message": new.transitioning_message, "transitioning_progress": None,
            "lookup_key": new.lookup_key, "data": data, "version": 1, **mirrored(data),
        }
        try:
            async with self._savepoint():
                result = await self._conn.execute(_INSERT, values)
        except IntegrityError as exc:
            raise Conflict(f"a {new.type} with that key already exists") from exc
        record = _record(values, int(result.scalar_one()))
        self.written[record.id] = _Pending("create", record, set(COLUMNS) | set(data))
        return record

    async def update(
        self,
        record_id: int,
        changes: Mapping[str, Any],
        data: Mapping[str, Any] | None = None,
        expected_version: int | None = None,
    ) -> Record:
        unknown = set(changes) - COLUMNS
        if unknown:
            raise ValueError(f"not record columns: {sorted(unknown)}")
        current = await self.lock(record_id)
        if current is None:
            raise NotFoundError(f"record {record_id} does not exist")
        if expected_version is not None and current.version != expected_version:
            raise Conflict(f"{current.type} {record_id} was changed by someone else")
        values: dict[str, Any] = {name: getattr(current, name) for name in COLUMNS}
        values["data"] = current.data
        values.update(changes)
        changed = {k for k, v in changes.items() if getattr(current, k) != v}
        if data:
            merged = dict(current.data)
            for key, value in _as_stored(data).items():
                if value is None:
                    if key in merged:
                        changed.add(key)
                    merged.pop(key, None)
                else:
                    if merged.get(key, _MISSING) != value:
                        changed.add(key)
                    merged[key] = value
            values["data"] = merged
            values.update(mirrored(merged))
        else:
            values.update(mirrored(dict(current.data)))
        values["version"] = current.version + 1
        try:
            async with self._savepoint():
                result = await self._conn.execute(
                    _UPDATE, {**values, "w_id": record_id, "w_version": current.version})
        except IntegrityError as exc:
            raise Conflict("that key is already taken") from exc
        if result.rowcount != 1:
            raise Conflict(f"{current.type} {record_id} was changed by someone else")
        record = _record(values, record_id)
        pending = self.written.get(record.id)
        if pending is None:
            self.written[record.id] = _Pending("update", record, changed)
        else:
            pending.record = record
            pending.fields |= changed
        return record

    def _savepoint(self) -> Any:
        """Where a failed statement must not abort the transaction (PostgreSQL aborts it
        whole; SQLite undoes only the statement), a savepoint around it."""
        return self._conn.begin_nested() if self._postgres else contextlib.nullcontext()

    async def claim(self, record_id: int, owner: str, operation: str, ttl_ms: int) -> bool:
        return await claim(self._conn, self._postgres, record_id, owner, operation, ttl_ms)

    async def release(self, record_id: int, owner: str) -> None:
        await release(self._conn, record_id, owner)

    async def log(self, actor: Actor) -> int | None:
        """Append the change-log entries of what was written; the last sequence number."""
        if not self.written:
            return None
        if self._postgres:
            await self._conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                     {"key": CHANGE_LOG_LOCK})
        at = now_ms()
        rows = [{"kind": p.kind, "resource_id": p.record.id, "resource_type": p.record.type,
                 "project_id": p.record.project_id, "fields": sorted(p.fields),
                 "record": record_json(p.record), "actor": str(actor), "time": at}
                for p in self.written.values()]
        last: int | None = None
        for row in rows:  # one by one: RETURNING with executemany is not on every driver
            last = (await self._conn.execute(_LOG_INSERT, row)).scalar_one()
        return last


_MISSING = object()
# The statements every request and operation makes, built once: SQLAlchemy then skips
# building them and their cache keys each time (a good part of a statement's cost here).
_GET = select(_t).where(_t.c.id == bindparam("id"))
_LOCK = _GET.with_for_update()
_BY_LOOKUP = select(_t).where(_t.c.type == bindparam("type"),
                              _t.c.lookup_key == bindparam("key"))
_BY_UUID = select(_t).where(_t.c.uuid == bindparam("uuid"))
_INSERT = _t.insert().returning(_t.c.id)
_CHANGES_AFTER = (select(_log).where(_log.c.seq > bindparam("seq")).order_by(_log.c.seq)
                  .limit(bindparam("lim")))
# Every column but the id, from the record as the transaction computed it: one statement for
# every update, and no row to read back.
_UPDATE = (_t.update()
           .where(_t.c.id == bindparam("w_id"), _t.c.version == bindparam("w_version"))
           .values({c.name: bindparam(c.name) for c in _t.c if c.name != "id"}))


def _as_stored(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` as the JSON column gives it back (tuples become lists, keys strings), so a
    record built here equals the one read later."""
    loaded: dict[str, Any] = json.loads(json.dumps(data))
    return loaded


def _record(values: Mapping[str, Any], record_id: int) -> Record:
    return Record(**{name: values[name] for name in COLUMNS if name != "id"}, id=record_id,
                  data=values["data"], version=int(values["version"]))
_LOG_INSERT = _log.insert().returning(_log.c.seq)


def upsert(postgres: bool, table: Any, values: dict[str, Any], keys: list[str],
           where: Any = None) -> Any:
    insert = postgresql.insert if postgres else sqlite.insert
    stmt = insert(table).values(**values)
    return stmt.on_conflict_do_update(
        index_elements=keys, set_={k: v for k, v in values.items() if k not in keys},
        where=where)


def _claim_statement(postgres: bool) -> Any:
    c = tables.claim
    insert = postgresql.insert if postgres else sqlite.insert
    stmt = insert(c).values(resource_id=bindparam("rid"), owner=bindparam("owner"),
                            operation=bindparam("op"), expires=bindparam("expires"))
    return stmt.on_conflict_do_update(
        index_elements=["resource_id"],
        set_={"owner": stmt.excluded.owner, "operation": stmt.excluded.operation,
              "expires": stmt.excluded.expires},
        where=or_(c.c.expires < bindparam("now"), c.c.owner == stmt.excluded.owner))


_CLAIM = {False: _claim_statement(False), True: _claim_statement(True)}
_RELEASE = delete(tables.claim).where(tables.claim.c.resource_id == bindparam("rid"),
                                      tables.claim.c.owner == bindparam("owner"))


async def claim(conn: Conn, postgres: bool, record_id: int, owner: str,
                operation: str, ttl_ms: int) -> bool:
    """Take or renew the claim unless another owner holds it unexpired."""
    at = now_ms()
    result = await conn.execute(_CLAIM[postgres], {"rid": record_id, "owner": owner,
                                                   "op": operation, "expires": at + ttl_ms,
                                                   "now": at})
    return bool(result.rowcount)


async def release(conn: Conn, record_id: int, owner: str) -> None:
    await conn.execute(_RELEASE, {"rid": record_id, "owner": owner})


_SELECTS: dict[tuple[Any, ...], Any] = {}
_SELECTS_MAX = 512
_NO_VALUE = frozenset({"null", "notnull"})


def _select(query: Query) -> tuple[Any, dict[str, Any]]:
    """The statement for ``query`` and its parameters. Statements are built once per shape of
    query (types, fields and operators, sort) with every value a bind parameter."""
    conditions = query.conditions
    shape = (tuple(query.types), query.project_id is not None, query.account_id is not None,
             query.removed_since is not None,
             tuple((c.field, c.op, c.kind, c.value is None) for c in conditions),
             query.sort, query.sort_kind, query.descending)
    params: dict[str, Any] = {"p": query.project_id, "a": query.account_id,
                              "rs": query.removed_since, "lim": query.limit,
                              "off": query.offset}
    for i, c in enumerate(conditions):
        if c.op not in _NO_VALUE and c.value is not None:
            params[f"c{i}"] = like_prefix(c.value) if c.op == "prefix" else \
                str(c.value) if c.op in ("like", "notlike") else c.value
    stmt = _SELECTS.get(shape)
    if stmt is None:
        clauses: list[Any] = [_t.c.type.in_(list(query.types))]
        if query.project_id is not None:
            clauses.append(_t.c.project_id == bindparam("p"))
        if query.account_id is not None:
            clauses.append(_t.c.account_id == bindparam("a"))
        if query.removed_since is not None:
            clauses.append(or_(_t.c.removed.is_(None), _t.c.removed >= bindparam("rs")))
        for i, c in enumerate(conditions):
            if c.op in _NO_VALUE or c.value is None:
                clauses.append(condition(c))
            else:
                clauses.append(condition(c, bindparam(f"c{i}"), bound=True))
        order = expression(query.sort, query.sort_kind)
        order_by = [order.desc() if query.descending else order.asc()]
        if query.sort != "id":
            order_by.append(_t.c.id.desc() if query.descending else _t.c.id.asc())
        stmt = (select(_t).where(and_(*clauses)).order_by(*order_by)
                .limit(bindparam("lim")).offset(bindparam("off")))
        if len(_SELECTS) >= _SELECTS_MAX:
            _SELECTS.clear()
        _SELECTS[shape] = stmt
    return stmt, params


class SqlStore:
    """``Store`` on SQLite (called in line) or PostgreSQL (asyncpg).

    ``on_change`` hears of every record a committed transaction wrote, ``on_commit`` of the
    newest sequence number of the change log after each commit. Transactions run as tasks of
    their own, shielded from the caller: a request handler cancelled mid-write can neither
    leave a transaction (and SQLite's write lock) half-done nor lose the write. SQLite allows
    one writer at a time, so its transactions also queue on an in-process lock rather than
    spinning on the database's busy timeout.
    """

    def __init__(self, engine: Engine, on_change: ChangeListener | None = None,
                 on_commit: CommitListener | None = None) -> None:
        self._engine = engine
        self._writer = engine.execution_options(corral_write=True)
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
                event.listen(sync, "begin", _on_sqlite_begin)
                engine = InlineEngine(sync, lock)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreUnavailable(f"cannot use the database {printable(url)}: {exc}") from None
        try:
            async with engine.execution_options(corral_write=True).begin() as conn:
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
        async def transaction() -> T:
            lock = self._write_lock if not self._postgres else contextlib.nullcontext()
            async with lock:
                async with self._writer.begin() as conn:
                    tx = SqlTransaction(conn, self._postgres)
                    result = await work(tx)
                    last = await tx.log(actor)
                self._announce(tx, last)
            return result

        task: asyncio.Task[T] = asyncio.ensure_future(transaction())
        self._writes.add(task)
        task.add_done_callback(_settled(self._writes))
        return await asyncio.shield(task)

    def _announce(self, tx: SqlTransaction, last: int | None) -> None:
        if self._on_change is not None:
            for pending in tx.written.values():
                self._on_change(pending.record)
        if last is not None and self._on_commit is not None:
            self._on_commit(last)

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
        actor: Actor = SYSTEM,
    ) -> Record:
        unknown = set(changes) - COLUMNS
        if unknown:
            raise ValueError(f"not record columns: {sorted(unknown)}")

        async def work(tx: SqlTransaction) -> Record:
            return await tx.update(record_id, changes, data, expected_version)

        return await self.transact(work, actor=actor)  # type: ignore[arg-type]

    # --- reading ------------------------------------------------------------------------

    async def get(self, record_id: int) -> Record | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(_GET, {"id": record_id})).first()
        return to_record(row) if row is not None else None

    async def get_by_lookup(self, type_: str, lookup_key: str) -> Record | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(_BY_LOOKUP, {"type": type_, "key": lookup_key})).first()
        return to_record(row) if row is not None else None

    async def get_by_uuid(self, uuid: str) -> Record | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(_BY_UUID, {"uuid": uuid})).first()
        return to_record(row) if row is not None else None

    async def list(self, query: Query) -> list[Record]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(*_select(query))).all()
        return [to_record(row) for row in rows]

    # --- the change log -----------------------------------------------------------------

    async def changes_after(self, seq: int, limit: int = 500) -> builtins.list[Change]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(_CHANGES_AFTER, {"seq": seq, "lim": limit})).all()
        return [Change(seq=r.seq, kind=r.kind, record=record_from_json(r.record),
                       fields=tuple(r.fields), actor=r.actor, time=r.time) for r in rows]

    async def last_seq(self) -> int:
        async with self._engine.connect() as conn:
            found = (await conn.execute(select(func.max(_log.c.seq)))).scalar()
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
            await conn.execute(upsert(self._postgres, tables.meta,
                                      {"key": PRUNED_THROUGH, "value": through}, ["key"]))
            return int(gone or 0)

        return int(await self._raw_write(prune))

    # --- claims -------------------------------------------------------------------------

    async def claim(self, record_id: int, owner: str, operation: str, ttl_ms: int) -> bool:
        async def take(conn: Conn) -> bool:
            return await claim(conn, self._postgres, record_id, owner, operation, ttl_ms)

        return bool(await self._raw_write(take))

    async def release(self, record_id: int, owner: str) -> None:
        async def drop(conn: Conn) -> None:
            await release(conn, record_id, owner)

        await self._raw_write(drop)

    async def _raw_write(self, work: Callable[[Conn], Any]) -> Any:
        """A write outside the resource table (claims, pruning): no change-log entry."""

        async def transaction() -> Any:
            lock = self._write_lock if not self._postgres else contextlib.nullcontext()
            async with lock, self._writer.begin() as conn:
                return await work(conn)

        task: asyncio.Task[Any] = asyncio.ensure_future(transaction())
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



