"""``migrate``: a running container moved to another host, or made anew on its own.

The container is stopped and removed where it is, placed again (the placement rules of a new
container, its current host excluded), then created and started on its new host, all while
it is ``migrating``. A container no other host can take (one host, a requested host, local
named volumes, ``dataVolumesFrom`` or another container's network) is made anew where it was.
Its record, uuid and name stay: only ``hostId`` and what Docker reports change.

Resumable from the record alone: ``migrateFrom`` is set once the record names its new host, so
an interrupted migration that got that far only creates the container there; one that did not
removes it again (a no-op) and places it again.
"""

from __future__ import annotations

from typing import Any

from server.api.errors import ApiError
from server.caller import Caller
from server.engine.instances import (
    create_on_host,
    failing,
    remove_from_host,
    settled,
    stop_on_host,
)
from server.engine.overlay_state import lease_container_address
from server.engine.runner import Outcome
from server.resources.container_spec import MANAGED, RESERVED_LABELS, volume_names
from server.resources.volumes import named_volume_hosts
from server.store import Record, Transaction
from shared.errors import ErrorCode, HostNotConnected, InstructionError
from shared.ids import format_id


async def migrate(caller: Caller, record: Record) -> Outcome:
    try:
        if record.data.get("migrateFrom") is None:
            record = await _leave(caller, record)
        await _progress(caller, record, "creating the container on host "
                        f"{format_id('1h', record.data['hostId'])}")
        state = await create_on_host(caller, record, as_new=False)
    except HostNotConnected:
        raise
    except InstructionError as exc:
        return await failing(caller, record, exc)
    outcome = settled(state)
    return Outcome(outcome.state, {**(outcome.data or {}), "migrateFrom": None})


async def _leave(caller: Caller, record: Record) -> Record:
    """Take the container off its host and record where it goes: the record as it is then."""
    old_host = record.data["hostId"]
    await _progress(caller, record, f"removing the container from host {format_id('1h', old_host)}")
    try:
        await stop_on_host(caller, record)
    except HostNotConnected:
        raise
    except InstructionError as exc:
        if exc.code is not ErrorCode.NOT_FOUND:
            raise
    await remove_from_host(caller, record)
    moved = await _place_elsewhere(caller, record, old_host)
    if moved is None:  # nowhere else to go: made anew where it was
        moved = await caller.store.update(record.id, {}, {
            "migrateFrom": old_host, "externalId": None, "spec": _respec(record, None, None)})
    return moved


async def _place_elsewhere(caller: Caller, record: Record, old_host: int) -> Record | None:
    """The record placed on another host, or None if no other host may take it."""
    spec = record.data.get("spec") or {}
    project_id = record.project_id
    if project_id is None or spec.get("volumesFrom") or \
            str(spec.get("networkMode") or "").startswith("container:"):
        return None
    placer = caller.services.placer
    others = frozenset(format_id("1h", h) for h in (await placer.view.hosts(project_id)).hosts
                       if h != old_host)
    names = volume_names(spec)
    if names:
        others &= await named_volume_hosts(caller.store, project_id, names)
    if not others:
        return None
    old = await caller.store.get(old_host)
    old_ip = old.data.get("agentIpAddress") if old is not None else None
    unplaced = _respec(record, old_ip, None)

    async def move(tx: Transaction, host: Record) -> Record:
        moved = await tx.update(record.id, {}, {
            "hostId": host.id, "migrateFrom": old_host, "externalId": None,
            "spec": _respec(record, old_ip, host.data.get("agentIpAddress"))})
        if spec.get("networkMode") == MANAGED:  # an address of its new host's subnet
            moved = await lease_container_address(tx, host, moved, moved_from=old_host)
        return moved

    try:
        return await placer.place(caller.store, project_id, record.data, unplaced, others,
                                  move)
    except ApiError:  # NoHostAvailable: no other host fits
        return None


def _respec(record: Record, old_ip: Any, new_ip: Any) -> dict[str, Any]:
    """The container's spec for its new host: its labels as they are now, and host ports
    bound to the old host's address bound to the new one's instead."""
    spec = dict(record.data.get("spec") or {})
    labels = record.data.get("labels") or {}
    spec["labels"] = {str(k): str(v) for k, v in labels.items() if k not in RESERVED_LABELS}
    if old_ip is not None:
        spec["ports"] = [{**port, "hostIp": new_ip} if port.get("hostIp") == old_ip else port
                         for port in spec.get("ports") or []]
    return spec


async def _progress(caller: Caller, record: Record, message: str) -> None:
    await caller.store.update(record.id, {"transitioning_message": message})
