"""Every resource type the API serves, in one visible list."""

from __future__ import annotations

from server.api.types import TypeRegistry
from server.resources import accounts, credentials, hosts


def build_types() -> TypeRegistry:
    registry = TypeRegistry()
    for rtype in [*accounts.types(), *credentials.types(), *hosts.types()]:
        registry.add(rtype)
    registry.add_embedded(hosts.HOST_INSPECTION)
    return registry
