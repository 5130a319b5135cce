"""Volumes and storage pools. Each host has one local storage pool, made when it registers;
a volume record stands for each named or anonymous Docker volume a container mounts. A named
volume outlives its containers; removing the volume deletes it on its host."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from server.agents.instructions import api_error
from server.api.context import RequestContext
from server.api.errors import invalid
from server.api.schema import Field, Schema, Scope
from server.api.types import Linked, ResourceType, now_ms
from server.caller import Caller
from server.lifecycle import Lifecycle, step
from server.resources.container_fields import DRIVER_NAME
from server.resources.container_links import mounts as container_mounts
from server.resources.registered import UPDATE_VERB
from server.store import Condition, NewRecord, Query, Record, Store, Transaction
from shared.errors import InstructionError
from shared.ids import format_id

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")

class VolumeState(StrEnum):
    INACTIVE = "inactive"
    ACTIVE = "active"
    REMOVED = "removed"
    PURGED = "purged"


class PoolState(StrEnum):
    ACTIVE = "active"
    REMOVED = "removed"


# Removing a volume deletes it on its host first (VolumeType.perform), then records it.
VOLUME_LIFECYCLE = Lifecycle(
    states=VolumeState,
    initial="inactive",
    steps=(step("remove", {"inactive", "active"}, "removed"),
           step("purge", {"removed"}, "purged")),
    verbs=UPDATE_VERB,
)
POOL_LIFECYCLE = Lifecycle(states=PoolState, initial="active", steps=())

STORAGE_POOL = Schema(
    id="storagePool",
    scope=Scope.PROJECT,
    fields={"hostIds": Field(type="array[reference[host]]", filterable=False),
            "driverName": Field(), "volumeAccessMode": Field()},
    states=POOL_LIFECYCLE.state_names,
    collection_methods=("GET",), resource_methods=("GET",),
    # ``credentials``: Rancher's pools of a storage driver had them; a local pool has none.
    links=("hosts", "volumes", "credentials"),
)

VOLUME = Schema(
    id="volume",
    scope=Scope.PROJECT,
    fields={
        "name": Field(create=True, required=True, nullable=False, max_length=255),
        # Rancher asks for a driver (422 MissingRequired without one); ``local`` is Docker's.
        "driver": Field(create=True, required=True, nullable=False, min_length=1,
                        max_length=255, filterable=False),
        "driverOpts": Field(type="map[string]", create=True, filterable=False),
        "sizeMb": Field(type="int", create=True, min=1),
        # ``<driver>:///<name>``, as Rancher shows it.
        "uri": Field(filterable=False),
        "hostId": Field(type="reference[host]"),
        "storagePoolId": Field(type="reference[storagePool]"),
        "externalId": Field(),
        "mounts": Field(type="json", nullable=False, filterable=False),
        "anonymous": Field(type="boolean"),
    },
    states=VOLUME_LIFECYCLE.state_names,
    actions=VOLUME_LIFECYCLE.actions(),
    collection_methods=("GET", "POST"), resource_methods=("GET", "PUT", "DELETE"),
    # ``instance``: a virtual machine's root volume named its machine; Docker volumes have none.
    links=("host", "storagePools", "mounts", "instance"),
)
# Volumes of one pool a ``volumes`` link lists at most; past it the list is marked partial.
POOL_VOLUMES_LIMIT = 1000


async def create_local_pool(store: Store | Transaction, host: Record) -> Record:
    """The host's local storage pool (one per host)."""
    existing = await store.list(Query(types=["storagePool"], project_id=host.project_id,
                                      limit=1, conditions=[
                                          Condition("hostId", "eq", host.id, "int")]))
    if existing:
        return existing[0]
    return await store.create(NewRecord(
        type="storagePool", kind="docker", state="active", name="local",
        project_id=host.project_id,
        data={"hostId": host.id, "hostIds": [host.id], "driverName": "local",
              "volumeAccessMode": "singleHostRW"}))


