"""Registries and their credentials. A credential's secret is encrypted at rest with the
server's key and never returned by the API."""

from __future__ import annotations

import re
from typing import Any

from server.api.context import RequestContext
from server.api.errors import invalid
from server.api.schema import Field, Schema, Scope
from server.api.types import TEMPLATE_ACTIONS, TEMPLATE_STATES, ResourceType
from server.caller import Caller
from server.store import Record
from shared.ids import format_id, parse_id

SECRET_PURPOSE = "registryCredential"
_SERVER = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$")

REGISTRY = Schema(
    id="registry",
    base_type="storagePool",
    prefix="1sp",
    scope=Scope.PROJECT,
    fields={"serverAddress": Field(create=True, required=True, nullable=False,
                                   max_length=255)},
    states=TEMPLATE_STATES, actions=TEMPLATE_ACTIONS,
    collection_methods=("GET", "POST"), resource_methods=("GET", "PUT", "DELETE"),
)

REGISTRY_CREDENTIAL = Schema(
    id="registryCredential",
    base_type="credential",
    scope=Scope.PROJECT,
    fields={
        "registryId": Field(type="reference[registry]", create=True, required=True,
                            nullable=False),
        "publicValue": Field(create=True, update=True, required=True, nullable=False,
                             min_length=1, max_length=255),
        "secretValue": Field(type="password", create=True, update=True, required=True,
                             nullable=False, filterable=False, max_length=4096),
        "email": Field(create=True, update=True),
    },
    states=TEMPLATE_STATES, actions=TEMPLATE_ACTIONS,
    collection_methods=("GET", "POST"), resource_methods=("GET", "PUT", "DELETE"),
)


def normalise_server(address: str) -> str:
    """``https://index.docker.io/v1/`` and ``docker.io`` name the same registry."""
    address = re.sub(r"^https?://", "", address.strip()).rstrip("/")
    address = address.split("/", 1)[0]
    return "docker.io" if address in ("index.docker.io", "registry-1.docker.io") else address


class RegistryType(ResourceType):
    async def create(self, caller: Caller, values: dict[str, Any]) -> Record:
        server = normalise_server(values["serverAddress"])
        if not _SERVER.match(server):
            raise invalid("InvalidFormat", "serverAddress",
                          "serverAddress must be a registry host[:port], e.g. quay.io")
        values["serverAddress"] = server
        return await super().create(caller, values)


class RegistryCredentialType(ResourceType):
    def _encrypt(self, caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
        if "secretValue" in values:
            values["secretEncrypted"] = caller.services.server_key.encrypt(
                SECRET_PURPOSE, values.pop("secretValue"))
        return values

    async def create(self, caller: Caller, values: dict[str, Any]) -> Record:
        project_id, _ = self.owner(caller)
        number = parse_id(values["registryId"], REGISTRY.id_prefix)
        registry = await caller.store.get(number) if number is not None else None
        if registry is None or registry.type != "registry" or registry.project_id != project_id:
            raise invalid("InvalidReference", "registryId",
                          f"{values['registryId']} is not a registry in this environment")
        values["registryId"] = registry.id
        return await super().create(caller, self._encrypt(caller, values))

    async def update(self, caller: Caller, record: Record,
                     values: dict[str, Any]) -> Record:
        return await super().update(caller, record, self._encrypt(caller, values))

    def computed(self, ctx: RequestContext, record: Record) -> dict[str, Any]:
        registry_id = record.data.get("registryId")
        return {"secretValue": None,
                "registryId": format_id(REGISTRY.id_prefix, registry_id)
                if isinstance(registry_id, int) else None}


def types() -> list[ResourceType]:
    return [RegistryType(REGISTRY), RegistryCredentialType(REGISTRY_CREDENTIAL)]
