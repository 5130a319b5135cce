"""Generic REST handlers for every resource type: versions, schemas, collections, resources,
actions. Paths are parsed here, so project scoping works the same under every collection.

An environment is in scope when the request names it (``/v1/projects/1a5/...`` or the
``X-API-Project-Id`` header): then everything stays in it. Without one, a principal that
reaches everywhere (the admin) lists across environments, filters by ``accountId`` and
creates where ``accountId`` says (else in its Default environment); a resource read by id is
acted on in its own environment, whichever that is.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from aiohttp import web

from server import operations
from server.api import policy
from server.api.auth import authenticate_api
from server.api.client_headers import ACCOUNT_ID_KEY
from server.api.context import Principal, RequestContext
from server.api.dialect import Dialect, dialect_for
from server.api.errors import ApiError, MethodNotAllowed, NotFound, invalid
from server.api.policy import Verb
from server.api.query import FIELD_COLUMNS, parse_collection_query, value_kind
from server.api.render import (
    embed_included,
    render_collection,
    render_link,
    render_resource,
    render_with_included,
)
from server.api.schema import Scope
from server.api.subscribe import subscribe
from server.api.throttle import CredentialKind
from server.api.types import ResourceType
from server.api.web import SCHEMAS_URL_KEY, VERSIONS, json_response, origin, read_json
from server.caller import Caller
from server.services import Services
from server.store import Condition, Query, Record
from shared.ids import format_id, parse_id

SERVICES = web.AppKey("services", Services)
PROJECT_PREFIX = "1a"
# Removed resources stay listed this long, as in Rancher, and readable by id for ever.
REMOVED_LISTED_MS = 300_000


async def versions(request: web.Request) -> web.Response:
    base = origin(request)
    data = [{"id": v, "type": "apiVersion", "links": {"self": f"{base}/{v}"}, "actions": {}}
            for v in VERSIONS]
    return json_response({"type": "collection", "resourceType": "apiVersion",
                          "links": {"self": f"{base}/", "latest": f"{base}/v2-beta"},
                          "createTypes": {}, "actions": {}, "sortLinks": {},
                          "pagination": None, "sort": None, "filters": {},
                          "createDefaults": {}, "data": data})


async def _project_record(services: Services, number: int) -> Record | None:
    return await services.projects.get(number, lambda: services.store.get(number))


async def _project(services: Services, principal: Principal, raw: str | None) -> Record | None:
    if raw is None:
        if principal.default_project_id is None:
            return None
        project = await _project_record(services, principal.default_project_id)
        return project if project is not None and project.removed is None else None
    number = parse_id(raw, PROJECT_PREFIX)
    project = await _project_record(services, number) if number is not None else None
    if project is None or project.type != "project" or \
            not policy.can_enter_project(principal, project):
        raise NotFound(f"environment {raw} not found")
    return project


def _project_link(services: Services, segments: list[str]) -> bool:
    """``/projects/<id>/<name>`` names a project's own link (``hostStats``), not a
    collection scoped to that project (a link like ``hosts`` leads to that collection)."""
    project = services.types.schema("project")
    return len(segments) == 3 and project is not None and segments[2] in project.links \
        and services.types.by_collection(segments[2]) is None


async def api(request: web.Request) -> web.StreamResponse:
    dialect = dialect_for(request.match_info["version"])
    try:
        return await _serve(request, dialect)
    except ApiError as exc:
        dialect.error_out(exc)
        raise


async def _serve(request: web.Request, dialect: Dialect) -> web.StreamResponse:
    """One API request, every name in it already Corral's own or turned into it here."""
    services = request.app[SERVICES]
    version = request.match_info["version"]
    version_url = f"{origin(request)}/{version}"
    segments = [s for s in request.match_info["tail"].split("/") if s]
    scoped = None
    if len(segments) >= 3 and segments[0] == "projects" and not _project_link(services,
                                                                             segments):
        scoped, segments = segments[1], segments[2:]
    base_url = f"{version_url}/projects/{scoped}" if scoped else version_url
    request[SCHEMAS_URL_KEY] = f"{base_url}/schemas"
    if len(segments) == 2 and segments[0] == "projects" and not scoped:
        # A client built on an environment's URL discovers that environment's schemas.
        request[SCHEMAS_URL_KEY] = f"{version_url}/projects/{segments[1]}/schemas"
    header = request.headers.get("Authorization")
    principal = await services.auth_guard.attempt_for(
        request, header, CredentialKind.API_KEY,
        lambda: authenticate_api(services.store, header, services.key_cache))
    if principal.account_id is not None:
        request[ACCOUNT_ID_KEY] = format_id(PROJECT_PREFIX, principal.account_id)
    header_project = request.headers.get("X-API-Project-Id") or None
    project = await _project(services, principal, scoped or header_project)
    caller = Caller(services=services, actor=principal.actor, project=project,
                    account_id=principal.account_id, origin=origin(request))
    ctx = RequestContext(principal=principal, project=project, version_url=version_url,
                         base_url=base_url, services=services, caller=caller,
                         explicit_project=bool(scoped or header_project), dialect=dialect)
    match segments:
        case []:
            return _root(request, ctx)
        case ["schemas"]:
            return _schemas(ctx)
        case ["subscribe"]:
            return await subscribe(request, ctx)
        case ["schemas", schema_id]:
            return _schema(ctx, schema_id)
        case [collection]:
            rtype = _type(ctx, collection)
            if request.method == "GET":
                return await _list(request, ctx, rtype)
            if request.method == "POST":
                return await _create(request, ctx, rtype)
            raise MethodNotAllowed(f"{request.method} is not allowed on a collection")
        case [collection, resource_id]:
            rtype = _type(ctx, collection)
            return await _resource(request, ctx, rtype, resource_id)
        case [collection, resource_id, link]:
            rtype = _type(ctx, collection)
            if request.method != "GET":
                raise MethodNotAllowed("links are read with GET")
            record = await load(ctx, rtype, resource_id)
            return json_response(await render_link(await _in_record_env(ctx, rtype, record),
                                                   rtype, record,
                                                   dialect.link_in(link) or link))
        case _:
            raise NotFound(f"no such resource: {request.path}")


