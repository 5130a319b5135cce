"""What a container's links lead to, and the embedded types Rancher gave those parts.

Rancher kept a container's host maps, ports, nics, mounts and labels as rows of their own;
Corral keeps them on the container (its spec, and what its agent reported), so each link
is built from the container record, plus its host and the volume records that name it.
The builders of embedded objects are pure; ``container_linked`` does the reading.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from server.api.errors import NotFound
from server.api.schema import Field, Schema, Scope
from server.api.types import Linked
from server.store import Condition, Query, Record, Store
from shared.ids import format_id, prefix_for

if TYPE_CHECKING:
    from server.caller import Caller

CONTAINER_LINKS = ("hosts", "instanceHostMaps", "volumes", "mounts", "ports", "nics",
                   "instanceLabels")
# Volumes of one environment read to find a container's (Corral keeps mounts on volumes).
VOLUME_SCAN_LIMIT = 10_000

_INSTANCE = Field(type="reference[container]")
_HOST = Field(type="reference[host]")
# The states Rancher's schemas give ports and mounts; Corral's values are among them.
PORT_STATES = ("activating", "active", "deactivating", "inactive", "purged", "purging",
               "registering", "removed", "removing", "requested", "restoring",
               "updating-active", "updating-inactive")
MOUNT_STATES = ("activating", "active", "deactivating", "inactive", "removed", "removing",
                "requested")


def _embedded(schema_id: str, fields: Mapping[str, Field]) -> Schema:
    return Schema(id=schema_id, scope=Scope.PROJECT, embedded=True, fields=fields)


INSTANCE_HOST_MAP = _embedded("instanceHostMap", {
    "instanceId": _INSTANCE, "hostId": _HOST, "state": Field()})
PORT = _embedded("port", {
    "instanceId": _INSTANCE, "privatePort": Field(type="int"), "publicPort": Field(type="int"),
    # Rancher declares strings for kinds and protocols; the values are those it showed.
    "protocol": Field(), "bindAddress": Field(),
    "kind": Field(), "state": Field(type="enum", nullable=False, options=PORT_STATES)})
NIC = _embedded("nic", {
    "instanceId": _INSTANCE, "deviceNumber": Field(type="int"), "ipAddress": Field(),
    "networkMode": Field(), "state": Field()})
MOUNT = _embedded("mount", {
    "instanceId": _INSTANCE, "volumeId": Field(type="reference[volume]"),
    "volumeName": Field(), "kind": Field(),
    "source": Field(), "path": Field(), "permissions": Field(),
    "state": Field(type="enum", nullable=False, options=MOUNT_STATES)})
LABEL = _embedded("label", {
    "key": Field(), "value": Field(), "kind": Field(),
    "instanceId": _INSTANCE, "hostId": _HOST})
# The types of the container's structured fields, as Rancher's schemas name them.
RESTART_POLICY = _embedded("restartPolicy", {
    "name": Field(type="enum", create=True, nullable=False,
                  options=("no", "always", "unless-stopped", "on-failure")),
    "maximumRetryCount": Field(type="int", create=True, nullable=False, min=0)})
LOG_CONFIG = _embedded("logConfig", {
    "driver": Field(create=True), "config": Field(type="map[string]", create=True)})
DOCKER_BUILD = _embedded("dockerBuild", {
    "context": Field(create=True), "dockerfile": Field(create=True),
    "remote": Field(create=True), "forcerm": Field(type="boolean", create=True),
    "nocache": Field(type="boolean", create=True), "rm": Field(type="boolean", create=True)})
BLKIO_DEVICE_OPTION = _embedded("blkioDeviceOption", {
    name: Field(type="int", create=True, min=0)
    for name in ("weight", "readBps", "writeBps", "readIops", "writeIops")})

EMBEDDED = [INSTANCE_HOST_MAP, PORT, NIC, MOUNT, LABEL, RESTART_POLICY, LOG_CONFIG,
            DOCKER_BUILD, BLKIO_DEVICE_OPTION]


def instance_id(record: Record) -> str:
    return format_id("1i", record.id)


def _spec(record: Record) -> Mapping[str, Any]:
    spec = record.data.get("spec")
    return spec if isinstance(spec, dict) else {}


def host_maps(record: Record) -> list[dict[str, Any]]:
    """The container's placement on its host, as Rancher's instanceHostMap."""
    host_id = record.data.get("hostId")
    if not isinstance(host_id, int):
        return []
    return [{"instanceId": instance_id(record), "hostId": format_id("1h", host_id),
             "state": "removed" if record.removed is not None else "active"}]


def ports(record: Record) -> list[dict[str, Any]]:
    """The ports Docker bound (once it has), else the ports the container asked for."""
    bound = record.data.get("dockerPorts")
    entries = bound if bound else _spec(record).get("ports") or []
    return [{"instanceId": instance_id(record), "privatePort": p.get("containerPort"),
             "publicPort": p.get("hostPort"), "protocol": p.get("protocol") or "tcp",
             "bindAddress": p.get("hostIp"), "kind": "userPort",
             "state": "active" if bound else "inactive"}
            for p in entries if isinstance(p, dict)]


def primary_address(record: Record) -> str | None:
    """The container's address: on the managed network the one leased for it (kept while it
    is stopped, as Rancher's was), otherwise the one Docker last reported."""
    leased = _spec(record).get("ipAddress")
    if isinstance(leased, str) and leased:
        return leased
    reported = record.data.get("primaryIpAddress")
    return reported if isinstance(reported, str) and reported else None


