"""Volume instructions."""

from __future__ import annotations

import asyncio
from typing import Any

from agent.dispatcher import InstructionContext
from shared.errors import ErrorCode, InstructionError


async def remove(ctx: InstructionContext) -> dict[str, Any]:
    """Delete a volume from the host; one that is already gone is fine."""
    name = ctx.request.data.get("name")
    if not isinstance(name, str) or not name:
        raise InstructionError("volume.remove needs the volume's name", ErrorCode.INVALID_DATA)
    if await asyncio.to_thread(ctx.runtime.volume, name) is None:
        return {}
    await asyncio.to_thread(ctx.runtime.remove_volume, name)
    return {}