def _root(request: web.Request, ctx: RequestContext) -> web.Response:
    if request.method != "GET":
        raise MethodNotAllowed(f"{request.method} is not allowed here")
    links = {"self": ctx.base_url, "schemas": ctx.schemas_url,
             "subscribe": f"{ctx.base_url}/subscribe"}
    for schema in ctx.services.types.schemas():
        if not schema.embedded and policy.can_use(ctx.principal, schema):
            name = ctx.dialect.collection_out(schema.collection_name)
            links[name] = f"{ctx.base_url}/{name}"
    return json_response({"id": ctx.version_url.rsplit("/", 1)[1], "type": "apiVersion",
                          "links": links, "actions": {}})


def _schemas(ctx: RequestContext) -> web.Response:
    data = [ctx.dialect.schema(s).render(ctx.base_url) for s in ctx.services.types.schemas()
            if policy.can_use(ctx.principal, s)]
    return json_response({"type": "collection", "resourceType": "schema",
                          "links": {"self": ctx.schemas_url, "root": ctx.base_url},
                          "createTypes": {}, "actions": {}, "pagination": None,
                          "sortLinks": {}, "sort": None, "filters": {},
                          "createDefaults": {}, "data": data})


def _schema(ctx: RequestContext, schema_id: str) -> web.Response:
    own = ctx.dialect.type_in(schema_id)
    schema = ctx.services.types.schema(own) if own is not None else None
    if schema is None or not policy.can_use(ctx.principal, schema):
        raise NotFound(f"schema {schema_id} not found")
    return json_response(ctx.dialect.schema(schema).render(ctx.base_url))


def _type(ctx: RequestContext, collection: str) -> ResourceType:
    own = ctx.dialect.collection_in(collection)
    rtype = ctx.services.types.by_collection(own) if own is not None else None
    if rtype is None or not policy.can_use(ctx.principal, rtype.schema):
        raise NotFound(f"unknown resource type {collection!r}")
    return rtype


