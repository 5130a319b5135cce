"""Registries and their credentials. A credential's secret is encrypted at rest with the
server's key and never returned by the API.

An environment has at most one registry per server address (Rancher's 400
``ServerAddressUsed``), held by the registry's lookup key so that two creates at once cannot
both pass; removing a registry frees its address and removes its credentials with it, in one
transaction."""

from __future__ import annotations

import re
from typing import Any

from server.api.context import RequestContext
from server.api.errors import ApiError, BadRequest, invalid
from server.api.errors import Conflict as ApiConflict
from server.api.schema import Field, Schema, Scope
from server.api.types import Linked, ResourceType, entered
from server.caller import Caller
from server.resources.registered import TEMPLATE_ACTIONS, TEMPLATE_STATES, TemplateType
from server.store import Condition, Conflict, Query, Record, Store, Transaction
from shared.ids import format_id, parse_id

SECRET_PURPOSE = "registryCredential"
_SERVER = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$")

REGISTRY = Schema(
    id="registry",
    plural="registries",
    base_type="storagePool",
    prefix="1sp",
    scope=Scope.PROJECT,
    fields={"serverAddress": Field(create=True, required=True, nullable=False,
                                   max_length=255)},
    states=TEMPLATE_STATES, actions=TEMPLATE_ACTIONS,
    collection_methods=("GET", "POST"), resource_methods=("GET", "PUT", "DELETE"),
    # A registry is a storage pool in Rancher, but one on no host holding no volume.
    links=("credentials", "hosts", "volumes"),
)
# Credentials of one registry that its ``credentials`` link lists at most.
CREDENTIALS_LIMIT = 1000

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
        "email": Field(create=True, update=True, filterable=False),
    },
    states=TEMPLATE_STATES, actions=TEMPLATE_ACTIONS,
    collection_methods=("GET", "POST"), resource_methods=("GET", "PUT", "DELETE"),
    links=("registry",),
)


def normalise_server(address: str) -> str:
    """``https://index.docker.io/v1/`` and ``docker.io`` name the same registry."""
    address = re.sub(r"^https?://", "", address.strip()).rstrip("/")
    address = address.split("/", 1)[0].lower()  # host names are case-insensitive
    return "docker.io" if address in ("index.docker.io", "registry-1.docker.io") else address


def _address_used(server: str) -> ApiError:
    return BadRequest(f"this environment has a registry for {server} already: add "
                      "credentials to that one, or remove it first",
                      code="ServerAddressUsed", field_name="serverAddress")


async def _registry_at(store: Store, project_id: int | None, server: str) -> Record | None:
    """The environment's registry for ``server`` that is not removed (also one made before
    registries held their address in the lookup key)."""
    found = await store.list(Query(types=["registry"], project_id=project_id, limit=1,
                                   conditions=[Condition("serverAddress", "eq", server),
                                               Condition("removed", "null")]))
    return found[0] if found else None


def _live_credentials(registry: Record, limit: int) -> Query:
    return Query(types=["registryCredential"], project_id=registry.project_id, limit=limit,
                 conditions=[Condition("registryId", "eq", registry.id, "int"),
                             Condition("removed", "null")])


class RegistryType(TemplateType):
    async def linked(self, caller: Caller, record: Record, name: str) -> Linked:
        match name:
            case "credentials":
                found = await caller.store.list(_live_credentials(record, CREDENTIALS_LIMIT + 1))
                return Linked("credential", records=found[:CREDENTIALS_LIMIT],
                              partial=len(found) > CREDENTIALS_LIMIT)
            case "hosts":
                return Linked("host")
            case "volumes":
                return Linked("volume")
        return await super().linked(caller, record, name)

    async def create(self, caller: Caller, values: dict[str, Any]) -> Record:
        server = normalise_server(values["serverAddress"])
        if not _SERVER.match(server):
            raise invalid("InvalidFormat", "serverAddress",
                          "serverAddress must be a registry host[:port], e.g. quay.io")
        values["serverAddress"] = server
        project_id, _ = self.owner(caller)
        if await _registry_at(caller.store, project_id, server) is not None:
            raise _address_used(server)
        try:
            return await self.store_new(caller, values, project_id=project_id,
                                        account_id=None, lookup_key=f"{project_id}:{server}")
        except ApiConflict:  # the lookup key: another create for this address won the race
            raise _address_used(server) from None

    async def perform(self, caller: Caller, record: Record, name: str,
                      values: dict[str, Any]) -> Record | dict[str, Any]:
        if name == "remove":
            return await self._remove_with_credentials(caller, record)
        return await super().perform(caller, record, name, values)

    async def _remove_with_credentials(self, caller: Caller, record: Record) -> Record:
        """Remove the registry and its credentials together: a credential must never outlive
        its registry, nor keep working for a registry made again at the same address."""

        async def cascade(tx: Transaction) -> Record:
            current = await tx.lock(record.id)
            if current is None or current.version != record.version:
                raise Conflict(f"registry {record.id} was changed by someone else")
            removed = await tx.update(record.id, {**entered("removed"), "lookup_key": None})
            credentials = await tx.list(_live_credentials(record, 100_000))
            for credential in credentials:
                await tx.update(credential.id, entered("removed"))
            return removed

        try:
            return await caller.store.transact(cascade)
        except Conflict as exc:
            raise ApiConflict(str(exc)) from exc


class RegistryCredentialType(TemplateType):
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
        if registry.removed is not None:
            raise invalid("InvalidReference", "registryId",
                          f"registry {values['registryId']} is removed")
        values["registryId"] = registry.id
        return await super().create(caller, self._encrypt(caller, values))

    async def update(self, caller: Caller, record: Record,
                     values: dict[str, Any]) -> Record:
        return await super().update(caller, record, self._encrypt(caller, values))

    async def linked(self, caller: Caller, record: Record, name: str) -> Linked:
        if name == "registry":
            number = record.data.get("registryId")
            registry = await caller.store.get(number) if isinstance(number, int) else None
            return Linked("registry", one=True, records=[registry] if registry else [])
        return await super().linked(caller, record, name)

    def computed(self, ctx: RequestContext, record: Record) -> dict[str, Any]:
        registry_id = record.data.get("registryId")
        return {"secretValue": None,
                "registryId": format_id(REGISTRY.id_prefix, registry_id)
                if isinstance(registry_id, int) else None}


def types() -> list[ResourceType]:
    return [RegistryType(REGISTRY), RegistryCredentialType(REGISTRY_CREDENTIAL)]
