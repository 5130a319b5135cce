"""Accounts (admin, user) and projects (environments).

An account is created ``registering`` and activated by the runner (see ``registered``). The
last active admin account can be neither deactivated nor removed: nobody could use the API
after it, not even to undo it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from server.api.errors import Conflict as ApiConflict
from server.api.errors import invalid
from server.api.schema import Field, Schema, Scope
from server.api.types import COLUMN_FIELDS, Linked, ResourceType, entered
from server.caller import Caller
from server.resources.host_stats import environment_host_stats
from server.resources.network_defaults import ensure_defaults
from server.resources.registered import (
    REGISTERED_ACTIONS,
    REGISTERED_STATES,
    TEMPLATE_ACTIONS,
    TEMPLATE_STATES,
    RegisteredType,
    TemplateType,
)
from server.store import Condition, Conflict, NewRecord, Query, Record, Transaction
from server.store.interface import Reader
from shared.ids import format_id

ACCOUNT = Schema(
    id="account",
    scope=Scope.GLOBAL,
    fields={
        "kind": Field(type="enum", create=True, options=("admin", "user"), default="user",
                      nullable=False),
        # Kept as given, as Rancher does: external tools name accounts by uuid.
        "uuid": Field(create=True, nullable=False, min_length=1, max_length=64),
        "externalId": Field(create=True, update=True, max_length=255),
        "externalIdType": Field(create=True, update=True, max_length=128),
    },
    states=REGISTERED_STATES,
    actions=REGISTERED_ACTIONS,
    collection_methods=("GET", "POST"),
    resource_methods=("GET", "PUT", "DELETE"),
    links=("hosts", "instances", "volumes", "storagePools", "credentials", "labels", "ports",
           "mounts", "ipAddresses", "physicalHosts", "networks", "networkDrivers",
           "subnets"),
)

PROJECT = Schema(
    id="project",
    scope=Scope.GLOBAL,
    prefix="1a",  # environments are accounts in Rancher, and share their ids
    fields={
        "name": Field(create=True, update=True, required=True, nullable=False, min_length=1,
                      max_length=255),
        # Kept as given, as for accounts (Rancher's environments were accounts).
        "uuid": Field(create=True, nullable=False, min_length=1, max_length=64),
        "orchestration": Field(type="enum", options=("cattle",), default="cattle",
                               filterable=False),
    },
    states=TEMPLATE_STATES,
    actions=TEMPLATE_ACTIONS,
    collection_methods=("GET", "POST"),
    resource_methods=("GET", "PUT", "DELETE"),
    # Links to a collection (``hosts``) lead to the collection scoped to the environment.
    links=("hostStats", "hosts", "instances", "volumes", "storagePools", "credentials",
           "labels", "ports", "mounts", "ipAddresses", "physicalHosts", "networks",
           "networkDrivers", "subnets"),
)

# What each owned-resources link of an account or environment lists: (type, stored types).
OWNED_LINKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "hosts": ("host", ("host",)),
    "instances": ("instance", ("container",)),
    "volumes": ("volume", ("volume",)),
    "storagePools": ("storagePool", ("storagePool", "registry")),
    "credentials": ("credential", ("apiKey", "registrationToken", "registryCredential")),
    "networks": ("network", ("network",)),
    "networkDrivers": ("networkDriver", ("networkDriver",)),
    "subnets": ("subnet", ("subnet",)),
}
# Records one such link embeds or lists at most; past it the list is marked partial.
OWNED_LIMIT = 1000
# Links gathering what each host or container of an environment shows under its own link:
# (embedded type, [(stored type, that type's link)]).
GATHERED_LINKS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "labels": ("label", (("host", "hostLabels"), ("container", "instanceLabels"))),
    "ports": ("port", (("container", "ports"),)),
    "mounts": ("mount", (("container", "mounts"),)),
    "ipAddresses": ("ipAddress", (("host", "ipAddresses"),)),
    "physicalHosts": ("physicalHost", (("host", "physicalHost"),)),
}


async def owned(caller: Caller, name: str, *, project_id: int | None = None,
                account_id: int | None = None) -> Linked:
    """The live resources of one ``OWNED_LINKS`` kind that an environment or account owns."""
    resource_type, stored = OWNED_LINKS[name]
    records = await caller.store.list(Query(
        types=list(stored), project_id=project_id, account_id=account_id,
        limit=OWNED_LIMIT + 1, conditions=[Condition("removed", "null")]))
    return Linked(resource_type, records=records[:OWNED_LIMIT],
                  partial=len(records) > OWNED_LIMIT)


async def gathered(caller: Caller, name: str, project_id: int | None) -> Linked:
    """The objects of one ``GATHERED_LINKS`` kind across an environment's live hosts and
    containers; an account holds neither, so its lists are empty (``project_id`` None)."""
    resource_type, sources = GATHERED_LINKS[name]
    if project_id is None:
        return Linked(resource_type)
    objects: list[Mapping[str, Any]] = []
    partial = False
    for stored, link in sources:
        rtype = caller.services.types.get(stored)
        assert rtype is not None
        records = await caller.store.list(Query(
            types=[stored], project_id=project_id, limit=OWNED_LIMIT + 1,
            conditions=[Condition("removed", "null")]))
        partial = partial or len(records) > OWNED_LIMIT
        for record in records[:OWNED_LIMIT]:
            objects += (await rtype.linked(caller, record, link)).objects
    return Linked(resource_type, objects=objects, partial=partial)


class ProjectType(TemplateType):
    async def create(self, caller: Caller, values: dict[str, Any]) -> Record:
        """The environment and its default networks, in one transaction."""
        project_uuid = values.pop("uuid", None)
        if project_uuid is not None and await caller.store.get_by_uuid(project_uuid):
            raise invalid("NotUnique", "uuid", f"a resource with uuid {project_uuid!r} exists")
        new = NewRecord(type="project", kind="project", state=self.initial_state,
                        name=values.get("name"), description=values.get("description"),
                        uuid=project_uuid, data={k: v for k, v in values.items()
                                                 if k not in COLUMN_FIELDS})

        async def insert(tx: Transaction) -> Record:
            project = await tx.create(new)
            await ensure_defaults(tx, project)
            return project

        try:
            return await caller.store.transact(insert)
        except Conflict as exc:  # another create took the uuid meanwhile
            if project_uuid is None:
                raise ApiConflict(str(exc), code="NotUnique") from exc
            raise invalid("NotUnique", "uuid",
                          f"a resource with uuid {project_uuid!r} exists") from exc

    async def linked(self, caller: Caller, record: Record, name: str) -> Linked:
        """``hostStats``: a stats sample of each connected host of the environment; the
        others: the environment's resources of that kind."""
        if name == "hostStats":
            return await environment_host_stats(caller, record)
        if name in OWNED_LINKS:
            return await owned(caller, name, project_id=record.id)
        if name in GATHERED_LINKS:
            return await gathered(caller, name, record.id)
        return await super().linked(caller, record, name)


