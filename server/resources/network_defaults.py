"""The networks every environment has, and the driver of its managed network.

As in Rancher 1.6, a new environment gets a network for each Docker network mode a container
may name (``bridge``, ``host``, ``none``; ``container:<id>`` names a container, not a network)
and the managed overlay, ``managed``, made by its driver (``vxlan``) from the driver's
``defaultNetwork``. They are made in the transaction that makes the environment; at start-up
every environment made before networks existed gets the missing ones. Both are idempotent:
each default is looked for by what makes it one (the driver by name, Docker's networks by
kind, the managed network by the driver's record of it), and the names are held by lookup
keys, so two servers starting at once make them once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from server.resources.network_rules import VXLAN_DEFAULTS, pool_subnet
from server.resources.networks import (
    DEFAULT_KEY,
    MANAGED_KEY,
    create_network,
    live,
    name_key,
)
from server.store import Condition, Conflict, NewRecord, Query, Record, Store, Transaction

log = logging.getLogger(__name__)

DRIVER_NAME = "vxlan"
MANAGED = "managed"
# Docker's network modes as Rancher's networks of kind ``docker<Mode>``, with Rancher's names
# for them as descriptions.
DOCKER_NETWORKS: Mapping[str, tuple[str, str]] = {
    "bridge": ("dockerBridge", "Docker Bridge Network Mode"),
    "host": ("dockerHost", "Docker Host Network Mode"),
    "none": ("dockerNone", "Docker None Network Mode"),
}
_ATTEMPTS = 3


def _template(options: Mapping[str, Any]) -> dict[str, Any]:
    """The driver's ``defaultNetwork``: what its managed network is made from."""
    return {"name": MANAGED, "kind": "network", "description": "Corral's VXLAN overlay",
            "subnets": [pool_subnet(options)], "dns": [], "dnsSearch": [], "hostPorts": True,
            "metadata": {}, "defaultPolicyAction": "allow", "policy": None}


def _driver_record(project_id: int) -> NewRecord:
    options = dict(VXLAN_DEFAULTS)
    return NewRecord(type="networkDriver", kind="networkDriver", state="active",
                     name=DRIVER_NAME, description="VXLAN overlay between the hosts",
                     project_id=project_id, lookup_key=name_key(project_id, DRIVER_NAME),
                     data={"networkMetadata": options, "cniConfig": {},
                           "defaultNetwork": _template(options)})


def _network_record(project_id: int, name: str, kind: str, description: str,
                    data: Mapping[str, Any]) -> NewRecord:
    return NewRecord(type="network", kind=kind, state="active", name=name,
                     description=description, project_id=project_id,
                     lookup_key=name_key(project_id, name),
                     data={"subnets": [], "dns": [], "dnsSearch": [], "hostPorts": False,
                           "metadata": {}, "defaultPolicyAction": "allow", "policy": None,
                           **data, DEFAULT_KEY: True})


async def ensure_defaults(tx: Transaction, project: Record) -> int:
    """Make whichever of the environment's default networks and driver are missing; how
    many records were made."""
    made = 0
    drivers = await tx.list(live(["networkDriver"], project.id,
                                 Condition("name", "eq", DRIVER_NAME)))
    if drivers:
        driver = drivers[0]
    else:
        driver = await tx.create(_driver_record(project.id))
        made += 1
    networks = await tx.list(live(["network"], project.id))
    kinds, names = {n.kind for n in networks}, {n.name for n in networks}
    for name, (kind, description) in DOCKER_NETWORKS.items():
        if kind not in kinds and _free(project, name, names):
            await tx.create(_network_record(project.id, name, kind, description, {}))
            made += 1
    template = dict(driver.data.get("defaultNetwork") or {})
    name = str(template.pop("name", MANAGED))
    managed_id = driver.data.get(MANAGED_KEY)
    if not any(n.id == managed_id for n in networks) and _free(project, name, names):
        managed = await create_network(tx, _network_record(
            project.id, name, str(template.pop("kind", "network")),
            str(template.pop("description", "")), {**template, "networkDriverId": driver.id}))
        await tx.update(driver.id, {}, {MANAGED_KEY: managed.id})
        made += 1
    return made


def _free(project: Record, name: str, names: set[str | None]) -> bool:
    """Whether a default network may take ``name``; a client's network of that name (made
    before the defaults were) keeps it, and the default is left out."""
    if name in names:
        log.warning("environment %s: a network named %r is not the default one; "
                    "the default is not made", project.id, name)
        return False
    return True


async def ensure_every_environment(store: Store) -> None:
    """At start-up: every live environment has its default networks (one transaction each;
    a Conflict is another server making them at the same moment, so look again)."""
    offset = 0
    while True:
        page = await store.list(Query(types=["project"], limit=500, offset=offset,
                                      conditions=[Condition("removed", "null")]))
        for project in page:
            await _ensure_one(store, project)
        if len(page) < 500:
            return
        offset += len(page)


async def _ensure_one(store: Store, project: Record) -> None:
    for attempt in range(_ATTEMPTS):
        try:
            made = await store.transact(lambda tx: ensure_defaults(tx, project))
        except Conflict:
            if attempt == _ATTEMPTS - 1:
                raise
            continue
        if made:
            log.info("environment %s: made %d default network records", project.id, made)
        return
