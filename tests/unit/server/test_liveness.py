"""Agent liveness from timestamps alone: active, reconnecting, disconnected, boundaries included."""

from __future__ import annotations

import pytest

from server.agents.liveness import AgentState, evaluate

INTERVAL = 10.0  # a pong is overdue after 1.5 intervals: 15 s
GRACE = 60.0
NOW = 1_000.0

ACTIVE, RECONNECTING, DISCONNECTED = (AgentState.ACTIVE, AgentState.RECONNECTING,
                                      AgentState.DISCONNECTED)


@pytest.mark.parametrize(("connected", "silent", "expected"), [
    # connected and heard from recently
    (True, 0.0, ACTIVE),
    (True, 10.0, ACTIVE),
    (True, 15.0, ACTIVE),            # exactly 1.5 intervals: still on time
    # connected but silent for more than 1.5 intervals
    (True, 15.001, RECONNECTING),
    (True, 59.999, RECONNECTING),
    (True, 60.0, DISCONNECTED),      # grace is over, open socket or not
    (True, 3_600.0, DISCONNECTED),
    # socket closed: reconnecting within the grace period, then disconnected
    (False, 0.0, RECONNECTING),
    (False, 15.0, RECONNECTING),
    (False, 59.999, RECONNECTING),
    (False, 60.0, DISCONNECTED),     # exactly at the end of grace
    (False, 60.001, DISCONNECTED),
    (False, 3_600.0, DISCONNECTED),
])
def test_evaluate(connected: bool, silent: float, expected: AgentState) -> None:
    assert evaluate(NOW, NOW - silent, connected, INTERVAL, GRACE) is expected


@pytest.mark.parametrize(("ping_interval", "silent", "expected"), [
    (2.0, 3.0, ACTIVE),
    (2.0, 3.5, RECONNECTING),
    (30.0, 45.0, ACTIVE),
    (30.0, 46.0, RECONNECTING),
])
def test_overdue_pong_threshold_scales_with_the_ping_interval(
        ping_interval: float, silent: float, expected: AgentState) -> None:
    assert evaluate(NOW, NOW - silent, True, ping_interval, GRACE) is expected
