"""Hypothesis strategies for fuzzing the API edge, built from the schemas the server serves.

Values come from a field's declared type and options, mixed with hostile ones: wrong types,
integers at and beyond 64 bits, numbers JSON can spell but Python cannot hold (``1e400``),
``NaN``, lone surrogates, NUL/CR/LF, very long strings and deep nesting. Bodies are JSON text
written by ``to_json`` so that such literals reach the server as a client could send them.
Query strings, path segments and ids are produced already percent-encoded, so that odd
encodings (``%00``, ``%FF``, ``%ED%A0%80``) reach the server as they were drawn.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

Json = Any
FieldSpec = Mapping[str, Any]
# Existing public ids for a resource type (``reference[host]`` -> ["1h1", ...]).
IdsOf = Callable[[str], Sequence[str]]


@dataclass(frozen=True)
class Raw:
    """JSON text written as is: literals ``json.dumps`` will not write (1e400, deep nesting)."""

    text: str

    def __repr__(self) -> str:
        return f"Raw({short(self.text)})"


def short(text: str, keep: int = 60) -> str:
    """``text`` for a failure report: long values show their start and length."""
    if len(text) <= keep:
        return repr(text)
    return f"{text[:keep]!r}...<{len(text)} chars>"


def to_json(value: Json) -> str:
    """JSON text of ``value``; ``Raw`` parts are written verbatim, strings ASCII-escaped."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{to_json(v)}"
                              for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    return json.dumps(value)


def nested(depth: int, opener: str = "[") -> Raw:
    closer = "]" if opener == "[" else "}"
    inner = opener if opener == "[" else '{"a":'
    return Raw(inner * depth + "1" * (opener == "{") + closer * depth)


# --- scalars ----------------------------------------------------------------------------

BIG_INTS: tuple[int, ...] = (2**31, -(2**31) - 1, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1,
                             2**64, 10**30, -(10**30))
ODD_NUMBERS: tuple[Raw, ...] = (Raw("1e400"), Raw("-1e400"), Raw("NaN"), Raw("Infinity"),
                                Raw("-Infinity"), Raw("1e-400"), Raw("-0.0"), Raw("9" * 5000))
ODD_STRINGS: tuple[str, ...] = (
    "", " ", "\ud800", "x\udfffy", "a\x00b", "line\r\nInjected: 1", "\r", "\n", "\t",
    "x" * 70_000, "é𝄞漢", "%00", "%s%n", "../../etc/passwd", "1a1", "1h999999999999999999999",
    "null", "<script>", "' OR '1'='1", "\u202e", "\ufeff",
)
DEEP: tuple[Raw, ...] = (nested(500), nested(990), nested(5_000), nested(5_000, "{"))


def hostile_values() -> st.SearchStrategy[Json]:
    """Values no field should take, or that push a field's limits; never a crash."""
    wrong_types: st.SearchStrategy[Json] = st.sampled_from(
        [True, False, None, [], {}, [1, "a", None], {"a": {"b": []}}, 0, -1, 0.5])
    return st.one_of(wrong_types, st.sampled_from(BIG_INTS), st.sampled_from(ODD_NUMBERS),
                     st.sampled_from(ODD_STRINGS), st.sampled_from(DEEP))


def json_values() -> st.SearchStrategy[Json]:
    leaves = st.none() | st.booleans() | st.integers() | \
        st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10)
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=3) |
                        st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)


def _inner_type(kind: str, wrapper: str) -> str | None:
    if kind.startswith(wrapper + "[") and kind.endswith("]"):
        return kind[len(wrapper) + 1:-1]
    return None