# Steps that take an account out of the active admins.
_LEAVING = ("deactivate", "remove")


async def active_admins(reader: Reader) -> list[Record]:
    """Every active admin account."""
    return await reader.list(Query(types=["account"], limit=1000, conditions=[
        Condition("kind", "eq", "admin"), Condition("state", "eq", "active")]))


class AccountType(RegisteredType):
    async def linked(self, caller: Caller, record: Record, name: str) -> Linked:
        """The account's own resources of that kind: its API keys. Environments own the
        rest, so those lists are empty, as they were in Rancher for a user's account."""
        if name in OWNED_LINKS:
            return await owned(caller, name, account_id=record.id)
        if name in GATHERED_LINKS:
            return await gathered(caller, name, None)
        return await super().linked(caller, record, name)

    async def create(self, caller: Caller, values: dict[str, Any]) -> Record:
        kind = values.pop("kind", "user")
        account_uuid = values.pop("uuid", None)
        if account_uuid is not None and await caller.store.get_by_uuid(account_uuid):
            raise invalid("NotUnique", "uuid", f"a resource with uuid {account_uuid!r} exists")
        data = {k: v for k, v in values.items() if k not in ("name", "description")}
        return await self.store_registering(caller, NewRecord(
            type="account", kind=kind, state="registering", name=values.get("name"),
            description=values.get("description"), uuid=account_uuid, data=data),
            unique_field="uuid")

    async def perform(self, caller: Caller, record: Record, name: str,
                      values: dict[str, Any]) -> Record | dict[str, Any]:
        if name in _LEAVING and record.kind == "admin" and record.state == "active":
            return await self._leave_admins(caller, record, name)
        return await super().perform(caller, record, name, values)

    async def _leave_admins(self, caller: Caller, record: Record, name: str) -> Record:
        """Deactivate or remove an active admin account, unless it is the last one. The
        active admins are locked first, so two admins taking each other out at the same
        moment cannot both succeed."""
        row = self.lifecycle.step(name)
        assert row is not None and row.transitional is None

        async def leave(tx: Transaction) -> Record:
            for admin in sorted(await active_admins(tx), key=lambda r: r.id):
                await tx.lock(admin.id)
            others = [a for a in await active_admins(tx) if a.id != record.id]
            if not others:
                raise invalid("ActionNotAvailable", "action",
                              f"cannot {name} account {format_id('1a', record.id)}: it is the "
                              "last active admin account, and without one nobody can use "
                              "the API; create or activate another admin account first")
            return await tx.update(record.id, entered(row.target),
                                   expected_version=record.version)

        try:
            return await caller.store.transact(leave)
        except Conflict as exc:
            raise ApiConflict(str(exc)) from exc


def types() -> list[ResourceType]:
    return [AccountType(ACCOUNT), ProjectType(PROJECT)]
