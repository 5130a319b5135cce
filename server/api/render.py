"""Render records and collections as Rancher API JSON, with absolute links and actions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from multidict import MultiMapping

from server.api.context import RequestContext
from server.api.query import CollectionQuery
from server.api.schema import Scope
from server.api.types import ResourceType
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
    links.update(rtype.links(ctx, record, self_url))
    out["links"] = links
    out["actions"] = {name: f"{self_url}?action={name}"
                      for name in rtype.available_actions(record)}
    return out


def render_collection(ctx: RequestContext, rtype: ResourceType, records: list[Record],
                      query: CollectionQuery, params: MultiMapping[str],
                      has_more: bool) -> dict[str, Any]:
    schema = rtype.schema
    url = f"{ctx.base_url}/{schema.collection_name}"
    kept = [(k, v) for k, v in params.items() if k != "marker" and not k.startswith("_")]
    next_url = None
    if has_more:
        next_params = [*kept, ("marker", f"m{query.offset + query.limit}")]
        if not any(k == "limit" for k, _ in kept):
            next_params.append(("limit", str(query.limit)))
        next_url = f"{url}?{urlencode(next_params)}"
    sort_links = {}
    for name, spec in schema.all_fields.items():
        if spec.filterable:
            sort_params = [(k, v) for k, v in kept if k not in ("sort", "order", "limit")]
            sort_links[name] = f"{url}?{urlencode([*sort_params, ('sort', name)])}"
    reverse = [*[(k, v) for k, v in kept if k != "order"],
               ("order", "asc" if query.descending else "desc")]
    create_types = {schema.id: url} if "POST" in schema.collection_methods else {}
    return {
        "type": "collection",
        "resourceType": schema.id,
        "links": {"self": url},
        "createTypes": create_types,
        "actions": {},
        "data": [render_resource(ctx, rtype, r) for r in records],
        "sortLinks": sort_links,
        "pagination": {"first": None, "previous": None, "next": next_url,
                       "limit": query.limit, "total": None, "partial": has_more},
        "sort": {"name": query.sort or "id", "order": "desc" if query.descending else "asc",
                 "reverse": f"{url}?{urlencode(reverse)}"},
        "filters": {name: query.filters.get(name) for name, spec in schema.all_fields.items()
                    if spec.filterable},
        "createDefaults": {},
    }
