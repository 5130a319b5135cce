"""Managed load balancers: one HAProxy master-worker per balancer ``lb.apply`` lists
(``manager``), its processes and sockets (``process``) and the server changes it takes
without a reload (``runtime``).

Instruction handlers reach the manager through :class:`LbService`, so that an agent (or a
test) without one gets :class:`NoLb`, which refuses.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from agent.lb.manager import LbManager
from shared.errors import InstructionError
from shared.lb import LbApplied, LbApply

__all__ = ["LbManager", "LbService", "NoLb"]


@runtime_checkable
class LbService(Protocol):
    """What instruction handlers ask of the host's load balancers."""

    async def apply(self, request: LbApply) -> LbApplied: ...


class NoLb:
    """The load balancers of an agent that runs none (tests that do not need them)."""

    async def apply(self, request: LbApply) -> LbApplied:
        raise InstructionError("this agent does not run load balancers")
