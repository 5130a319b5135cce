"""Container fields that name other resources of the environment, checked when the container
is created: ``dataVolumeMounts`` (volumes), ``validHostIds`` (hosts) and
``registryCredentialId``. Each bad reference is a 422 ``InvalidReference`` naming its field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from server.api.errors import invalid
from server.store import Record, Store
from shared.ids import format_id, parse_id, prefix_for

# The id prefix of each type named here (Rancher's rule applied to its base type).
_PREFIXES = {"volume": prefix_for("volume"), "host": prefix_for("host"),
             "registryCredential": prefix_for("credential")}


async def _in_project(store: Store, project_id: int, ref: Any, type_id: str,
                      field: str) -> Record:
    """The live record ``ref`` names, of ``type_id`` in the environment, or a 422."""
    number = parse_id(ref, _PREFIXES[type_id]) if isinstance(ref, str) else None
    record = await store.get(number) if number is not None else None
    if record is None or record.type != type_id or record.project_id != project_id \
            or record.removed is not None:
        raise invalid("InvalidReference", field,
                      f"{field}: {ref!r} is not a {type_id} in this environment")
    return record


async def with_volume_mounts(store: Store, project_id: int,
                             values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` for the spec, with each ``dataVolumeMounts`` entry (container path →
    volume id) added to ``dataVolumes`` as ``<volume name>:<path>``."""
    mounts = values.get("dataVolumeMounts") or {}
    if not mounts:
        return dict(values)
    extra = []
    for path, ref in mounts.items():
        if not path.startswith("/"):
            raise invalid("InvalidFormat", "dataVolumeMounts",
                          f"dataVolumeMounts: {path!r} is not an absolute container path")
        volume = await _in_project(store, project_id, ref, "volume", "dataVolumeMounts")
        extra.append(f"{volume.data.get('externalId') or volume.name}:{path}")
    volumes = values.get("dataVolumes")
    given = list(volumes) if isinstance(volumes, list) else [] if volumes is None else [volumes]
    return {**values, "dataVolumes": [*given, *extra]}


async def valid_host_ids(store: Store, project_id: int,
                         values: Mapping[str, Any]) -> frozenset[str] | None:
    """The hosts ``validHostIds`` allows (public ids), or None when it is not given."""
    refs = values.get("validHostIds")
    if not refs:
        return None
    hosts = [await _in_project(store, project_id, ref, "host", "validHostIds") for ref in refs]
    return frozenset(format_id("1h", host.id) for host in hosts)


def placement_hosts(volume_hosts: frozenset[str] | None,
                    valid_hosts: frozenset[str] | None) -> frozenset[str] | None:
    """The hosts a container may go to: those holding its named volumes and those
    ``validHostIds`` allows (both when both apply; None when neither limits it)."""
    if volume_hosts is None:
        return valid_hosts
    if valid_hosts is None:
        return volume_hosts
    return volume_hosts & valid_hosts


async def check_registry_credential(store: Store, project_id: int,
                                    values: Mapping[str, Any]) -> int | None:
    """The record id of the active registry credential ``registryCredentialId`` names."""
    ref = values.get("registryCredentialId")
    if ref is None:
        return None
    field = "registryCredentialId"
    credential = await _in_project(store, project_id, ref, "registryCredential", field)
    if credential.state != "active":
        raise invalid("InvalidReference", field,
                      f"{field}: registry credential {ref} is {credential.state}, not active")
    return credential.id