async def named_volume_hosts(store: Store, project_id: int, names: list[str]) -> frozenset[str]:
    """Hosts holding existing local volumes with these names (a container must go there)."""
    hosts: set[str] = set()
    for name in names:
        for volume in await store.list(Query(types=["volume"], project_id=project_id, limit=10,
                                             conditions=[Condition("name", "eq", name),
                                                         Condition("removed", "null")])):
            host_id = volume.data.get("hostId")
            if isinstance(host_id, int) and volume.data.get("driver", "local") == "local":
                hosts.add(format_id("1h", host_id))
    return frozenset(hosts)


async def record_mounts(store: Store, container: Record, mounts: list[dict[str, Any]]) -> None:
    """Make sure a volume record exists for each Docker volume the container mounts."""
    host_id = container.data.get("hostId")
    if not isinstance(host_id, int) or container.project_id is None:
        return
    for mount in mounts:
        if mount.get("type") != "volume" or not mount.get("name"):
            continue
        name = str(mount["name"])
        found = await store.list(Query(types=["volume"], project_id=container.project_id,
                                       limit=1, conditions=[
                                           Condition("name", "eq", name),
                                           Condition("hostId", "eq", host_id, "int"),
                                           Condition("removed", "null")]))
        entry = {"instanceId": container.id, "path": mount.get("destination")}
        if found:
            volume = found[0]
            others = [m for m in volume.data.get("mounts") or []
                      if m.get("instanceId") != container.id]
            await store.update(volume.id, {"state": "active"}, {"mounts": [*others, entry]})
            continue
        pools = await store.list(Query(types=["storagePool"], project_id=container.project_id,
                                       limit=1, conditions=[
                                           Condition("hostId", "eq", host_id, "int")]))
        await store.create(NewRecord(
            type="volume", kind="volume", state="active", name=name,
            project_id=container.project_id,
            data={"driver": mount.get("driver") or "local", "hostId": host_id,
                  "storagePoolId": pools[0].id if pools else None, "externalId": name,
                  "mounts": [entry], "anonymous": bool(mount.get("anonymous"))}))


async def release_mounts(store: Store, container: Record, volumes_removed: bool) -> None:
    """The container is gone; with ``volumes_removed`` its anonymous volumes went with it.

    Named volumes always stay. A container removed behind Corral's back may have left its
    anonymous volumes on the host, so their records stay too.
    """
    volumes = await store.list(Query(types=["volume"], project_id=container.project_id,
                                     limit=1000, conditions=[Condition("removed", "null")]))
    for volume in volumes:
        mounts = volume.data.get("mounts") or []
        if not any(m.get("instanceId") == container.id for m in mounts):
            continue
        left = [m for m in mounts if m.get("instanceId") != container.id]
        if volumes_removed and volume.data.get("anonymous") and not left:
            await store.update(volume.id, {"state": "removed", "removed": now_ms()},
                               {"mounts": left})
        else:
            await store.update(volume.id, {}, {"mounts": left})


def volume_uri(record: Record) -> str | None:
    """Rancher's ``<driver>:///<name>`` (``local:///db-data``)."""
    name = record.data.get("externalId") or record.name
    return f"{record.data.get('driver') or 'local'}:///{name}" if name else None


