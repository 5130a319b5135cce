"""Credentials for pulling a container's image, from the registries of its environment."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from server.resources.registries import SECRET_PURPOSE
from server.store import Condition, Query, Record

if TYPE_CHECKING:
    from server.services import Services


def registry_of(image: str) -> str:
    """The registry host of an image reference, Docker's way (``docker.io`` by default)."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


class RegistryAuth:
    def __init__(self, services: Services) -> None:
        self._services = services

    async def auth_for(self, container: Record) -> dict[str, Any] | None:
        """Docker's auth config for the container's image, or None to pull anonymously."""
        spec = container.data.get("spec") or {}
        server = registry_of(str(spec.get("image") or ""))
        store = self._services.store
        registries = await store.list(Query(types=["registry"], project_id=container.project_id,
                                            limit=10, conditions=[
                                                Condition("serverAddress", "eq", server),
                                                Condition("state", "eq", "active")]))
        for registry in registries:
            credentials = await store.list(Query(
                types=["registryCredential"], project_id=container.project_id, limit=1,
                conditions=[Condition("registryId", "eq", registry.id, "int"),
                            Condition("state", "eq", "active")]))
            if credentials:
                credential = credentials[0]
                return {"username": credential.data.get("publicValue"),
                        "password": self._services.server_key.decrypt(
                            SECRET_PURPOSE, str(credential.data["secretEncrypted"])),
                        "serveraddress": server}
        return None