def _spans(ctx: RequestContext) -> bool:
    """Whether this request reaches every environment and account (no scope named)."""
    return not ctx.explicit_project and policy.reaches_everywhere(ctx.principal)


def _scope_filter(ctx: RequestContext, rtype: ResourceType) -> dict[str, Any]:
    scope = rtype.schema.scope
    if scope is Scope.GLOBAL or _spans(ctx):
        return {}
    if scope is Scope.PROJECT:
        if ctx.project is None:
            return {"project_id": -1}
        return {"project_id": ctx.project.id}
    return {"account_id": ctx.principal.account_id}


def _owner_column(rtype: ResourceType) -> str:
    """The record column ``accountId`` stands for in a type's collection."""
    return "project_id" if rtype.schema.scope is Scope.PROJECT else "account_id"


def _owner_conditions(rtype: ResourceType, conditions: list[Condition]) -> list[Condition]:
    column = _owner_column(rtype)
    return [dataclasses.replace(c, field=column, kind="int") if c.field == "accountId" else c
            for c in conditions]


async def _list(request: web.Request, ctx: RequestContext, rtype: ResourceType) -> web.Response:
    policy.check(ctx.principal, Verb.LIST, rtype.schema)
    params = ctx.dialect.query_in(rtype.schema, request.query)
    cq = parse_collection_query(rtype.schema, params)
    sort_field = rtype.schema.all_fields.get(cq.sort) if cq.sort else None
    sort = "id"
    if cq.sort == "accountId":
        sort = _owner_column(rtype)
    elif cq.sort:
        sort = FIELD_COLUMNS.get(cq.sort, cq.sort)
    records = await ctx.services.store.list(Query(
        types=list(rtype.listed_types()), conditions=_owner_conditions(rtype, cq.conditions),
        removed_since=int(time.time() * 1000) - REMOVED_LISTED_MS,
        sort=sort, sort_kind=value_kind(sort_field) if sort_field is not None else "int",
        descending=cq.descending, limit=cq.limit + 1, offset=cq.offset,
        **_scope_filter(ctx, rtype)))
    has_more = len(records) > cq.limit
    body = render_collection(ctx, rtype, records[:cq.limit], cq, request.query, has_more)
    await embed_included(ctx, rtype, records[:cq.limit], body["data"],
                         params.getall("include", []))
    return json_response(body)


async def _create(request: web.Request, ctx: RequestContext,
                  rtype: ResourceType) -> web.Response:
    policy.check(ctx.principal, Verb.CREATE, rtype.schema)
    if "POST" not in rtype.schema.collection_methods:
        raise MethodNotAllowed(f"{rtype.schema.plural_name} cannot be created through the API")
    body = ctx.dialect.body_in(rtype.schema, await read_json(request))
    caller = await _creating_caller(ctx, rtype, body)
    record = await operations.create(caller, rtype.schema.id, body)
    return json_response(render_resource(ctx, rtype, record), status=201)


async def _creating_caller(ctx: RequestContext, rtype: ResourceType, body: Any) -> Caller:
    """Who creates, and where: the request's caller, moved to the environment or account
    the body's ``accountId`` names."""
    scope = rtype.schema.scope
    raw = body.get("accountId") if isinstance(body, dict) else None
    if raw is None or scope is Scope.GLOBAL:
        return ctx.caller
    owner = await _named_owner(ctx, rtype, raw)
    if scope is Scope.ACCOUNT:
        return dataclasses.replace(ctx.caller, account_id=owner.id)
    if ctx.explicit_project and ctx.project is not None and owner.id != ctx.project.id:
        raise invalid("InvalidReference", "accountId",
                      f"accountId {raw} is not the environment in scope "
                      f"({format_id(PROJECT_PREFIX, ctx.project.id)})")
    return dataclasses.replace(ctx.caller, project=owner)


