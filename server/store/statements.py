"""The SQL the store runs, as SQLAlchemy Core statements built once.

The statements every request and operation makes are built at import with bind parameters:
SQLAlchemy then skips building them and their cache keys each time (a good part of a
statement's cost here). ``select_for`` does the same for queries, once per shape of query.
Pure construction, no I/O, except ``claim`` and ``release``, which run theirs on a connection.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from server.store import tables
from server.store.inline import Conn
from server.store.interface import Query
from server.store.sql_expr import condition, expression, like_prefix

_t = tables.resource
_log = tables.change_log


def now_ms() -> int:
    return int(time.time() * 1000)


GET = select(_t).where(_t.c.id == bindparam("id"))
LOCK = GET.with_for_update()
BY_LOOKUP = select(_t).where(_t.c.type == bindparam("type"),
                             _t.c.lookup_key == bindparam("key"))
BY_UUID = select(_t).where(_t.c.uuid == bindparam("uuid"))
INSERT = _t.insert().returning(_t.c.id)
LOG_INSERT = _log.insert().returning(_log.c.seq)
LAST_SEQ = select(func.max(_log.c.seq))
CHANGES_AFTER = (select(_log).where(_log.c.seq > bindparam("seq")).order_by(_log.c.seq)
                 .limit(bindparam("lim")))


class Direct:
    """The statements SQLite runs on its driver directly (``sqlite_direct``): those every
    request and operation makes, each with the table an INSERT fills (all its columns but
    the key). Statements built on demand (``update_of``) join as they are built."""

    def __init__(self) -> None:
        self._statements: dict[int, tuple[Any, Any]] = {}

    def add(self, statement: Any, insert_into: Any = None) -> Any:
        self._statements[id(statement)] = (statement, insert_into)
        return statement

    def find(self, statement: Any) -> tuple[Any, Any] | None:
        return self._statements.get(id(statement))


DIRECT = Direct()
for _prebuilt, _into in ((GET, None), (BY_LOOKUP, None), (BY_UUID, None), (INSERT, _t),
                         (LOG_INSERT, _log), (LAST_SEQ, None), (CHANGES_AFTER, None)):
    DIRECT.add(_prebuilt, _into)

_UPDATES: dict[frozenset[str], Any] = {}


def update_of(columns: frozenset[str]) -> Any:
    """The UPDATE of ``columns`` (and the version) of the row with id ``w_id`` still at version
    ``w_version``, built once per set of columns. Only the columns that changed: SQLite
    rewrites the entries of every index on a column that is SET, whatever its value."""
    stmt = _UPDATES.get(columns)
    if stmt is None:
        names = sorted(columns | {"version"})
        stmt = DIRECT.add(
            _t.update()
            .where(_t.c.id == bindparam("w_id"), _t.c.version == bindparam("w_version"))
            .values({name: bindparam(name) for name in names}))
        _UPDATES[columns] = stmt
    return stmt


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


DIRECT.add(_CLAIM[False])
DIRECT.add(_RELEASE)


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


def select_for(query: Query) -> tuple[Any, dict[str, Any]]:
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
