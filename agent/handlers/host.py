"""Host instructions."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from agent.dispatcher import InstructionContext


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