async def _named_owner(ctx: RequestContext, rtype: ResourceType, raw: Any) -> Record:
    """The environment (or, for account-scoped types, the account) ``accountId`` names;
    a 422 InvalidReference unless it exists, is not removed and the caller reaches it."""
    wanted = "project" if rtype.schema.scope is Scope.PROJECT else "account"
    number = parse_id(raw, PROJECT_PREFIX) if isinstance(raw, str) else None
    owner = await ctx.services.store.get(number) if number is not None else None
    if owner is not None and owner.type == wanted:
        reachable = policy.can_enter_project(ctx.principal, owner) if wanted == "project" \
            else policy.can_act_for(ctx.principal, owner)
        if reachable:
            return owner
    what = "an active environment" if wanted == "project" else "an account"
    raise invalid("InvalidReference", "accountId", f"accountId {raw!r} is not {what}")


async def _caller_for(ctx: RequestContext, rtype: ResourceType, record: Record) -> Caller:
    """The request's caller, acting in the environment of ``record``."""
    if rtype.schema.scope is not Scope.PROJECT or record.project_id is None or \
            (ctx.project is not None and ctx.project.id == record.project_id):
        return ctx.caller
    project = await _project_record(ctx.services, record.project_id)
    return dataclasses.replace(ctx.caller, project=project)


async def _in_record_env(ctx: RequestContext, rtype: ResourceType,
                         record: Record) -> RequestContext:
    """``ctx`` with its caller acting in the environment of ``record`` (links, includes)."""
    caller = await _caller_for(ctx, rtype, record)
    return ctx if caller is ctx.caller else dataclasses.replace(ctx, caller=caller)


async def load(ctx: RequestContext, rtype: ResourceType, resource_id: str) -> Record:
    number = ctx.dialect.parse_id(resource_id, rtype.schema.id_prefix)
    record = await ctx.services.store.get(number) if number is not None else None
    what = ctx.dialect.type_out(rtype.schema.id)
    if record is None or record.type not in rtype.listed_types():
        raise NotFound(f"{what} {resource_id} not found")
    policy.check(ctx.principal, Verb.READ, rtype.schema, record)
    if ctx.explicit_project and rtype.schema.scope is Scope.PROJECT and \
            ctx.project is not None and record.project_id != ctx.project.id:
        raise NotFound(f"{what} {resource_id} not found in environment "
                       f"{format_id(PROJECT_PREFIX, ctx.project.id)}")
    return record


async def _resource(request: web.Request, ctx: RequestContext, rtype: ResourceType,
                    resource_id: str) -> web.Response:
    schema = rtype.schema
    record = await load(ctx, rtype, resource_id)
    action = request.query.get("action")
    if request.method == "GET":
        include = ctx.dialect.query_in(schema, request.query).getall("include", [])
        return json_response(await render_with_included(
            await _in_record_env(ctx, rtype, record), rtype, record, include))
    caller = await _caller_for(ctx, rtype, record)
    own = ctx.services.types.get(record.type)
    own_schema = own.schema if own is not None else schema
    if request.method == "POST" and action:
        policy.check(ctx.principal, Verb.ACTION, schema, record)
        declared = own_schema.actions.get(action)
        inputs = ctx.services.types.schema(declared.input) \
            if declared is not None and declared.input else None
        body = ctx.dialect.body_in(inputs, await read_json(request))
        result = await operations.act(caller, record, action, body)
        if isinstance(result, Record):
            return json_response(render_resource(ctx, rtype, result))
        return json_response(result)
    if request.method == "PUT" and "PUT" in schema.resource_methods:
        policy.check(ctx.principal, Verb.UPDATE, schema, record)
        updated = await operations.update(caller, record,
                                          ctx.dialect.body_in(own_schema, await read_json(request)))
        return json_response(render_resource(ctx, rtype, updated))
    if request.method == "DELETE" and "DELETE" in schema.resource_methods:
        policy.check(ctx.principal, Verb.DELETE, schema, record)
        removed = await operations.remove(caller, record)
        return json_response(render_resource(ctx, rtype, removed))
    if request.method == "POST":
        raise MethodNotAllowed("POST on a resource needs ?action=<name>")
    raise MethodNotAllowed(f"{request.method} is not allowed on {schema.plural_name}")