def valid_values(spec: FieldSpec, ids_of: IdsOf) -> st.SearchStrategy[Json]:
    """Values of the field's declared type that respect its options and limits."""
    kind = str(spec.get("type", "string"))
    if (item := _inner_type(kind, "array")) is not None:
        return st.lists(valid_values({"type": item}, ids_of), max_size=3)
    if (item := _inner_type(kind, "map")) is not None:
        return st.dictionaries(st.text(max_size=8), valid_values({"type": item}, ids_of),
                               max_size=3)
    if (target := _inner_type(kind, "reference")) is not None:
        known = list(ids_of(target))
        return st.sampled_from(known) if known else st.just("1x1")
    if spec.get("options"):
        return st.sampled_from(list(spec["options"]))
    if kind == "int":
        return st.integers(min_value=spec.get("min"), max_value=spec.get("max"))
    if kind == "float":
        return st.floats(min_value=spec.get("min"), max_value=spec.get("max"),
                         allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind in ("json", "blob"):
        return json_values()
    return st.text(min_size=spec.get("minLength") or 0,
                   max_size=min(spec.get("maxLength") or 40, 40))


def field_values(spec: FieldSpec, ids_of: IdsOf) -> st.SearchStrategy[Json]:
    """Mostly valid values (so requests get past validation), sometimes hostile ones."""
    return st.one_of(valid_values(spec, ids_of), valid_values(spec, ids_of), hostile_values())


# --- request bodies ---------------------------------------------------------------------

RAW_BODIES: tuple[bytes, ...] = (
    b"", b"   ", b"null", b"[]", b"[1,2]", b'"text"', b"42", b"true", b"{", b'{"a":}',
    b"\xff\xfe\x00", b'{"name": "\xed\xa0\x80"}', b"\x00", b'{"a":1}garbage',
    b'{"name":"a","name":"b"}', ("[" * 100_000 + "]" * 100_000).encode(),
    ('{"a":' * 100_000 + "1" + "}" * 100_000).encode(), b'{"x":"' + b"y" * 1_100_000 + b'"}',
)


def bodies(fields: Mapping[str, FieldSpec], verb: str, ids_of: IdsOf) -> st.SearchStrategy[bytes]:
    """Request bodies for ``verb`` (``create`` or ``update``) against these fields: objects
    with the required and some optional fields, an extra field now and then, or raw bytes."""
    writable = sorted(name for name, spec in fields.items() if spec.get(verb))
    required = [name for name in writable if fields[name].get("required")]
    everything = sorted(fields)

    @st.composite
    def objects(draw: st.DrawFn) -> bytes:
        names = list(required)
        if writable:
            names += draw(st.lists(st.sampled_from(writable), unique=True, max_size=4))
        body: dict[str, Json] = {n: draw(field_values(fields[n], ids_of)) for n in names}
        extra = draw(st.sampled_from(["none", "unknown", "read-only", "client-option"]))
        if extra == "unknown":
            body[draw(st.sampled_from(["bogus", "\ud800", "a\x00", ""]))] = 1
        elif extra == "read-only" and everything:
            body[draw(st.sampled_from(everything))] = draw(hostile_values())
        elif extra == "client-option":
            body["_access_key"] = draw(hostile_values())
        return to_json(body).encode("utf-8", "surrogatepass")

    return st.one_of(objects(), st.sampled_from(RAW_BODIES))


# --- query strings, path segments, ids --------------------------------------------------

ALL_MODIFIERS: tuple[str, ...] = ("eq", "ne", "lt", "lte", "gt", "gte", "prefix", "like",
                                  "notlike", "null", "notnull", "bogus", "")
ODD_ENCODED: tuple[str, ...] = (
    "99999999999999999999", "-9223372036854775809", "9223372036854775808", "18446744073709551616",
    "1e400", "NaN", "inf", "-0", "0x10", "%ED%A0%80", "%FF%FE", "%00", "%0D%0A", "%0D", "%",
    "%zz", "+", "%2B", "a%26b%3Dc", "", "%25", "1a" + "9" * 30, "m" + "9" * 40, "x" * 5_000,
    "%C0%AF", "%E2%80%AE",
)


def encoded_text() -> st.SearchStrategy[str]:
    """Percent-encoded text, or an odd encoding as is."""
    return st.one_of(st.text(max_size=12).map(lambda t: quote(t, safe="")),
                     st.sampled_from(ODD_ENCODED))


def _filter_values(spec: FieldSpec, ids_of: IdsOf) -> st.SearchStrategy[str]:
    kind = str(spec.get("type", "string"))
    if kind in ("int", "date"):
        typed: st.SearchStrategy[str] = st.one_of(st.integers(), st.sampled_from(BIG_INTS)) \
            .map(str)
    elif kind == "float":
        typed = st.floats().map(str)
    elif kind == "boolean":
        typed = st.sampled_from(["true", "false", "TRUE", "yes"])
    elif spec.get("options"):
        typed = st.sampled_from(list(spec["options"]))
    elif (target := _inner_type(kind, "reference")) is not None:
        typed = st.sampled_from([*ids_of(target), "1h5", "1h0", "1h" + "9" * 25])
    else:
        typed = st.text(max_size=12).map(lambda t: quote(t, safe=""))
    return st.one_of(typed, encoded_text())


def queries(schema: Mapping[str, Any], ids_of: IdsOf) -> st.SearchStrategy[str]:
    """Encoded query strings for a collection: filters with every modifier (and some it does
    not take), sort, order, limit, marker, include, and parameters of no meaning."""
    fields: Mapping[str, FieldSpec] = schema.get("resourceFields", {})
    names = sorted(fields) or ["id"]

    @st.composite
    def filters(draw: st.DrawFn) -> str:
        name = draw(st.sampled_from(names))
        modifier = draw(st.sampled_from(ALL_MODIFIERS))
        key = f"{name}_{modifier}" if modifier else name
        return f"{quote(key, safe='')}={draw(_filter_values(fields.get(name, {}), ids_of))}"

    numbers = st.one_of(st.integers(-5, 2000), st.sampled_from(BIG_INTS)).map(str)
    reserved = st.one_of(
        st.tuples(st.just("sort"), st.one_of(st.sampled_from(names), encoded_text())),
        st.tuples(st.just("order"), st.sampled_from(["asc", "desc", "DESC", "up", ""])),
        st.tuples(st.just("limit"), st.one_of(numbers, encoded_text())),
        st.tuples(st.just("marker"), st.one_of(numbers.map(lambda n: "m" + n), encoded_text())),
        st.tuples(st.just("include"), st.one_of(st.sampled_from(names), encoded_text())),
        st.tuples(encoded_text(), encoded_text()),
    ).map(lambda kv: f"{kv[0]}={kv[1]}")
    oddities = st.sampled_from(["", "&", "=", "==", "a", "%00=1", "_x=1", ";", "a=1;b=2"])
    return st.lists(st.one_of(filters(), reserved, oddities), max_size=5).map("&".join)


def ids(prefix: str, own: Sequence[str], foreign: Sequence[str]) -> st.SearchStrategy[str]:
    """Path segments that name a resource: its own ids, other types' ids, its prefix with odd
    numbers, and garbage (already percent-encoded)."""
    numbers = ["0", "-1", "01", "1e5", "9" * 18, "9" * 19, "9" * 30, "1" + "0" * 4400, " 1"]
    parts = [st.sampled_from([prefix + quote(n, safe="") for n in numbers]), encoded_text(),
             st.sampled_from(["1a1%00", "1a1%0D%0AX-Injected:%201", "..", "%2F", "%2E%2E"])]
    if own:
        parts.insert(0, st.sampled_from(list(own)))
    if foreign:
        parts.insert(1, st.sampled_from(list(foreign)))
    return st.one_of(*parts)


# --- probes: explicit examples every run tries ------------------------------------------

PROBES: tuple[Json, ...] = (
    "\ud800", "x\udfffy", "a\x00b", "line\r\nInjected: 1", "x" * 70_000, 2**63,
    -(2**63) - 1, 10**30, Raw("1e400"), Raw("NaN"), Raw("-Infinity"), Raw("9" * 5000),
    nested(990), nested(5_000), nested(5_000, "{"), [1, "a"], True,
)
_NUMBER_PROBES: tuple[Json, ...] = (2**63, 10**30, Raw("1e400"), Raw("NaN"))
_JSON_PROBES: tuple[Json, ...] = (nested(990), {"k": "\ud800"}, Raw("1e400"), Raw("NaN"),
                                  2**64, {"k": [Raw("-1e400")]})


def _type_probes(kind: str) -> tuple[Json, ...]:
    """A few values that probe a field of this declared type where it is weakest."""
    if kind in ("int", "float", "date"):
        return _NUMBER_PROBES
    if kind.startswith("array["):
        return (["\ud800"], [Raw("1e400")], [2**64], nested(990))
    if kind.startswith("map["):
        return ({"\ud800": "x"}, {"k": "\ud800"}, {"k": Raw("1e400")}, {"k": nested(990)})
    if kind in ("json", "blob"):
        return _JSON_PROBES
    return ("\ud800", "a\x00b")


def _main_field(fields: Mapping[str, FieldSpec], writable: Sequence[str]) -> str | None:
    strings = [n for n in writable if fields[n].get("type") == "string"]
    for pick in ("name", *strings, *writable):
        if pick in writable:
            return pick
    return None


def probe_bodies(fields: Mapping[str, FieldSpec], verb: str, seed: Mapping[str, Json]) -> \
        list[bytes]:
    """Bodies that are valid but for one probe: every probe in the main field (the name),
    the probes of its type in each other field, then raw bodies (deep, not UTF-8, huge)."""
    writable = sorted(name for name, spec in fields.items() if spec.get(verb))
    main = _main_field(fields, writable)
    out = [{**seed, main: probe} for probe in PROBES] if main else []
    turns: dict[int, int] = {}
    for name in writable:
        if name == main:
            continue
        probes = _type_probes(str(fields[name].get("type")))
        # One probe per field, in turn, so that a type's probes spread over its fields.
        turn = turns.get(id(probes), 0)
        turns[id(probes)] = turn + 1
        out.append({**seed, name: probes[turn % len(probes)]})
    return [to_json(body).encode() for body in out] + list(RAW_PROBES)


# Bodies that are not objects a schema could check: deep, not UTF-8, huge, odd keys.
RAW_PROBES: tuple[bytes, ...] = (*RAW_BODIES[-3:], b"\xff\xfe\x00", b'{"\\ud800": 1}',
                                 b'{"name": "\xed\xa0\x80"}')


_ENCODED_NUMBER_PROBES = ("99999999999999999999", "-9223372036854775809", "1e400", "NaN")
_ENCODED_TEXT_PROBES = ("%ED%A0%80", "%00", "%0D%0A")


def probe_queries(schema: Mapping[str, Any]) -> list[str]:
    """For one field of each declared type: every modifier it takes with a value it should
    refuse; then the reserved parameters at their limits."""
    fields: Mapping[str, FieldSpec] = schema.get("resourceFields", {})
    filters: Mapping[str, Any] = schema.get("collectionFilters", {})
    by_kind: dict[str, str] = {}
    for name in sorted(filters):
        by_kind.setdefault(str(fields.get(name, {}).get("type", "string")), name)
    out: list[str] = []
    for kind, name in sorted(by_kind.items()):
        values = _ENCODED_NUMBER_PROBES if kind in ("int", "float", "date") else \
            ("1h" + "9" * 25,) if kind.startswith("reference[") else _ENCODED_TEXT_PROBES
        for index, modifier in enumerate(filters[name]["modifiers"]):
            out.append(f"{name}_{modifier}={values[index % len(values)]}")
    out += [f"id=1a{'9' * 30}", "id_ne=1a1%00", f"limit={2**64}", "limit=-1", "limit=1e400",
            f"marker=m{'9' * 18}", f"marker=m{'9' * 19}", "sort=%ED%A0%80", "order=%00",
            "include=%00", "%ED%A0%80=1", "%00=1", "sort=id&order=desc&limit=1&marker=m1"]
    return out


def probe_ids(prefix: str, foreign: Sequence[str]) -> list[str]:
    return [prefix + "9" * 19, prefix + "9" * 30, prefix + "1" + "0" * 4400, prefix + "1%00",
            prefix + "1%0D%0A", prefix + "%ED%A0%80", "%00", "%0D%0A", "%ED%A0%80", "%FF",
            *foreign[:2]]
