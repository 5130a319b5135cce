"""``network.apply``: program this host's part of the managed overlay.

The payload is the whole desired state; the agent's NetworkManager applies it, keeps it as
what the host must match, and answers with the version in effect and the commands it took.
"""

from __future__ import annotations

from agent.dispatcher import InstructionContext
from shared.overlay import NetworkApplied, NetworkApply


async def apply(ctx: InstructionContext) -> NetworkApplied:
    """Make the host's overlay match ``data`` (idempotent: 0 changes when it already does)."""
    return await ctx.network.apply(NetworkApply.parse(ctx.request.data))
