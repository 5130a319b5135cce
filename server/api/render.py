"""Render records and collections as Rancher API JSON, with absolute links and actions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from multidict import MultiMapping

from server.api import policy
from server.api.context import RequestContext
from server.api.dialect import Dialect
from server.api.query import CollectionQuery, sortable_fields
from server.api.schema import Scope
from server.api.types import Linked, ResourceType
from server.store import Record
from shared.ids import format_id

ACCOUNT_PREFIX = "1a"


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    stamp = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def public_id(rtype: ResourceType, number: int) -> str:
    return format_id(rtype.schema.id_prefix, number)


def resource_url(ctx: RequestContext, rtype: ResourceType, record: Record) -> str:
    return f"{ctx.base_url}/{rtype.schema.collection_name}/{public_id(rtype, record.id)}"


def render_resource(ctx: RequestContext, rtype: ResourceType, record: Record) -> dict[str, Any]:
    # A collection of a base type (``services``) holds its kinds: each renders as its own.
    rtype = ctx.services.types.get(record.type) or rtype
    schema = rtype.schema
    self_url = resource_url(ctx, rtype, record)
    owner = record.project_id if schema.scope is Scope.PROJECT else record.account_id
    out: dict[str, Any] = {
        "id": public_id(rtype, record.id),
        "type": schema.id,
        "baseType": schema.base,
        "kind": record.kind,
        "uuid": record.uuid,
        "name": record.name,
        "description": record.description,
        "state": record.state,
        "accountId": format_id(ACCOUNT_PREFIX, owner) if owner is not None else None,
        "transitioning": record.transitioning,
        "transitioningMessage": record.transitioning_message,
        "transitioningProgress": record.transitioning_progress,
        "created": iso(record.created),
        "createdTS": record.created,
        "removed": iso(record.removed),
        "removedTS": record.removed,
    }
    for name, spec in schema.fields.items():
        if name in out:
            continue
        out[name] = record.data.get(name, spec.default)
    out.update(rtype.computed(ctx, record))
    out.update(ctx.reveal.get(record.id, {}))
    links = {"self": self_url}
    if owner is not None:
        owners = "projects" if schema.scope is Scope.PROJECT else "accounts"
        links["account"] = f"{ctx.version_url}/{owners}/{out['accountId']}"
    links.update({name: f"{self_url}/{name}" for name in schema.links})
    links.update(rtype.links(ctx, record, self_url))
    out["links"] = links
    out["actions"] = {name: f"{self_url}?action={name}"
                      for name in rtype.available_actions(record)}
    return ctx.dialect.resource_out(schema, out)


async def render_link(ctx: RequestContext, rtype: ResourceType, record: Record,
                      name: str) -> dict[str, Any]:
    """``GET <resource>/<name>``: a declared link's collection (or object), else the type's
    own links computed on request (stats)."""
    if name not in rtype.schema.links:
        return await rtype.follow_link(ctx.caller, record, name)
    linked = await rtype.linked(ctx.caller, record, name)
    items = _render_linked(ctx, linked)
    if linked.one:
        return items[0] if items else {}
    dialect = ctx.dialect
    url = dialect.url_out(f"{resource_url(ctx, rtype, record)}/{dialect.link_out(name)}")
    return {"type": "collection", "resourceType": dialect.type_out(linked.resource_type),
            "links": {"self": url}, "createTypes": {}, "actions": {}, "data": items,
            "sortLinks": {}, "pagination": {"first": None, "previous": None, "next": None,
                                            "limit": len(items), "total": None,
                                            "partial": linked.partial},
            "sort": None, "filters": {}, "createDefaults": {}}


async def render_with_included(ctx: RequestContext, rtype: ResourceType, record: Record,
                               include: Sequence[str]) -> dict[str, Any]:
    """The resource with the links named by ``?include=`` embedded under their names."""
    out = render_resource(ctx, rtype, record)
    await embed_included(ctx, rtype, [record], [out], include)
    return out


async def embed_included(ctx: RequestContext, rtype: ResourceType, records: Sequence[Record],
                         rendered: Sequence[dict[str, Any]], include: Sequence[str]) -> None:
    """Embed each included link of ``records`` in their renderings: a list for a collection
    link, an object (or null) for a link to one. Names that are not links are ignored, as
    unknown query parameters are."""
    names = [name for name in dict.fromkeys(include) if name in rtype.schema.links]
    for record, out in zip(records, rendered, strict=True):
        for name in names:
            linked = await rtype.linked(ctx.caller, record, name)
            items = _render_linked(ctx, linked)
            out[ctx.dialect.link_out(name)] = (items[0] if items else None) if linked.one \
                else items


def _render_linked(ctx: RequestContext, linked: Linked) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for record in linked.records:
        other = ctx.services.types.get(record.type)
        if other is not None and policy.can_use(ctx.principal, other.schema):
            items.append(render_resource(ctx, other, record))
    for obj in linked.objects:
        items.append({"type": ctx.dialect.type_out(linked.resource_type), "links": {},
                      "actions": {}, **obj})
    return items


def _filters_out(dialect: Dialect,
                 given: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    if given is None or not dialect.renames:
        return given
    return [{**f, "value": dialect.id_out(f["value"])} for f in given]


def render_collection(ctx: RequestContext, rtype: ResourceType, records: list[Record],
                      query: CollectionQuery, params: MultiMapping[str],
                      has_more: bool) -> dict[str, Any]:
    schema = rtype.schema
    dialect = ctx.dialect
    url = f"{ctx.base_url}/{dialect.collection_out(schema.collection_name)}"
    kept = [(k, v) for k, v in params.items() if k != "marker" and not k.startswith("_")]
    next_url = None
    if has_more:
        next_params = [*kept, ("marker", f"m{query.offset + query.limit}")]
        if not any(k == "limit" for k, _ in kept):
            next_params.append(("limit", str(query.limit)))
        next_url = f"{url}?{urlencode(next_params)}"
    sort_params = [(k, v) for k, v in kept if k not in ("sort", "order", "limit")]
    sort_links = {wire: f"{url}?{urlencode([*sort_params, ('sort', wire)])}"
                  for wire in map(dialect.field_out, sortable_fields(schema))}
    reverse = [*[(k, v) for k, v in kept if k != "order"],
               ("order", "asc" if query.descending else "desc")]
    create_types = {dialect.type_out(schema.id): url} \
        if "POST" in schema.collection_methods else {}
    return {
        "type": "collection",
        "resourceType": dialect.type_out(schema.id),
        "links": {"self": url},
        "createTypes": create_types,
        "actions": {},
        "data": [render_resource(ctx, rtype, r) for r in records],
        "sortLinks": sort_links,
        "pagination": {"first": None, "previous": None, "next": next_url,
                       "limit": query.limit, "total": None, "partial": has_more},
        "sort": {"name": dialect.field_out(query.sort or "id"),
                 "order": "desc" if query.descending else "asc",
                 "reverse": f"{url}?{urlencode(reverse)}"},
        "filters": {dialect.field_out(name): _filters_out(dialect, query.filters.get(name))
                    for name, spec in schema.all_fields.items() if spec.filterable},
        "createDefaults": {},
    }
