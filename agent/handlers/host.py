"""Host instructions."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from agent.containers import stats_summary
from agent.dispatcher import InstructionContext

TOTALS = ("cpuPercent", "memoryUsage", "networkRxBytes", "networkTxBytes", "blockReadBytes",
          "blockWriteBytes")


async def stats(ctx: InstructionContext) -> dict[str, Any]:
    """Totals over the host's running containers, sampled together."""
    running = [c for c in await asyncio.to_thread(ctx.runtime.list_containers)
               if (c.get("State") or {}).get("Running")]
    samples = await asyncio.gather(
        *(asyncio.to_thread(ctx.runtime.stats, str(c["Id"])) for c in running),
        return_exceptions=True)
    summaries = [stats_summary(s) for s in samples if isinstance(s, dict)]
    totals = {key: sum(summary[key] for summary in summaries) for key in TOTALS}
    totals["cpuPercent"] = round(totals["cpuPercent"], 2)
    return {"containers": len(summaries), **totals}


async def inspect(ctx: InstructionContext) -> dict[str, Any]:
    """Report fresh host facts and what the container engine says about itself."""
    started = time.monotonic()
    await ctx.progress("gathering host facts", 10)
    facts = await ctx.facts.current()
    await ctx.progress("asking the container engine", 60)
    version = await asyncio.to_thread(ctx.runtime.version)
    info = await asyncio.to_thread(ctx.runtime.info)
    docker = {
        "version": version.get("Version"),
        "apiVersion": version.get("ApiVersion"),
        "containers": info.get("Containers"),
        "containersRunning": info.get("ContainersRunning"),
        "images": info.get("Images"),
        "driver": info.get("Driver"),
        "name": info.get("Name"),
    }
    return {"facts": facts, "docker": docker,
            "durationMs": int((time.monotonic() - started) * 1000)}