class VolumeType(ResourceType):
    lifecycle = VOLUME_LIFECYCLE

    async def create(self, caller: Caller, values: dict[str, Any]) -> Record:
        if not _NAME.match(values["name"]):
            raise invalid("InvalidFormat", "name", "a volume name is letters, digits, and "
                          "_ . - after the first character")
        if not DRIVER_NAME.fullmatch(values["driver"]):
            raise invalid("InvalidFormat", "driver", f"driver {values['driver']!r} is not a "
                          "volume driver name, such as local")
        if values.get("sizeMb") is not None:
            # As Rancher: only a storage driver that schedules by size takes one, and Corral
            # knows none (Docker's local driver uses the host's disk as it is).
            raise invalid("InvalidOption", "sizeMb", f"volume driver {values['driver']} does "
                          "not support specifying a size")
        project_id, _ = self.owner(caller)
        same = await caller.store.list(Query(types=["volume"], project_id=project_id,
                                                   limit=1, conditions=[
                                                       Condition("name", "eq", values["name"]),
                                                       Condition("removed", "null")]))
        if same:
            raise invalid("NotUnique", "name", f"a volume named {values['name']!r} exists")
        return await super().create(caller, values)

    async def perform(self, caller: Caller, record: Record, name: str,
                      values: dict[str, Any]) -> Record | dict[str, Any]:
        if name == "update":  # Rancher's update process: nothing to change on a volume
            return record
        if name == "remove":
            await self._remove_on_host(caller, record)
        return await super().perform(caller, record, name, values)

    async def _remove_on_host(self, caller: Caller, record: Record) -> None:
        users = [m for m in record.data.get("mounts") or []]
        for mount in users:
            container = await caller.store.get(int(mount["instanceId"]))
            if container is not None and container.removed is None:
                raise invalid("InvalidState", None,
                              f"volume {record.name} is in use by container "
                              f"{format_id('1i', container.id)}; remove that first")
        host_id = record.data.get("hostId")
        if not isinstance(host_id, int):
            return  # never materialised on a host
        try:
            await caller.services.instructions.call(
                record, "volume.remove", {"name": record.data.get("externalId") or record.name})
        except InstructionError as exc:
            raise api_error(exc) from exc

    def computed(self, ctx: RequestContext, record: Record) -> dict[str, Any]:
        host_id, pool_id = record.data.get("hostId"), record.data.get("storagePoolId")
        return {"uri": volume_uri(record),
                "hostId": format_id("1h", host_id) if isinstance(host_id, int) else None,
                "storagePoolId": format_id("1sp", pool_id) if isinstance(pool_id, int)
                else None,
                "mounts": [{"instanceId": format_id("1i", int(m["instanceId"])),
                            "path": m.get("path")} for m in record.data.get("mounts") or []]}

    async def linked(self, caller: Caller, record: Record, name: str) -> Linked:
        match name:
            case "host":
                host = await _record_at(caller, record.data.get("hostId"))
                return Linked("host", one=True, records=[host] if host else [])
            case "storagePools":
                pool = await _record_at(caller, record.data.get("storagePoolId"))
                return Linked("storagePool", records=[pool] if pool else [])
            case "mounts":
                return Linked("mount", objects=await self._mounts(caller, record))
            case "instance":
                return Linked("instance", one=True)
        return await super().linked(caller, record, name)

    @staticmethod
    async def _mounts(caller: Caller, volume: Record) -> list[dict[str, Any]]:
        """The mount of this volume in each container that mounts it, as the container's own
        ``mounts`` link shows it."""
        volume_id = format_id(VOLUME.id_prefix, volume.id)
        out: list[dict[str, Any]] = []
        for user in volume.data.get("mounts") or []:
            container = await caller.store.get(int(user["instanceId"]))
            if container is not None and container.removed is None:
                out += [m for m in container_mounts(container, [volume])
                        if m["volumeId"] == volume_id]
        return out


async def _record_at(caller: Caller, number: Any) -> Record | None:
    """The live record a stored reference names, if any."""
    found = await caller.store.get(number) if isinstance(number, int) else None
    return found if found is not None and found.removed is None else None


class StoragePoolType(ResourceType):
    lifecycle = POOL_LIFECYCLE

    def computed(self, ctx: RequestContext, record: Record) -> dict[str, Any]:
        return {"hostIds": [format_id("1h", h) for h in record.data.get("hostIds") or []]}

    async def linked(self, caller: Caller, record: Record, name: str) -> Linked:
        match name:
            case "hosts":
                hosts = [await _record_at(caller, h) for h in record.data.get("hostIds") or []]
                return Linked("host", records=[h for h in hosts if h is not None])
            case "volumes":
                volumes = await caller.store.list(Query(
                    types=["volume"], project_id=record.project_id,
                    limit=POOL_VOLUMES_LIMIT + 1, conditions=[
                        Condition("storagePoolId", "eq", record.id, "int"),
                        Condition("removed", "null")]))
                return Linked("volume", records=volumes[:POOL_VOLUMES_LIMIT],
                              partial=len(volumes) > POOL_VOLUMES_LIMIT)
            case "credentials":
                return Linked("credential")
        return await super().linked(caller, record, name)


def types() -> list[ResourceType]:
    return [VolumeType(VOLUME), StoragePoolType(STORAGE_POOL)]
