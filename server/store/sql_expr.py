"""Rows to records and back, and the query conditions as SQL: pure SQLAlchemy expressions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, ColumnElement, false, not_, or_
from sqlalchemy.engine import Row

from server.store import tables
from server.store.interface import COLUMNS, INDEXED_DATA, Condition, Record

_t = tables.resource


def to_record(row: Row[Any]) -> Record:
    m = row._mapping
    return Record(
        id=m["id"], type=m["type"], kind=m["kind"], uuid=m["uuid"], name=m["name"],
        description=m["description"], state=m["state"], project_id=m["project_id"],
        account_id=m["account_id"], created=m["created"], removed=m["removed"],
        transitioning=m["transitioning"], transitioning_message=m["transitioning_message"],
        transitioning_progress=m["transitioning_progress"], lookup_key=m["lookup_key"],
        data=m["data"] or {}, version=m["version"],
    )


def record_json(record: Record) -> dict[str, Any]:
    """A record as the JSON kept in the change log."""
    out = {name: getattr(record, name) for name in COLUMNS}
    out["data"] = dict(record.data)
    out["version"] = record.version
    return out


def record_from_json(obj: dict[str, Any]) -> Record:
    columns: dict[str, Any] = {name: obj.get(name) for name in COLUMNS}
    return Record(**columns, data=obj.get("data") or {}, version=int(obj["version"]))


def mirrored(data: dict[str, Any]) -> dict[str, Any]:
    """The indexed columns that mirror keys of a record's data map."""
    host_id = data.get("hostId")
    external = data.get("externalId")
    return {
        "host_id": host_id if isinstance(host_id, int) and not isinstance(host_id, bool)
        else None,
        "external_id": external if isinstance(external, str) else None,
    }


def expression(field: str, kind: str) -> Any:
    """A column, or a typed path into the JSON data map (dialect-neutral)."""
    if field in COLUMNS:
        return _t.c[field]
    if field in INDEXED_DATA:
        return _t.c[INDEXED_DATA[field]]
    element = _t.c.data[field]
    if kind == "int":
        return element.as_integer()
    if kind == "float":
        return element.as_float()
    if kind == "bool":
        return element.as_boolean()
    return element.as_string()


def _never_null(expr: Any) -> bool:
    return isinstance(expr, Column) and not expr.nullable


def like_prefix(value: Any) -> str:
    """A LIKE pattern matching text that starts with ``value`` taken literally (escape /)."""
    text = str(value)
    return text.replace("/", "//").replace("%", "/%").replace("_", "/_") + "%"


def condition(cond: Condition, value: Any = None, bound: bool = False) -> ColumnElement[bool]:
    """The condition as SQL; with ``bound``, ``value`` stands for the condition's value (a
    bind parameter, so that the statement can be built once for every value; a ``prefix``
    parameter then gets ``like_prefix`` of the value)."""
    expr: Any = expression(cond.field, cond.kind)
    if not bound:
        value = cond.value
    clause: ColumnElement[bool]
    match cond.op:
        case "eq":
            clause = expr == value
        case "ne":
            # Null is "not equal" too, but a column that is never null needs no OR.
            clause = expr != value if _never_null(expr) else or_(expr != value, expr.is_(None))
        case "lt":
            clause = expr < value
        case "lte":
            clause = expr <= value
        case "gt":
            clause = expr > value
        case "gte":
            clause = expr >= value
        case "prefix":
            clause = expr.like(value if bound else like_prefix(value), escape="/")
        case "like":
            clause = expr.like(value if bound else str(value))
        case "notlike":
            pattern = value if bound else str(value)
            clause = or_(not_(expr.like(pattern)), expr.is_(None))
        case "null":
            clause = expr.is_(None)
        case "notnull":
            clause = expr.is_not(None)
        case _:
            clause = false()
    return clause
