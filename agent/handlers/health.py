"""``health.apply``: run the health checks of this host's containers.

The payload is the whole list of checks; the agent's HealthChecker keeps the state of the
checks that did not change, starts the new ones, stops the others, and answers with the
version it now runs. States are reported in ``healthReport`` messages, not in the reply.
"""

from __future__ import annotations

from agent.dispatcher import InstructionContext
from shared.health import HealthApplied, HealthApply


async def apply(ctx: InstructionContext) -> HealthApplied:
    """Check exactly the containers ``data`` lists (idempotent: the same list changes
    nothing)."""
    return await ctx.health.apply(HealthApply.parse(ctx.request.data))
