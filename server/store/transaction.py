"""One open transaction of the SQL store: reads that see its own writes, writes, row locks,
claims, and the change-log entries it appends before it commits."""

from __future__ import annotations

import builtins
import contextlib
import json
import uuid as uuidlib
from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from server.store import statements as sql
from server.store.inline import Conn
from server.store.interface import (
    COLUMNS,
    Actor,
    Change,
    ChangeKind,
    Conflict,
    NewRecord,
    NotFoundError,
    Query,
    Record,
)
from server.store.sql_expr import mirrored, record_json, to_record
from server.store.statements import now_ms

# Key of the advisory lock that orders change-log writes on PostgreSQL.
CHANGE_LOG_LOCK = 0x636C6F67  # "clog"
_MISSING = object()


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
        row = (await self._conn.execute(sql.GET, {"id": record_id})).first()
        return to_record(row) if row is not None else None

    async def last_seq(self) -> int:
        found = (await self._conn.execute(sql.LAST_SEQ)).scalar()
        return int(found or 0)

    async def get_by_lookup(self, type_: str, lookup_key: str) -> Record | None:
        row = (await self._conn.execute(sql.BY_LOOKUP, {"type": type_, "key": lookup_key})).first()
        return to_record(row) if row is not None else None

    async def get_by_uuid(self, uuid: str) -> Record | None:
        row = (await self._conn.execute(sql.BY_UUID, {"uuid": uuid})).first()
        return to_record(row) if row is not None else None

    async def list(self, query: Query) -> list[Record]:
        rows = (await self._conn.execute(*sql.select_for(query))).all()
        return [to_record(row) for row in rows]

    async def lock(self, record_id: int) -> Record | None:
        stmt = sql.LOCK if self._postgres else sql.GET
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
                result = await self._conn.execute(sql.INSERT, values)
        except IntegrityError as exc:
            raise Conflict(f"a {new.type} with that key already exists") from exc
        record = _record_of(values, int(result.scalar_one()))
        self.written[record.id] = _Pending("create", record, set(COLUMNS) | set(data))
        return record

    async def update(
        self,
        record_id: int,
        changes: Mapping[str, Any],
        data: Mapping[str, Any] | None = None,
        expected_version: int | None = None,
        *,
        expected_states: Collection[str] | None = None,
    ) -> Record:
        unknown = set(changes) - COLUMNS
        if unknown:
            raise ValueError(f"not record columns: {sorted(unknown)}")
        current = await self.lock(record_id)
        if current is None:
            raise NotFoundError(f"record {record_id} does not exist")
        if expected_version is not None and current.version != expected_version:
            raise Conflict(f"{current.type} {record_id} was changed by someone else")
        if expected_states is not None and current.state not in expected_states:
            raise Conflict(f"{current.type} {record_id} is {current.state} now, "
                           f"no longer {' or '.join(sorted(expected_states))}")
        values: dict[str, Any] = {name: getattr(current, name) for name in COLUMNS}
        values["data"] = current.data
        values.update(changes)
        changed = {k for k, v in changes.items() if getattr(current, k) != v}
        columns = set(changed)  # the table's columns to SET
        if data:
            merged = dict(current.data)
            for key, value in _as_stored(data).items():
                if value is None:  # None removes the key
                    if key not in merged:
                        continue
                    del merged[key]
                elif merged.get(key, _MISSING) != value:
                    merged[key] = value
                else:
                    continue
                changed.add(key)
            if merged != current.data:
                values["data"] = merged
                columns.add("data")
                before = mirrored(dict(current.data))
                for name, value in mirrored(merged).items():
                    if before[name] != value:
                        values[name] = value
                        columns.add(name)
        values["version"] = current.version + 1
        params = {name: values[name] for name in columns}
        params.update(version=values["version"], w_id=record_id, w_version=current.version)
        try:
            async with self._savepoint():
                result = await self._conn.execute(sql.update_of(frozenset(columns)), params)
        except IntegrityError as exc:
            raise Conflict("that key is already taken") from exc
        if result.rowcount != 1:
            raise Conflict(f"{current.type} {record_id} was changed by someone else")
        record = _record_of(values, record_id)
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
        return await sql.claim(self._conn, self._postgres, record_id, owner, operation, ttl_ms)

    async def release(self, record_id: int, owner: str) -> None:
        await sql.release(self._conn, record_id, owner)

    async def log(self, actor: Actor) -> builtins.list[Change]:
        """Append the change-log entries of what was written, and return them."""
        if not self.written:
            return []
        if self._postgres:
            await self._conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                     {"key": CHANGE_LOG_LOCK})
        at, by = now_ms(), str(actor)
        entries: list[Change] = []
        for p in self.written.values():  # one by one: RETURNING with executemany is not on
            fields = sorted(p.fields)    # every driver
            row = {"kind": p.kind, "resource_id": p.record.id, "resource_type": p.record.type,
                   "project_id": p.record.project_id, "fields": fields,
                   "record": record_json(p.record), "actor": by, "time": at}
            seq = (await self._conn.execute(sql.LOG_INSERT, row)).scalar_one()
            entries.append(Change(seq=seq, kind=p.kind, record=p.record, fields=tuple(fields),
                                  actor=by, time=at))
        return entries


def _as_stored(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` as the JSON column gives it back (tuples become lists, keys strings), so a
    record built here equals the one read later."""
    loaded: dict[str, Any] = json.loads(json.dumps(data))
    return loaded


def _record_of(values: Mapping[str, Any], record_id: int) -> Record:
    return Record(**{name: values[name] for name in COLUMNS if name != "id"}, id=record_id,
                  data=values["data"], version=int(values["version"]))
