"""``lb.apply``: run this host's load balancers.

The payload is every balancer placed on the host; the agent's LbManager starts, changes
(through HAProxy's runtime API where it can, by a hitless reload otherwise) and stops their
HAProxy processes, and answers with the version it applied. Each balancer's state is
reported in ``lbReport`` messages, not in the reply.
"""

from __future__ import annotations

from agent.dispatcher import InstructionContext
from shared.lb import LbApplied, LbApply


async def apply(ctx: InstructionContext) -> LbApplied:
    """Run exactly the balancers ``data`` lists (idempotent: the same list changes
    nothing)."""
    return await ctx.lb.apply(LbApply.parse(ctx.request.data))
