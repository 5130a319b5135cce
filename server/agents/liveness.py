"""Agent liveness, decided from in-memory timestamps only (no database write per ping).

A connected agent that answered a ping within 1.5 intervals is ``active``; one that went quiet,
or whose socket closed, is ``reconnecting`` until ``grace`` seconds after it was last heard,
then ``disconnected``.
"""

from __future__ import annotations

from enum import StrEnum


class AgentState(StrEnum):
    REGISTERING = "registering"
    ACTIVE = "active"
    RECONNECTING = "reconnecting"
    DISCONNECTED = "disconnected"


# A pong is due one interval after the previous one; half an interval more absorbs jitter.
MISSED_PONG_FACTOR = 1.5


def evaluate(now: float, last_seen: float, connected: bool, ping_interval: float,
             grace: float) -> AgentState:
    silent = now - last_seen
    if connected and silent <= ping_interval * MISSED_PONG_FACTOR:
        return AgentState.ACTIVE
    if silent < grace:
        return AgentState.RECONNECTING
    return AgentState.DISCONNECTED
