"""An environment's ``hostStats`` link: one stats sample from each connected host.

Rancher answered this link with a websocket streaming every host's stats; Corral samples each
connected host once (the same ``host.stats`` instruction as a host's own ``stats`` link), all
at the same time, and answers a collection of ``hostStats``.
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

# Hosts of one environment sampled by one request.
HOSTS_LIMIT = 1000

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
