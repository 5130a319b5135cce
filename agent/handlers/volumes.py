"""Volume instructions."""

from __future__ import annotations

import asyncio

from agent.dispatcher import InstructionContext
from shared.instructions import NoData, VolumeRef


async def remove(ctx: InstructionContext) -> NoData:
    """Delete a volume from the host; one that is already gone is fine."""
    name = VolumeRef.parse(ctx.request.data).name
    if await asyncio.to_thread(ctx.runtime.volume, name) is None:
        return NoData()
    await asyncio.to_thread(ctx.runtime.remove_volume, name)
    return NoData()
