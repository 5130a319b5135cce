"""The SQL store: SQLAlchemy Core on an async engine (SQLite with WAL by default)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid as uuidlib
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, and_, event, false, not_, or_, select
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from server.store import tables
from server.store.interface import (
    COLUMNS,
    Condition,
    Conflict,
    NewRecord,
    NotFoundError,
    Query,
    Record,
)
from server.store.migrations import migrate

ChangeListener = Callable[[Record], None]
_t = tables.resource


def now_ms() -> int:
    return int(time.time() * 1000)


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{data_dir / 'corral.db'}"


def _on_sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    # WAL lets readers proceed during a write; NORMAL sync is durable across process crashes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    # LIKE (and so the prefix filter) compares case as PostgreSQL does.
    cursor.execute("PRAGMA case_sensitive_like=ON")
    cursor.close()


class SqlStore:
    """``Store`` on any SQLAlchemy async URL; announces every write to ``on_change``.

    Writes run as tasks of their own, shielded from the caller: a request handler cancelled
    mid-write can neither leave a transaction (and SQLite's write lock) half-done nor lose the
    write. SQLite allows one writer at a time, so its writes also queue on an in-process lock
    rather than spinning on the database's busy timeout.
    """

    def __init__(self, engine: AsyncEngine, on_change: ChangeListener | None = None) -> None:
        self._engine = engine
        self._on_change = on_change
        self._serial = engine.dialect.name == "sqlite"
        self._write_lock = asyncio.Lock()
        self._writes: set[asyncio.Task[Any]] = set()

    async def _write(self, work: Callable[[AsyncConnection], Awaitable[Record]]) -> Record:
        """Run ``work`` in a transaction of its own; announce the record once committed."""

        async def transaction() -> Record:
            lock = self._write_lock if self._serial else contextlib.nullcontext()
            async with lock, self._engine.begin() as conn:
                record = await work(conn)
            self._announce(record)
            return record

        task: asyncio.Task[Record] = asyncio.ensure_future(transaction())
        self._writes.add(task)
        task.add_done_callback(_settled(self._writes))
        return await asyncio.shield(task)

    @classmethod
    async def open(cls, url: str, on_change: ChangeListener | None = None) -> SqlStore:
        """Connect, apply pending migrations and return the store."""
        engine = create_async_engine(url)
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(migrate)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine, on_change)

    async def close(self) -> None:
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        await self._engine.dispose()

    def _announce(self, record: Record) -> None:
        if self._on_change is not None:
            self._on_change(record)

    async def create(self, new: NewRecord) -> Record:
        values = {
            "type": new.type, "kind": new.kind, "uuid": new.uuid or str(uuidlib.uuid4()),
            "name": new.name, "description": new.description, "state": new.state,
            "project_id": new.project_id, "account_id": new.account_id, "created": now_ms(),
            "removed": None, "transitioning": new.transitioning,
            "transitioning_message": new.transitioning_message, "transitioning_progress": None,
            "lookup_key": new.lookup_key, "data": dict(new.data), "version": 1,
        }
        async def insert(conn: AsyncConnection) -> Record:
            result = await conn.execute(_t.insert().values(**values).returning(*_t.c))
            return _to_record(result.one())

        try:
            return await self._write(insert)
        except IntegrityError as exc:
            raise Conflict(f"a {new.type} with that key already exists") from exc

    async def get(self, record_id: int) -> Record | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(_t).where(_t.c.id == record_id))).first()
        return _to_record(row) if row is not None else None

    async def get_by_lookup(self, type_: str, lookup_key: str) -> Record | None:
        stmt = select(_t).where(_t.c.type == type_, _t.c.lookup_key == lookup_key)
        async with self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return _to_record(row) if row is not None else None

    async def get_by_uuid(self, uuid: str) -> Record | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(_t).where(_t.c.uuid == uuid))).first()
        return _to_record(row) if row is not None else None

    async def list(self, query: Query) -> list[Record]:
        clauses: list[ColumnElement[bool]] = [_t.c.type.in_(list(query.types))]
        if query.project_id is not None:
            clauses.append(_t.c.project_id == query.project_id)
        if query.account_id is not None:
            clauses.append(_t.c.account_id == query.account_id)
        if query.removed_since is not None:
            clauses.append(or_(_t.c.removed.is_(None), _t.c.removed >= query.removed_since))
        clauses.extend(_condition(c) for c in query.conditions)
        order = _expression(query.sort, query.sort_kind)
        order_by = [order.desc() if query.descending else order.asc()]
        if query.sort != "id":
            order_by.append(_t.c.id.desc() if query.descending else _t.c.id.asc())
        stmt = (select(_t).where(and_(*clauses)).order_by(*order_by)
                .limit(query.limit).offset(query.offset))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_to_record(row) for row in rows]

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

        async def apply(conn: AsyncConnection) -> Record:
            row = (await conn.execute(select(_t).where(_t.c.id == record_id))).first()
            if row is None:
                raise NotFoundError(f"record {record_id} does not exist")
            current = _to_record(row)
            if expected_version is not None and current.version != expected_version:
                raise Conflict(f"{current.type} {record_id} was changed by someone else")
            values: dict[str, Any] = dict(changes)
            if data:
                merged = dict(current.data)
                for key, value in data.items():
                    if value is None:
                        merged.pop(key, None)
                    else:
                        merged[key] = value
                values["data"] = merged
            values["version"] = current.version + 1
            stmt = (_t.update().where(_t.c.id == record_id, _t.c.version == current.version)
                    .values(**values).returning(*_t.c))
            updated = (await conn.execute(stmt)).first()
            if updated is None:
                raise Conflict(f"{current.type} {record_id} was changed by someone else")
            return _to_record(updated)

        try:
            return await self._write(apply)
        except IntegrityError as exc:
            raise Conflict("that key is already taken") from exc


def _settled(tasks: set[asyncio.Task[Any]]) -> Callable[[asyncio.Task[Any]], None]:
    """Forget a finished write; its outcome went to the caller, or nowhere if it left."""

    def done(task: asyncio.Task[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()

    return done


def _to_record(row: Row[Any]) -> Record:
    m = row._mapping
    return Record(
        id=m["id"], type=m["type"], kind=m["kind"], uuid=m["uuid"], name=m["name"],
        description=m["description"], state=m["state"], project_id=m["project_id"],
        account_id=m["account_id"], created=m["created"], removed=m["removed"],
        transitioning=m["transitioning"], transitioning_message=m["transitioning_message"],
        transitioning_progress=m["transitioning_progress"], lookup_key=m["lookup_key"],
        data=m["data"] or {}, version=m["version"],
    )


def _expression(field: str, kind: str) -> Any:
    """A column, or a typed path into the JSON data map (dialect-neutral)."""
    if field in COLUMNS:
        return _t.c[field]
    element = _t.c.data[field]
    if kind == "int":
        return element.as_integer()
    if kind == "float":
        return element.as_float()
    if kind == "bool":
        return element.as_boolean()
    return element.as_string()


def _condition(cond: Condition) -> ColumnElement[bool]:
    expr: Any = _expression(cond.field, cond.kind)
    value = cond.value
    clause: ColumnElement[bool]
    match cond.op:
        case "eq":
            clause = expr == value
        case "ne":
            clause = or_(expr != value, expr.is_(None))
        case "lt":
            clause = expr < value
        case "lte":
            clause = expr <= value
        case "gt":
            clause = expr > value
        case "gte":
            clause = expr >= value
        case "prefix":
            clause = expr.startswith(str(value), autoescape=True)
        case "like":
            clause = expr.like(str(value))
        case "notlike":
            clause = or_(not_(expr.like(str(value))), expr.is_(None))
        case "null":
            clause = expr.is_(None)
        case "notnull":
            clause = expr.is_not(None)
        case _:
            clause = false()
    return clause
