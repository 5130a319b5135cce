"""The names each API version gives Corral's types, fields and links, applied at the edge.

Corral has one schema per type, named as ``/v2-beta`` names it. Rancher's ``/v1`` calls some
of them otherwise: a stack is an ``environment`` there (collection ``environments``, ids
``1e<n>``), a service's ``stackId`` is ``environmentId`` and its ``stack`` link is
``environment``. A ``Dialect`` is one version's table of such renames; the handlers pass
what a client sends through its ``*_in`` methods before anything reads it, and what they
send back through its ``*_out`` methods (``schema`` for schemas). The rest of the server
sees only Corral's own names. A version without renames (``/v2-beta``) skips every step.

Cattle did the same with ``RequestReRouterHandler`` (v1 requests rerouted to the v2-beta
types) and ``CompatibilityOutputFilter`` (v2-beta resources renamed on the way out, ids
formatted for the type ``environment``, hence ``1e``); like cattle's id parser, ``/v1``
takes an id with either prefix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from multidict import MultiDict, MultiMapping

from server.api.errors import ApiError
from server.api.schema import Field, Schema
from shared.ids import parse_id

_REFERENCE = re.compile(r"^((?:array\[)?reference\[)(\w+)(\]\]?)$")
_ID = re.compile(r"^(1[a-z]+)([1-9][0-9]{0,17})$")


@dataclass(frozen=True)
class Dialect:
    """One API version's renames, each ``Corral's name -> the version's name``."""

    version: str
    # Schema ids, wherever a type is named: schemas, ``type``, ``baseType``, action inputs.
    types: Mapping[str, str] = field(default_factory=dict)
    # Collection path segments of the renamed types.
    collections: Mapping[str, str] = field(default_factory=dict)
    # Id prefixes of the renamed types (ids, references, URLs).
    prefixes: Mapping[str, str] = field(default_factory=dict)
    # Resource fields, in bodies, filters, sorting and error ``fieldName``s.
    fields: Mapping[str, str] = field(default_factory=dict)
    # Link names, in ``links``, link paths and ``include=``.
    links: Mapping[str, str] = field(default_factory=dict)

    @cached_property
    def renames(self) -> bool:
        """False for a version that names everything as Corral does: every step is a no-op."""
        return bool(self.types or self.collections or self.prefixes or self.fields or
                    self.links)

    # --- names ------------------------------------------------------------------------

    def type_out(self, name: str) -> str:
        return self.types.get(name, name)

    def type_in(self, name: str) -> str | None:
        """Corral's type for a name this version uses; None for a name it does not serve
        (``stack`` on ``/v1``)."""
        return _inbound(self.types, self._types_in, name)

    def collection_in(self, name: str) -> str | None:
        return _inbound(self.collections, self._collections_in, name.lower())

    def collection_out(self, name: str) -> str:
        return self.collections.get(name, name)

    def field_in(self, name: str) -> str:
        return self._fields_in.get(name, name)

    def field_out(self, name: str) -> str:
        return self.fields.get(name, name)

    def link_in(self, name: str) -> str | None:
        return _inbound(self.links, self._links_in, name)

    def link_out(self, name: str) -> str:
        return self.links.get(name, name)

    def id_out(self, value: Any) -> Any:
        """An id (``1st5``) as this version writes it (``1e5``); other values unchanged."""
        if self.prefixes and isinstance(value, str) and (m := _ID.match(value)) and \
                m.group(1) in self.prefixes:
            return self.prefixes[m.group(1)] + m.group(2)
        return value

    def id_in(self, value: Any) -> Any:
        """An id as Corral writes it; ids with Corral's own prefix are taken as they are."""
        if self.prefixes and isinstance(value, str) and (m := _ID.match(value)) and \
                m.group(1) in self._prefixes_in:
            return self._prefixes_in[m.group(1)] + m.group(2)
        return value

    def parse_id(self, value: str, prefix: str) -> int | None:
        """The row number of ``value``, an id of a type whose prefix is ``prefix``."""
        number = parse_id(value, prefix)
        if number is None and self.prefixes:
            number = parse_id(self.id_in(value), prefix)
        return number

    @cached_property
    def _types_in(self) -> dict[str, str]:
        return {wire: own for own, wire in self.types.items()}

    @cached_property
    def _collections_in(self) -> dict[str, str]:
        return {wire: own for own, wire in self.collections.items()}

    @cached_property
    def _fields_in(self) -> dict[str, str]:
        return {wire: own for own, wire in self.fields.items()}

    @cached_property
    def _links_in(self) -> dict[str, str]:
        return {wire: own for own, wire in self.links.items()}

    @cached_property
    def _prefixes_in(self) -> dict[str, str]:
        return {wire: own for own, wire in self.prefixes.items()}

    @cached_property
    def _url_segment(self) -> re.Pattern[str] | None:
        """A renamed collection in a URL path, with the id that may follow it."""
        if not self.collections:
            return None
        names = "|".join(re.escape(name) for name in self.collections)
        return re.compile(rf"/({names})(?:/(1[a-z]+)([1-9][0-9]*))?(?=[/?#]|$)")

    # --- schemas ----------------------------------------------------------------------

    def schema(self, schema: Schema) -> Schema:
        """``schema`` as this version describes it (same object when nothing is renamed)."""
        if not self.renames:
            return schema
        cached = self._schemas.get(id(schema))
        if cached is not None and cached[0] is schema:
            return cached[1]
        renamed = replace(
            schema, id=self.type_out(schema.id),
            base_type=self.type_out(schema.base_type) if schema.base_type else None,
            fields={self.field_out(name): self._field(spec)
                    for name, spec in schema.fields.items()},
            actions={name: replace(a, input=a.input and self.type_out(a.input),
                                   output=a.output and self.type_out(a.output))
                     for name, a in schema.actions.items()},
            links=tuple(self.link_out(name) for name in schema.links))
        self._schemas[id(schema)] = (schema, renamed)
        return renamed

    def _field(self, spec: Field) -> Field:
        if (m := _REFERENCE.match(spec.type)) is None or m.group(2) not in self.types:
            return spec
        return replace(spec, type=m.group(1) + self.types[m.group(2)] + m.group(3))

    @cached_property
    def _schemas(self) -> dict[int, tuple[Schema, Schema]]:
        return {}

    def _references(self, schema: Schema) -> tuple[str, ...]:
        """The fields of ``schema`` that name resources of a type whose ids are renamed."""
        cached = self._reference_fields.get(id(schema))
        if cached is not None and cached[0] is schema:
            return cached[1]
        renamed = {own for own, wire in self.types.items() if wire != own}
        names = tuple(name for name, spec in schema.fields.items()
                      if (m := _REFERENCE.match(spec.type)) and m.group(2) in renamed)
        self._reference_fields[id(schema)] = (schema, names)
        return names

    @cached_property
    def _reference_fields(self) -> dict[int, tuple[Schema, tuple[str, ...]]]:
        return {}

    # --- on the way out ---------------------------------------------------------------

    def url_out(self, url: str) -> str:
        pattern = self._url_segment
        if pattern is None or not any(marker in url for marker in self._url_markers):
            return url
        return pattern.sub(self._segment_out, url)

    @cached_property
    def _url_markers(self) -> tuple[str, ...]:
        return tuple(f"/{name}" for name in self.collections)

    def _segment_out(self, match: re.Match[str]) -> str:
        out = "/" + self.collections[match.group(1)]
        if match.group(2) is not None:
            out += "/" + self.prefixes.get(match.group(2), match.group(2)) + match.group(3)
        return out

    def resource_out(self, schema: Schema, out: dict[str, Any]) -> dict[str, Any]:
        """A rendered resource of ``schema``, renamed in place (and returned)."""
        if not self.renames:
            return out
        for name in self._references(schema):
            value = out.get(name)
            out[name] = [self.id_out(v) for v in value] if isinstance(value, list) \
                else self.id_out(value)
        if schema.id in self.types:
            out["id"] = self.id_out(out["id"])
            if out.get("kind") == schema.id:
                out["kind"] = self.types[schema.id]
        out["type"] = self.type_out(out["type"])
        if "baseType" in out:
            out["baseType"] = self.type_out(out["baseType"])
        for own, wire in self.fields.items():
            if own in out:
                out[wire] = out.pop(own)
        links: dict[str, str] = {}
        for name, url in out.get("links", {}).items():
            wire = self.links.get(name, name)
            if wire != name and url.endswith("/" + name):
                url = url[:-len(name)] + wire
            links[wire] = self.url_out(url)
        out["links"] = links
        out["actions"] = {name: self.url_out(url)
                          for name, url in out.get("actions", {}).items()}
        return out

    def error_out(self, error: ApiError) -> None:
        """Name a renamed field in an error as the client sent it."""
        wire = self.fields.get(error.field_name or "")
        if wire is not None and error.field_name is not None:
            if error.message:
                error.message = error.message.replace(error.field_name, wire)
            error.field_name = wire

    # --- on the way in ----------------------------------------------------------------

    def body_in(self, schema: Schema | None, body: Any) -> Any:
        """A request body with this version's field names, type names and ids turned into
        Corral's; anything but an object is left for validation to refuse."""
        if not self.renames or not isinstance(body, dict):
            return body
        out = {self.field_in(key): value for key, value in body.items()}
        if isinstance(out.get("type"), str):
            out["type"] = self.type_in(out["type"]) or out["type"]
        for name in self._references(schema) if schema is not None else ():
            if name in out:
                value = out[name]
                out[name] = [self.id_in(v) for v in value] if isinstance(value, list) \
                    else self.id_in(value)
        return out

    def query_in(self, schema: Schema, params: MultiMapping[str]) -> MultiMapping[str]:
        """A collection's query string with Corral's names: filters (``environmentId_ne``),
        ``sort``, ``include`` and the ids filters name."""
        if not self.renames:
            return params
        # References filter by row number whatever their prefix; an id filter checks it.
        renamed_ids = schema.id in self.types
        out: MultiDict[str] = MultiDict()
        for key, value in params.items():
            own, name = self._param_in(key)
            if key == "sort":
                value = self.field_in(value)
            elif key == "include":
                value = self.link_in(value) or ""  # a name this version lacks
            elif name == "id" and renamed_ids:
                value = self.id_in(value)
            elif name == "kind":
                value = self.type_in(value) or value
            out.add(own, value)
        return out

    def _param_in(self, key: str) -> tuple[str, str]:
        """A query parameter (``environmentId_ne``) with Corral's field name, and the field."""
        for wire, own in self._fields_in.items():
            if key == wire:
                return own, own
            if key.startswith(wire + "_"):
                return own + key[len(wire):], own
        return key, key.partition("_")[0]


def _inbound(outbound: Mapping[str, str], inbound: Mapping[str, str], name: str) -> str | None:
    if name in inbound:
        return inbound[name]
    return None if name in outbound else name


IDENTITY = Dialect(version="v2-beta")

# Every rename, by version. A rename is one entry; the methods above apply it everywhere.
DIALECTS: Mapping[str, Dialect] = {
    "v1": Dialect(
        version="v1",
        types={"stack": "environment", "stackUpgrade": "environmentUpgrade"},
        collections={"stacks": "environments"},
        prefixes={"1st": "1e"},
        fields={"stackId": "environmentId"},
        links={"stack": "environment", "stacks": "environments"},
    ),
    "v2-beta": IDENTITY,
}


def dialect_for(version: str) -> Dialect:
    return DIALECTS.get(version, IDENTITY)
