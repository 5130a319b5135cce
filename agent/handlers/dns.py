"""``dns.apply``: the service discovery table this host's DNS responder answers from.

The payload is the whole table; the agent's DnsManager swaps it in and answers with the version
now in effect (see ``agent.dns``).
"""

from __future__ import annotations

from agent.dispatcher import InstructionContext
from shared.discovery import DnsApplied, DnsApply


async def apply(ctx: InstructionContext) -> DnsApplied:
    """Answer from ``data``'s table from now on (idempotent: the same table changes nothing)."""
    return await ctx.dns.apply(DnsApply.parse(ctx.request.data))
