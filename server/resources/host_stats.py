"""An environment's ``hostStats`` link (one stats sample from each connected host) and a
host's ``containerStats`` link (one from each of its running containers).

Rancher answered these links with a websocket streaming the stats; Corral samples each host
(or container) once, with the same instruction as its own ``stats`` link, all at the same
time, and answers a collection of ``hostStats`` (or ``containerStats``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from server.api.errors import ApiError
from server.api.schema import Field, Schema, Scope
from server.api.types import Linked
from server.store import Condition, Query, Record

if TYPE_CHECKING:
    from server.caller import Caller

# Hosts of one environment, or containers of one host, sampled by one request.
HOSTS_LIMIT = 1000
CONTAINERS_LIMIT = 1000

HOST_STATS = Schema(id="hostStats", scope=Scope.PROJECT, embedded=True, fields={
    "containers": Field(type="int"), "cpuPercent": Field(type="float"),
    "memoryUsage": Field(type="int"), "networkRxBytes": Field(type="int"),
    "networkTxBytes": Field(type="int"), "blockReadBytes": Field(type="int"),
    "blockWriteBytes": Field(type="int")})


async def environment_host_stats(caller: Caller, project: Record) -> Linked:
    """A sample of each host of ``project`` whose agent is connected. A host that cannot
    answer now is left out and the collection marked partial."""
    hosts = await caller.store.list(Query(types=["host"], project_id=project.id,
                                          limit=HOSTS_LIMIT,
                                          conditions=[Condition("removed", "null")]))
    live = [h for h in hosts if caller.services.hub.is_live(h.id)]

    async def sample(host: Record) -> dict[str, Any] | None:
        try:
            return await caller.services.instructions.sample(host, "host.stats", {},
                                                             "hostStats")
        except ApiError:
            return None

    samples = await asyncio.gather(*(sample(h) for h in live))
    answered = [s for s in samples if s is not None]
    return Linked("hostStats", objects=answered,
                  partial=len(answered) < len(hosts) or len(hosts) == HOSTS_LIMIT)


async def host_container_stats(caller: Caller, host: Record) -> Linked:
    """A sample of each running container of ``host``; none while its agent is away. A
    container that cannot answer now is left out and the collection marked partial."""
    containers = await caller.store.list(Query(
        types=["container"], project_id=host.project_id, limit=CONTAINERS_LIMIT,
        conditions=[Condition("hostId", "eq", host.id, "int"), Condition("removed", "null"),
                    Condition("state", "eq", "running")]))
    if not caller.services.hub.is_live(host.id):
        return Linked("containerStats", objects=[], partial=bool(containers))

    async def sample(container: Record) -> dict[str, Any] | None:
        try:
            return await caller.services.instructions.sample(
                container, "instance.stats", {"uuid": container.uuid}, "containerStats")
        except ApiError:
            return None

    samples = await asyncio.gather(*(sample(c) for c in containers))
    answered = [s for s in samples if s is not None]
    return Linked("containerStats", objects=answered,
                  partial=len(answered) < len(containers) or
                  len(containers) == CONTAINERS_LIMIT)
