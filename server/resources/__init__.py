"""Every resource type the API serves, in one visible list."""

from __future__ import annotations

from server.api.schema import SUBSCRIBE
from server.api.types import TypeRegistry
from server.resources import (
    accounts,
    certificates,
    container_links,
    containers,
    credentials,
    host_stats,
    hosts,
    load_balancers,
    networks,
    registries,
    services,
    stacks,
    volumes,
)


def build_types() -> TypeRegistry:
    registry = TypeRegistry()
    for rtype in [*accounts.types(), *credentials.types(), *hosts.types(),
                  *containers.types(), *registries.types(), *volumes.types(),
                  *networks.types(), *stacks.types(), *services.types(),
                  *load_balancers.types(), *certificates.types()]:
        registry.add(rtype)
    for schema in [hosts.HOST_INSPECTION, *hosts.EMBEDDED, *containers.EMBEDDED,
                   *container_links.EMBEDDED, *networks.EMBEDDED, host_stats.HOST_STATS,
                   *stacks.EMBEDDED, *services.EMBEDDED, *load_balancers.EMBEDDED,
                   SUBSCRIBE]:
        registry.add_embedded(schema)
    return registry
