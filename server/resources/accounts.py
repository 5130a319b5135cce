"""Accounts (admin, user) and projects (environments).

An account is created ``registering`` and activated by the runner (see ``registered``). The
last active admin account can be neither deactivated nor removed: nobody could use the API
after it, not even to undo it.
"""

from __future__ import annotations

from typing import Any

from server.api.errors import Conflict as ApiConflict
from server.api.errors import invalid
from server.api.schema import Field, Schema, Scope
from server.api.types import TEMPLATE_ACTIONS, TEMPLATE_STATES, Linked, ResourceType, entered
from server.caller import Caller
from server.resources.host_stats import environment_host_stats
from server.resources.registered import REGISTERED_ACTIONS, REGISTERED_STATES, RegisteredType
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
)

PROJECT = Schema(
    id="project",
    scope=Scope.GLOBAL,
    prefix="1a",  # environments are accounts in Rancher, and share their ids
    fields={
        "name": Field(create=True, update=True, required=True, nullable=False, min_length=1,
                      max_length=255),
        "orchestration": Field(type="enum", options=("cattle",), default="cattle"),
    },
    states=TEMPLATE_STATES,
    actions=TEMPLATE_ACTIONS,
    collection_methods=("GET", "POST"),
    resource_methods=("GET", "PUT", "DELETE"),
    links=("hostStats",),
)


class ProjectType(ResourceType):
    async def linked(self, caller: Caller, record: Record, name: str) -> Linked:
        """``hostStats``: a stats sample of each connected host of the environment."""
        if name == "hostStats":
            return await environment_host_stats(caller, record)
        return await super().linked(caller, record, name)


# Steps that take an account out of the active admins.
_LEAVING = ("deactivate", "remove")


async def active_admins(reader: Reader) -> list[Record]:
    """Every active admin account."""
    return await reader.list(Query(types=["account"], limit=1000, conditions=[
        Condition("kind", "eq", "admin"), Condition("state", "eq", "active")]))


class AccountType(RegisteredType):
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
