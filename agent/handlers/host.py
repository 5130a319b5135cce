"""Host instructions."""

from __future__ import annotations

import asyncio
import time

from agent.dispatcher import InstructionContext
from shared.instructions import EngineSummary, HostInspection, HostStats, NoData, StatsSample


async def stats(ctx: InstructionContext) -> HostStats:
    """Totals over the host's running containers, sampled together; a container that stops
    while being sampled does not count."""
    NoData.parse(ctx.request.data)
    running = [c for c in await asyncio.to_thread(ctx.runtime.list_containers) if c.running]
    samples = await asyncio.gather(
        *(asyncio.to_thread(ctx.runtime.stats, c.docker_id) for c in running),
        return_exceptions=True)
    taken = [s for s in samples if isinstance(s, StatsSample)]
    total = StatsSample(
        cpu_percent=round(sum(s.cpu_percent for s in taken), 2),
        memory_usage=sum(s.memory_usage for s in taken),
        network_rx_bytes=sum(s.network_rx_bytes for s in taken),
        network_tx_bytes=sum(s.network_tx_bytes for s in taken),
        block_read_bytes=sum(s.block_read_bytes for s in taken),
        block_write_bytes=sum(s.block_write_bytes for s in taken),
    )
    return HostStats(containers=len(taken), total=total)


async def inspect(ctx: InstructionContext) -> HostInspection:
    """Report fresh host facts and what the container engine says about itself."""
    NoData.parse(ctx.request.data)
    started = time.monotonic()
    await ctx.progress("gathering host facts", 10)
    facts = await ctx.facts.current()
    await ctx.progress("asking the container engine", 60)
    version = await asyncio.to_thread(ctx.runtime.version)
    info = await asyncio.to_thread(ctx.runtime.info)
    docker = EngineSummary(
        version=_text(version.get("Version")),
        api_version=_text(version.get("ApiVersion")),
        containers=_count(info.get("Containers")),
        containers_running=_count(info.get("ContainersRunning")),
        images=_count(info.get("Images")),
        driver=_text(info.get("Driver")),
        name=_text(info.get("Name")),
    )
    return HostInspection(facts=facts, docker=docker,
                          duration_ms=int((time.monotonic() - started) * 1000))


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