def nics(record: Record) -> list[dict[str, Any]]:
    """One network interface with the container's address, unless it has no network."""
    mode = _spec(record).get("networkMode") or "managed"
    if mode == "none":
        return []
    address = primary_address(record)
    return [{"instanceId": instance_id(record), "deviceNumber": 0, "ipAddress": address,
             "networkMode": mode, "state": "active" if address else "inactive"}]


def instance_labels(record: Record) -> list[dict[str, Any]]:
    labels = record.data.get("labels") or {}
    return [{"key": key, "value": value, "kind": "container", "instanceId": instance_id(record)}
            for key, value in sorted(labels.items())]


def mounts(record: Record, volumes: Sequence[Record]) -> list[dict[str, Any]]:
    """Each bind and volume of the spec; a volume names its record when there is one."""
    spec = _spec(record)
    by_path = {str(m.get("path")): volume for volume in volumes
               for m in volume.data.get("mounts") or [] if m.get("instanceId") == record.id}
    out: list[dict[str, Any]] = []
    for bind in spec.get("binds") or []:
        out.append({"instanceId": instance_id(record), "kind": "bind", "volumeId": None,
                    "volumeName": None, "source": bind.get("source"),
                    "path": bind.get("destination"), "permissions": bind.get("mode"),
                    "state": "active"})
    for volume in spec.get("volumes") or []:
        found = by_path.get(str(volume.get("destination")))
        out.append({"instanceId": instance_id(record), "kind": "volume",
                    "volumeId": format_id(prefix_for("volume"), found.id) if found else None,
                    "volumeName": found.name if found else volume.get("name"),
                    "source": None, "path": volume.get("destination"),
                    "permissions": volume.get("mode"),
                    "state": "active" if found else "inactive"})
    return out


async def mounted_volumes(store: Store, record: Record) -> list[Record]:
    """The volume records that say this container mounts them."""
    volumes = await store.list(Query(types=["volume"], project_id=record.project_id,
                                     limit=VOLUME_SCAN_LIMIT,
                                     conditions=[Condition("removed", "null")]))
    return [v for v in volumes
            if any(m.get("instanceId") == record.id for m in v.data.get("mounts") or [])]


async def container_linked(caller: Caller, record: Record, name: str) -> Linked:
    """What the container's link ``name`` leads to."""
    match name:
        case "hosts":
            host_id = record.data.get("hostId")
            host = await caller.store.get(host_id) if isinstance(host_id, int) else None
            return Linked("host", records=[host] if host is not None else [])
        case "instanceHostMaps":
            return Linked("instanceHostMap", objects=host_maps(record))
        case "volumes":
            return Linked("volume", records=await mounted_volumes(caller.store, record))
        case "mounts":
            volumes = await mounted_volumes(caller.store, record)
            return Linked("mount", objects=mounts(record, volumes))
        case "ports":
            return Linked("port", objects=ports(record))
        case "nics":
            return Linked("nic", objects=nics(record))
        case "instanceLabels":
            return Linked("label", objects=instance_labels(record))
    raise NotFound(f"container has no link {name!r}")


def docker_inspect(record: Record) -> dict[str, Any] | None:
    """What Corral knows of the Docker container, in the shape of ``docker inspect`` (the
    parts Rancher's clients read); None until the container exists on its host."""
    docker_id = record.data.get("externalId")
    if not docker_id:
        return None
    spec = record.data.get("spec") or {}
    bound: dict[str, list[dict[str, str]]] = {}
    for port in record.data.get("dockerPorts") or []:
        bound.setdefault(f"{port.get('containerPort')}/{port.get('protocol') or 'tcp'}", []) \
            .append({"HostIp": port.get("hostIp") or "",
                     "HostPort": str(port.get("hostPort") or "")})
    return {
        "Id": docker_id,
        "Name": f"/{record.name}" if record.name else None,
        "Config": {"Image": spec.get("image"), "Labels": spec.get("labels") or {},
                   "Hostname": spec.get("hostname"), "Cmd": spec.get("command"),
                   "Entrypoint": spec.get("entryPoint")},
        "State": {"Running": record.state == "running", "ExitCode": record.data.get("exitCode"),
                  "StartedAt": record.data.get("startedAt")},
        "HostConfig": {"NetworkMode": spec.get("networkMode"),
                       "PublishAllPorts": bool(spec.get("publishAllPorts")),
                       "BlkioWeight": spec.get("blkioWeight") or 0,
                       "RestartPolicy": spec.get("restartPolicy")},
        "NetworkSettings": {"IPAddress": primary_address(record) or "",
                            "Ports": bound},
    }
