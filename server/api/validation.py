"""Check a request body against a schema and return the values to store, or raise a 422."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from server.api.errors import invalid
from server.api.schema import Field, Schema

_ARRAY = re.compile(r"^array\[(.+)\]$")
_MAP = re.compile(r"^map\[(.+)\]$")


def check_body(body: Any) -> dict[str, Any]:
    """The body as an object; an empty body counts as ``{}``."""
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise invalid("InvalidBodyContent", None, "the request body must be a JSON object")
    return body


def _known(schema: Schema, body: Mapping[str, Any]) -> dict[str, Any]:
    """Drop client-side options (``_access_key`` and the like); refuse fields the type lacks."""
    fields = schema.all_fields
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key.startswith("_"):
            continue
        if key not in fields:
            raise invalid("InvalidField", key, f"{schema.id} has no field {key!r}")
        out[key] = value
    return out


def validate_create(schema: Schema, body: Any) -> dict[str, Any]:
    """Values for a new resource: defaults applied, read-only fields ignored, all checked."""
    given = _known(schema, check_body(body))
    values: dict[str, Any] = {}
    for name, spec in schema.all_fields.items():
        if not spec.create:
            continue
        value = given.get(name)
        if value is None:
            if spec.required:
                raise invalid("MissingRequired", name, f"{name} is required")
            if spec.default is not None:
                values[name] = spec.default
            elif name in given and not spec.nullable:
                raise invalid("NotNullable", name, f"{name} may not be null")
            elif name in given:
                values[name] = None
            continue
        values[name] = check_value(name, spec, value)
    return values


def validate_update(schema: Schema, body: Any) -> dict[str, Any]:
    """Values to change on an existing resource; fields that cannot be updated are ignored."""
    given = _known(schema, check_body(body))
    values: dict[str, Any] = {}
    for name, value in given.items():
        spec = schema.all_fields[name]
        if not spec.update:
            continue
        if value is None:
            if not spec.nullable or spec.required:
                raise invalid("NotNullable", name, f"{name} may not be null")
            values[name] = None
            continue
        values[name] = check_value(name, spec, value)
    return values


def validate_input(schema: Schema | None, body: Any) -> dict[str, Any]:
    """An action's input: checked like a create when the action declares an input type."""
    if schema is None:
        check_body(body)
        return {}
    return validate_create(schema, body)


def check_value(name: str, spec: Field, value: Any) -> Any:
    """Check one value against its field; return it (numbers normalised)."""
    kind = spec.type
    if (m := _ARRAY.match(kind)) is not None:
        if spec.lenient and not isinstance(value, list):
            value = [value]
        if not isinstance(value, list):
            raise invalid("InvalidType", name, f"{name} must be a list")
        item = Field(type=m.group(1), lenient=spec.lenient)
        return [check_value(name, item, v) for v in value]
    if (m := _MAP.match(kind)) is not None:
        if not isinstance(value, dict):
            raise invalid("InvalidType", name, f"{name} must be an object")
        item = Field(type=m.group(1))
        return {str(k): check_value(name, item, v) for k, v in value.items()}
    if kind in ("string", "password", "masked", "multiline", "enum", "date") or \
            kind.startswith("reference["):
        if spec.lenient and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise invalid("InvalidType", name, f"{name} must be a string")
        _check_length(name, spec, value)
        if spec.options is not None and value not in spec.options:
            raise invalid("InvalidOption", name,
                          f"{name} must be one of {', '.join(spec.options)}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise invalid("InvalidType", name, f"{name} must be an integer")
        _check_range(name, spec, value)
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise invalid("InvalidType", name, f"{name} must be a number")
        _check_range(name, spec, value)
        return float(value)
    if kind == "boolean":
        if not isinstance(value, bool):
            raise invalid("InvalidType", name, f"{name} must be true or false")
        return value
    return value  # json, blob: any JSON value


def _check_length(name: str, spec: Field, value: str) -> None:
    if spec.max_length is not None and len(value) > spec.max_length:
        raise invalid("MaxLengthExceeded", name,
                      f"{name} is longer than {spec.max_length} characters")
    if spec.min_length is not None and len(value) < spec.min_length:
        raise invalid("MinLengthExceeded", name,
                      f"{name} is shorter than {spec.min_length} characters")


def _check_range(name: str, spec: Field, value: float) -> None:
    if spec.max is not None and value > spec.max:
        raise invalid("MaxLimitExceeded", name, f"{name} is larger than {spec.max}")
    if spec.min is not None and value < spec.min:
        raise invalid("MinLimitExceeded", name, f"{name} is smaller than {spec.min}")
