"""Rancher's health checks, run by the agent for the containers of its host: the checker
(``checker``), its probe (``probe``) and each container's state machine (``machine``).

Instruction handlers reach the checker through :class:`HealthService`, so that an agent (or a
test) without one gets :class:`NoHealth`, which refuses.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from agent.health.checker import HealthChecker
from shared.errors import InstructionError
from shared.health import HealthApplied, HealthApply

__all__ = ["HealthChecker", "HealthService", "NoHealth"]


@runtime_checkable
class HealthService(Protocol):
    """What instruction handlers ask of the host's health checker."""

    async def apply(self, request: HealthApply) -> HealthApplied: ...


class NoHealth:
    """The health checker of an agent that runs none (tests that do not need one)."""

    async def apply(self, request: HealthApply) -> HealthApplied:
        raise InstructionError("this agent does not run health checks")
