"""The store's prebuilt statements, compiled once to SQLite's SQL and run on ``sqlite3`` itself.

SQLAlchemy's path from ``execute`` to the driver (execution context, events, parameter and
result processing) costs several times what SQLite takes for an indexed read or a one-row
write. The statements every request and operation makes (``statements.DIRECT``) are compiled
here once, with SQLAlchemy's own compiler and its own bind and result processors, and run on
the driver's connection; everything else goes through SQLAlchemy. Pure: no I/O until ``run``.
"""

from __future__ import annotations

import sqlite3
from collections import namedtuple
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, MultipleResultsFound, NoResultFound

Processor = Callable[[Any], Any] | None


class Known(Protocol):
    """Which statements may run directly: the statement and the table an INSERT fills."""

    def find(self, statement: Any) -> tuple[Any, Table | None] | None: ...


class DirectResult:
    """The part of SQLAlchemy's ``CursorResult`` the store uses."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def all(self) -> list[Any]:
        return self._rows

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalar_one(self) -> Any:
        if not self._rows:
            raise NoResultFound("no row was found when one was required")
        if len(self._rows) > 1:
            raise MultipleResultsFound("more than one row was found when one was required")
        return self._rows[0][0]


def _row_class(names: Sequence[str]) -> type:
    """Rows read by name (``row.seq``) or through ``row._mapping``, as SQLAlchemy's are."""
    base = namedtuple("Row", names)  # type: ignore[misc]

    class Row(base):
        __slots__ = ()

        @property
        def _mapping(self) -> dict[str, Any]:
            return dict(zip(self._fields, self, strict=True))

    return Row


def run_sql(dbapi_connection: Any, sql: str) -> None:
    """One statement without parameters (BEGIN, COMMIT), its errors raised as SQLAlchemy's."""
    try:
        dbapi_connection.execute(sql).close()
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, (), exc, sqlite3.Error) from exc


class DirectStatement:
    """One statement as SQLite's SQL, its parameters in order and how to convert them."""

    def __init__(self, statement: Any, dialect: Dialect,
                 column_keys: Iterable[str] | None = None) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=column_keys)
        if dialect.paramstyle != "qmark" or "POSTCOMPILE" in compiled.string:
            raise ValueError(f"not a statement for direct use: {compiled.string}")
        self.sql: str = compiled.string
        self._names: tuple[str, ...] = tuple(compiled.positiontup or ())
        processors = compiled._bind_processors
        self._binds: tuple[tuple[str, Processor], ...] = tuple(
            (name, processors.get(name)) for name in self._names)
        # Parameters SQLAlchemy fills in itself (an OFFSET 0, say), by name.
        self._fixed = {name: bind.effective_value for name, bind in compiled.binds.items()
                       if name in self._names and not bind.required}
        columns: Sequence[Any] = getattr(statement, "selected_columns", None) or \
            getattr(statement, "_returning", None) or ()
        self._results: tuple[Processor, ...] = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in columns)
        self._row = _row_class([column.key or f"column_{i}" for i, column in
                                enumerate(columns)]) if columns else None

    def run(self, dbapi_connection: Any, parameters: Mapping[str, Any] | None) -> DirectResult:
        given = parameters or {}
        values = []
        for name, process in self._binds:
            value = given[name] if name in given else self._fixed[name]
            values.append(process(value) if process is not None else value)
        try:
            cursor = dbapi_connection.execute(self.sql, values)
        except sqlite3.Error as exc:  # as SQLAlchemy raises it: IntegrityError, ...
            raise DBAPIError.instance(self.sql, values, exc, sqlite3.Error) from exc
        try:
            if self._row is None:
                return DirectResult([], cursor.rowcount)
            processors, make = self._results, self._row
            rows = [make(*[p(v) if p is not None else v for p, v in
                           zip(processors, raw, strict=True)]) for raw in cursor.fetchall()]
            return DirectResult(rows, cursor.rowcount)
        finally:
            cursor.close()


class DirectStatements:
    """The statements ``known`` names for direct use, compiled for one SQLite dialect the
    first time each runs."""

    def __init__(self, dialect: Dialect, known: Known) -> None:
        self._dialect = dialect
        self._known = known
        self._compiled: dict[int, DirectStatement] = {}

    def get(self, statement: Any) -> DirectStatement | None:
        found = self._compiled.get(id(statement))
        if found is None:
            entry = self._known.find(statement)
            if entry is None:
                return None
            # ``known`` keeps the statement alive, so its id stays its own.
            _, insert_into = entry
            keys = [c.name for c in insert_into.c if not c.primary_key] \
                if insert_into is not None else None
            found = self._compiled[id(statement)] = DirectStatement(statement, self._dialect,
                                                                    keys)
        return found
