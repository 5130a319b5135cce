"""Service links: ``linkedServices`` (alias → service id) of a service, set through Rancher's
``setservicelinks``, ``addservicelink`` and ``removeservicelink``. A link names a service of
the same environment (of any stack); its alias is how the linking service's containers
resolve it (``server.engine.discovery``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from server.api.errors import Conflict as ApiConflict
from server.api.errors import invalid
from server.caller import Caller
from server.service_kinds import SERVICE_KINDS
from server.store import Conflict, Record
from shared.ids import parse_id

SERVICE_TYPES = frozenset(SERVICE_KINDS)


async def resolve_link(caller: Caller, record: Record, link: Mapping[str, Any],
                       field_name: str) -> tuple[str, int]:
    """(alias, target id) of one ``serviceLink``; a 422 naming ``field_name`` otherwise."""
    ref = link.get("serviceId")
    number = parse_id(str(ref), "1s") if ref is not None else None
    target = await caller.store.get(number) if number is not None else None
    if target is None or target.type not in SERVICE_TYPES or \
            target.project_id != record.project_id or target.removed is not None:
        raise invalid("InvalidReference", field_name,
                      f"{ref} is not a service of this environment")
    if target.id == record.id:
        raise invalid("InvalidReference", field_name, "a service cannot link to itself")
    alias = link.get("name") or target.name or ""
    return str(alias), target.id


async def change_links(caller: Caller, record: Record, action: str,
                       values: Mapping[str, Any]) -> Record:
    links: dict[str, int] = {} if action == "setservicelinks" else \
        {str(k): int(v) for k, v in (record.data.get("linkedServices") or {}).items()}
    if action == "setservicelinks":
        for index, link in enumerate(values.get("serviceLinks") or []):
            alias, target = await resolve_link(caller, record, link,
                                               f"serviceLinks[{index}].serviceId")
            links[alias] = target
    else:
        alias, target = await resolve_link(caller, record, values["serviceLink"],
                                           "serviceLink.serviceId")
        if action == "addservicelink":
            links[alias] = target
        else:
            links = {a: t for a, t in links.items()
                     if not (t == target and (a == alias or not values["serviceLink"].get(
                         "name")))}
    try:
        # The data map is merged by its top-level keys: the new map replaces the old one.
        return await caller.store.update(record.id, {}, {"linkedServices": links or None})
    except Conflict as exc:
        raise ApiConflict(str(exc)) from exc
