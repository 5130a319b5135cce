"""Accounts (admin, user) and projects (environments)."""

from __future__ import annotations

from typing import Any

from server.api.schema import Field, Schema, Scope
from server.api.types import TEMPLATE_ACTIONS, TEMPLATE_STATES, ResourceType
from server.caller import Caller
from server.store import Record

ACCOUNT = Schema(
    id="account",
    scope=Scope.GLOBAL,
    fields={
        "kind": Field(type="enum", create=True, options=("admin", "user"), default="user",
                      nullable=False),
        "externalId": Field(create=True, update=True, max_length=255),
        "externalIdType": Field(create=True, update=True, max_length=128),
    },
    states=TEMPLATE_STATES,
    actions=TEMPLATE_ACTIONS,
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
)


class AccountType(ResourceType):
    async def create(self, caller: Caller, values: dict[str, Any]) -> Record:
        kind = values.pop("kind", "user")
        return await self.store_new(caller, values, project_id=None, account_id=None, kind=kind)


def types() -> list[ResourceType]:
    return [AccountType(ACCOUNT), ResourceType(PROJECT)]
