"""Credentials for pulling a container's image, from the registries of its environment."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from server.caches import Recent
from server.resources.registries import SECRET_PURPOSE
from server.store import Condition, Query, Record

if TYPE_CHECKING:
    from server.services import Services


def registry_of(image: str) -> str:
    """The registry host of an image reference, Docker's way (``docker.io`` by default)."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first.lower()  # as registries store it: host names are case-insensitive
    return "docker.io"


class RegistryAuth:
    def __init__(self, services: Services,
                 cache: Recent[list[tuple[Record, Record]]] | None = None) -> None:
        self._services = services
        # Most environments have no registry at all: not a query per container created.
        self._cache = cache or Recent(frozenset({"registry", "registryCredential"}))

    async def auth_for(self, container: Record) -> dict[str, Any] | None:
        """Docker's auth config for the container's image, or None to pull anonymously."""
        spec = container.data.get("spec") or {}
        server = registry_of(str(spec.get("image") or ""))
        named = container.data.get("registryCredential")  # the container's registryCredentialId
        if isinstance(named, int):
            auth = await self._named_credential(named, server)
            if auth is not None:
                return auth
        project_id = container.project_id
        pairs = await self._cache.get(project_id, lambda: self._credentials(project_id))
        for registry, credential in pairs:
            if registry.data.get("serverAddress") == server:
                return {"username": credential.data.get("publicValue"),
                        "password": self._services.server_key.decrypt(
                            SECRET_PURPOSE, str(credential.data["secretEncrypted"])),
                        "serveraddress": server}
        return None

    async def _named_credential(self, credential_id: int, server: str) -> dict[str, Any] | None:
        """The auth of the credential a container names, if still active and for the
        image's registry; otherwise the environment's credentials apply, as without one."""
        store = self._services.store
        credential = await store.get(credential_id)
        if credential is None or credential.state != "active":
            return None
        registry_id = credential.data.get("registryId")
        registry = await store.get(registry_id) if isinstance(registry_id, int) else None
        if registry is None or registry.data.get("serverAddress") != server:
            return None
        return {"username": credential.data.get("publicValue"),
                "password": self._services.server_key.decrypt(
                    SECRET_PURPOSE, str(credential.data["secretEncrypted"])),
                "serveraddress": server}

    async def _credentials(self, project_id: int | None) -> list[tuple[Record, Record]]:
        """Each active registry of the environment with its first active credential."""
        store = self._services.store
        registries = await store.list(Query(types=["registry"], project_id=project_id,
                                            limit=1000, conditions=[
                                                Condition("state", "eq", "active")]))
        pairs = []
        for registry in registries:
            credentials = await store.list(Query(
                types=["registryCredential"], project_id=project_id, limit=1,
                conditions=[Condition("registryId", "eq", registry.id, "int"),
                            Condition("state", "eq", "active")]))
            if credentials:
                pairs.append((registry, credentials[0]))
        return pairs
