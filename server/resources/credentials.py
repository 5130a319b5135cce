"""Credentials: API keys (secret shown once, stored hashed) and registration tokens.

Both are created ``registering`` and activated by the runner (see ``registered``). An API key
belongs to the account acting, or to the account its ``accountId`` names (an admin making a
key for another account); a ``publicValue`` and ``secretValue`` given on create are the key's,
as in Rancher.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from server.api.context import RequestContext
from server.api.errors import invalid
from server.api.schema import Field, Schema, Scope
from server.api.types import ResourceType
from server.caller import Caller
from server.resources.registered import REGISTERED_ACTIONS, REGISTERED_STATES, RegisteredType
from server.security import digest, new_access_key, new_secret_key
from server.store import NewRecord, Record

API_KEY = Schema(
    id="apiKey",
    base_type="credential",
    scope=Scope.ACCOUNT,
    fields={
        # Generated unless given; the access key of Basic auth, so without a colon.
        "publicValue": Field(create=True, min_length=1, max_length=255),
        "secretValue": Field(type="password", create=True, filterable=False, min_length=1,
                             max_length=4096),
    },
    states=REGISTERED_STATES,
    actions=REGISTERED_ACTIONS,
    collection_methods=("GET", "POST"),
    resource_methods=("GET", "PUT", "DELETE"),
)

REGISTRATION_TOKEN = Schema(
    id="registrationToken",
    base_type="credential",
    scope=Scope.PROJECT,
    fields={
        "token": Field(filterable=False),
        "registrationUrl": Field(filterable=False),
        "command": Field(filterable=False),
        "installCommand": Field(filterable=False),
    },
    states=REGISTERED_STATES,
    actions=REGISTERED_ACTIONS,
    collection_methods=("GET", "POST"),
    resource_methods=("GET", "PUT", "DELETE"),
)


def api_key_record(account_id: int, access: str, secret: str, name: str | None) -> NewRecord:
    """The stored form of an API key: the secret only as a digest."""
    return NewRecord(type="apiKey", kind="apiKey", state="active", name=name,
                     account_id=account_id, lookup_key=access,
                     data={"publicValue": access, "secretHash": digest(secret)})


class ApiKeyType(RegisteredType):
    async def create(self, caller: Caller, values: dict[str, Any]) -> Record:
        access = values.get("publicValue") or new_access_key()
        secret = values.get("secretValue") or new_secret_key()
        if ":" in access:
            raise invalid("InvalidCharacters", "publicValue",
                          "publicValue is the access key of HTTP Basic auth: no colon")
        if await caller.store.get_by_lookup("apiKey", access) is not None:
            raise invalid("NotUnique", "publicValue", "an API key with that publicValue exists")
        assert caller.account_id is not None
        new = api_key_record(caller.account_id, access, secret, values.get("name"))
        record = await self.store_registering(
            caller, dataclasses.replace(new, description=values.get("description")),
            unique_field="publicValue")
        caller.reveal[record.id] = {"secretValue": secret}
        return record


def registration_token_record(project_id: int, token_uuid: str, token: str) -> NewRecord:
    return NewRecord(type="registrationToken", kind="registrationToken", state="active",
                     project_id=project_id, uuid=token_uuid, lookup_key=digest(token))


def registration_url(public_origin: str, token: str) -> str:
    return f"{public_origin}/v1/scripts/{token}"


def registration_commands(url: str) -> dict[str, str]:
    return {
        "registrationUrl": url,
        "command": f"sudo corral-agent {url}",
        "installCommand": f"curl -fsSL {url} | sudo sh",
    }


class RegistrationTokenType(RegisteredType):
    async def create(self, caller: Caller, values: dict[str, Any]) -> Record:
        project_id, _ = self.owner(caller)
        assert project_id is not None
        token_uuid = str(uuid.uuid4())
        token = caller.services.server_key.registration_token(token_uuid)
        new = registration_token_record(project_id, token_uuid, token)
        return await self.store_registering(caller, dataclasses.replace(
            new, name=values.get("name"), description=values.get("description")))

    def computed(self, ctx: RequestContext, record: Record) -> dict[str, Any]:
        if record.state != "active":
            return {"token": None, "registrationUrl": None, "command": None,
                    "installCommand": None}
        token = ctx.services.server_key.registration_token(record.uuid)
        public_origin = ctx.services.settings.public_url or ctx.version_url.rsplit("/", 1)[0]
        return {"token": token, **registration_commands(registration_url(public_origin, token))}


def types() -> list[ResourceType]:
    return [ApiKeyType(API_KEY), RegistrationTokenType(REGISTRATION_TOKEN)]
