"""Turn a collection request's query string into a store query: filters, sort, pagination.

Filters are ``field=value`` or ``field_<modifier>=value``; unknown parameters are ignored, as
Rancher's clients expect, but a known field with a bad modifier or value is a 422.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from multidict import MultiMapping

from server.api.errors import invalid
from server.api.schema import Field, Schema
from server.store.interface import INDEXED_DATA, Condition, Operator, ValueKind
from shared.ids import MAX_ROW, format_id, parse_id
from shared.text import encodable

DEFAULT_LIMIT = 100
MAX_LIMIT = 3000  # Rancher's own cap (its docs say 1000; its code says 3000)
# Filter values go to the database as 64-bit integers.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
MODIFIERS: tuple[Operator, ...] = ("eq", "ne", "lt", "lte", "gt", "gte", "prefix", "like",
                                   "notlike", "null", "notnull")
_RESERVED = frozenset({"limit", "marker", "sort", "order", "include", "action"})

# API field name → record column; other fields live in the record's data map.
FIELD_COLUMNS: Mapping[str, str] = {
    "id": "id", "kind": "kind", "uuid": "uuid", "name": "name", "description": "description",
    "state": "state", "removed": "removed", "transitioning": "transitioning",
    "created": "created",
}
# What a collection can be sorted on, as in Rancher: the indexed record columns, and the
# indexed data columns (``INDEXED_DATA``) of the types that have those fields.
SORT_COLUMNS = ("id", "name", "state", "created", "removed", "uuid", "kind", "description",
                "transitioning", *INDEXED_DATA)


@dataclass(frozen=True)
class CollectionQuery:
    conditions: list[Condition]
    filters: dict[str, list[dict[str, Any]]]
    sort: str | None
    descending: bool
    limit: int
    offset: int


_REFERENCE = re.compile(r"^1[a-z]+([1-9][0-9]{0,17})$")


def value_kind(spec: Field) -> ValueKind:
    if spec.type == "int" or spec.type == "date" or spec.type.startswith("reference["):
        return "int"
    if spec.type == "float":
        return "float"
    if spec.type == "boolean":
        return "bool"
    return "string"


def _convert(name: str, spec: Field, raw: str) -> Any:
    if spec.type.startswith("reference["):
        # References are stored as row numbers; clients name them by public id (1h5).
        match = _REFERENCE.match(raw)
        if match is None:
            raise invalid("InvalidFormat", name, f"filter {name} needs an id such as 1h5")
        number = int(match.group(1))
        return number if number <= MAX_ROW else -1    # beyond every row: matches nothing
    kind = value_kind(spec)
    if spec.type == "date":
        return _date_ms(name, raw)
    try:
        if kind == "int":
            return _in_int_range(name, int(raw))
        if kind == "float":
            real = float(raw)
            if not math.isfinite(real):
                raise ValueError(raw)
            return real
    except ValueError:
        raise invalid("InvalidFormat", name, f"filter {name} needs a number") from None
    if kind == "bool":
        lowered = raw.lower()
        if lowered not in ("true", "false"):
            raise invalid("InvalidFormat", name, f"filter {name} needs true or false")
        return lowered == "true"
    if "\x00" in raw or not encodable(raw):
        raise invalid("InvalidCharacters", name, f"filter {name} has characters that cannot "
                                                 "be stored")
    return raw


def _date_ms(name: str, raw: str) -> int:
    """A date filter's value as the stored milliseconds: a number of them, or a timestamp as
    the API shows dates (``2016-08-12T17:59:53Z``; UTC where no offset is given)."""
    if re.fullmatch(r"-?[0-9]{1,20}", raw):
        return _in_int_range(name, int(raw))
    if re.fullmatch(r"-?[0-9]+", raw):
        raise invalid("InvalidFormat", name, f"{name} does not fit in a 64-bit integer")
    try:
        stamp = datetime.fromisoformat(raw)
    except ValueError:
        raise invalid("InvalidFormat", name, f"filter {name} needs a date such as "
                                             "2016-08-12T17:59:53Z") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return _in_int_range(name, round(stamp.timestamp() * 1000))


def _in_int_range(name: str, value: int) -> int:
    if not INT_MIN <= value <= INT_MAX:
        raise invalid("InvalidFormat", name, f"{name} does not fit in a 64-bit integer")
    return value


def sortable_fields(schema: Schema) -> list[str]:
    """The fields a collection of ``schema`` can be sorted on (its ``sortLinks``)."""
    fields = schema.all_fields
    return [name for name in SORT_COLUMNS if name in fields]


def _split(param: str, fields: Mapping[str, Field]) -> tuple[str, Operator] | None:
    if param in fields:
        return param, "eq"
    name, sep, modifier = param.rpartition("_")
    for op in MODIFIERS:
        if sep and name in fields and modifier == op:
            return name, op
    return None


def _int_param(params: MultiMapping[str], name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid("InvalidFormat", name, f"{name} must be an integer") from None
    if value < (1 if name == "limit" else 0):
        raise invalid("MinLimitExceeded", name, f"{name} is too small")
    return value


def parse_marker(raw: str | None) -> int:
    if not raw:
        return 0
    if re.fullmatch(r"m[0-9]{1,18}", raw):
        return int(raw[1:])
    raise invalid("InvalidFormat", "marker", "marker is not one this server issued")


def parse_collection_query(schema: Schema, params: MultiMapping[str]) -> CollectionQuery:
    fields = schema.all_fields
    conditions: list[Condition] = []
    filters: dict[str, list[dict[str, Any]]] = {}
    for param in params:
        if param in _RESERVED or param.startswith("_"):
            continue
        split = _split(param, fields)
        if split is None:
            continue  # not ours: Rancher's clients add parameters of their own
        name, modifier = split
        spec = fields[name]
        if not spec.filterable:
            raise invalid("InvalidOption", name, f"{schema.id} cannot be filtered by {name}")
        if modifier not in spec.modifiers:
            raise invalid("InvalidOption", name,
                          f"filter modifier {modifier!r} does not apply to {name}")
        for raw in params.getall(param):
            value = None if modifier in ("null", "notnull") else _convert(name, spec, raw)
            if name == "id" and value is not None:
                value = _id_number(schema, name, modifier, str(value))
            conditions.append(Condition(field=FIELD_COLUMNS.get(name, name), op=modifier,
                                        value=value, kind="int" if name == "id"
                                        else value_kind(spec)))
            filters.setdefault(name, []).append({"modifier": modifier, "value": raw})
    sort = params.get("sort") or None
    if sort is not None and sort not in sortable_fields(schema):
        raise invalid("InvalidOption", "sort", f"{schema.id} cannot be sorted by {sort!r}")
    order = (params.get("order") or "asc").lower()
    if order not in ("asc", "desc"):
        raise invalid("InvalidOption", "order", "order must be asc or desc")
    limit = min(_int_param(params, "limit", DEFAULT_LIMIT), MAX_LIMIT)
    return CollectionQuery(conditions=conditions, filters=filters, sort=sort,
                           descending=order == "desc", limit=limit,
                           offset=parse_marker(params.get("marker")))


def _id_number(schema: Schema, name: str, modifier: Operator, raw: str) -> int:
    """An id's row number. Another type's id (or none at all) equals no row here, but has no
    place in an order, so a comparison with it is refused."""
    number = parse_id(raw, schema.id_prefix)
    if number is not None:
        return number
    if modifier in ("eq", "ne"):
        return -1
    raise invalid("InvalidFormat", name, f"filter {name}_{modifier} needs an id such as "
                                         f"{format_id(schema.id_prefix, 5)}")
