"""One container's health state machine, without sockets or a loop: thresholds, the
(re)initializing windows, restarts, and the transition table."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agent.health.machine import TRANSITIONS, Tracker, same_probe
from shared.health import HealthCheck, HealthResult, HealthState

INIT, UP, DOWN, REINIT = (HealthState.INITIALIZING, HealthState.HEALTHY,
                          HealthState.UNHEALTHY, HealthState.REINITIALIZING)
T0 = 1_795_781_000.0
CHECK = HealthCheck("c1", "10.42.1.5", 80, healthy_threshold=2, unhealthy_threshold=3,
                    started_at=T0)


def run(tracker: Tracker, outcomes: str, start: float = T0, step: float = 1.0
        ) -> list[HealthState]:
    """Feed ``outcomes`` (``+`` up, ``-`` down), one per ``step`` seconds from ``start``; the
    states entered on the way."""
    entered = []
    for i, outcome in enumerate(outcomes):
        result = tracker.observe(outcome == "+", None if outcome == "+" else "HTTP 503",
                                 start + i * step)
        if result is not None:
            entered.append(result.state)
    return entered


def healthy(check: HealthCheck = CHECK) -> Tracker:
    tracker = Tracker.new(check, T0)
    assert run(tracker, "++") == [UP]
    return tracker


def test_a_new_container_is_initializing_since_the_check_arrived() -> None:
    assert Tracker.new(CHECK, T0 + 5).result() == HealthResult("c1", INIT, None, T0 + 5)


def test_healthy_threshold_successes_make_it_healthy_and_not_one_fewer() -> None:
    tracker = Tracker.new(CHECK, T0)
    assert run(tracker, "+") == []
    assert run(tracker, "+") == [UP]
    assert tracker.result() == HealthResult("c1", UP, None, T0)


def test_without_an_initializing_timeout_unhealthy_threshold_failures_make_it_unhealthy() -> None:
    tracker = Tracker.new(CHECK, T0)
    assert run(tracker, "--") == []
    assert run(tracker, "-") == [DOWN]
    assert tracker.result().message == "HTTP 503"


def test_a_success_while_initializing_resets_the_failures() -> None:
    tracker = Tracker.new(CHECK, T0)
    assert run(tracker, "--+--") == []
    assert tracker.state is INIT


def test_failures_within_the_initializing_timeout_are_forgiven() -> None:
    tracker = Tracker.new(replace(CHECK, initializing_timeout_ms=30_000), T0)
    assert run(tracker, "-" * 29) == []  # T0 .. T0 + 28
    assert tracker.state is INIT


def test_the_first_failure_after_the_initializing_timeout_makes_it_unhealthy() -> None:
    tracker = Tracker.new(replace(CHECK, initializing_timeout_ms=30_000), T0)
    assert run(tracker, "-" * 30) == []
    assert run(tracker, "-", start=T0 + 30) == [DOWN]


def test_successes_after_the_initializing_timeout_still_make_it_healthy() -> None:
    tracker = Tracker.new(replace(CHECK, initializing_timeout_ms=1000), T0)
    assert run(tracker, "++", start=T0 + 10) == [UP]


def test_the_window_counts_from_started_at_not_from_when_the_check_arrived() -> None:
    tracker = Tracker.new(replace(CHECK, initializing_timeout_ms=30_000), T0 + 25)
    assert run(tracker, "-", start=T0 + 31) == [DOWN]


def test_without_started_at_the_window_counts_from_when_the_check_arrived() -> None:
    tracker = Tracker.new(replace(CHECK, initializing_timeout_ms=30_000, started_at=None),
                          T0 + 25)
    assert run(tracker, "-", start=T0 + 31) == []
    assert run(tracker, "-", start=T0 + 55) == [DOWN]


def test_healthy_becomes_unhealthy_after_the_threshold_of_consecutive_failures() -> None:
    tracker = healthy()
    assert run(tracker, "--+--") == []
    assert run(tracker, "-", start=T0 + 10) == [DOWN]
    assert tracker.result() == HealthResult("c1", DOWN, "HTTP 503", T0 + 10)


def test_unhealthy_recovers_after_the_threshold_of_consecutive_successes() -> None:
    tracker = healthy()
    assert run(tracker, "---") == [DOWN]
    assert run(tracker, "+-+") == []
    assert run(tracker, "+") == [UP]
    assert tracker.result().message is None


def test_an_unhealthy_container_keeps_the_latest_reason_without_a_new_transition() -> None:
    tracker = healthy()
    run(tracker, "---")
    assert tracker.observe(False, "connection refused", T0 + 9) is None
    assert tracker.result().message == "connection refused"


def test_a_new_started_at_makes_a_checked_container_reinitializing() -> None:
    tracker = healthy()
    result = tracker.restarted(replace(CHECK, started_at=T0 + 100), T0 + 101)
    assert result == HealthResult("c1", REINIT, None, T0 + 101)
    assert run(tracker, "++", start=T0 + 102) == [UP]


def test_reinitializing_honours_the_reinitializing_timeout() -> None:
    check = replace(CHECK, initializing_timeout_ms=1000, reinitializing_timeout_ms=60_000)
    tracker = healthy(check)
    tracker.restarted(replace(check, started_at=T0 + 100), T0 + 100)
    assert run(tracker, "-" * 59, start=T0 + 101) == []
    assert run(tracker, "-", start=T0 + 160) == [DOWN]


def test_reinitializing_without_its_timeout_uses_the_unhealthy_threshold() -> None:
    check = replace(CHECK, initializing_timeout_ms=60_000)
    tracker = healthy(check)
    tracker.restarted(replace(check, started_at=T0 + 100), T0 + 100)
    assert run(tracker, "---", start=T0 + 101) == [DOWN]


def test_an_unhealthy_container_that_restarts_is_reinitializing() -> None:
    tracker = healthy()
    run(tracker, "---")
    assert tracker.restarted(replace(CHECK, started_at=T0 + 100), T0 + 100) is not None
    assert tracker.state is REINIT


def test_a_container_still_initializing_that_restarts_stays_so_with_a_new_window() -> None:
    check = replace(CHECK, initializing_timeout_ms=30_000)
    tracker = Tracker.new(check, T0)
    run(tracker, "-" * 20)
    assert tracker.restarted(replace(check, started_at=T0 + 20), T0 + 20) is None
    assert tracker.state is INIT
    assert run(tracker, "-", start=T0 + 45) == []
    assert run(tracker, "-", start=T0 + 51) == [DOWN]


@pytest.mark.parametrize("started_at", [T0, None])
def test_the_same_or_an_unknown_started_at_is_no_restart(started_at: float | None) -> None:
    tracker = healthy()
    assert tracker.restarted(replace(CHECK, started_at=started_at), T0 + 100) is None
    assert tracker.state is UP


def test_checks_differing_only_in_started_at_probe_alike() -> None:
    assert same_probe(CHECK, replace(CHECK, started_at=None))
    assert not same_probe(CHECK, replace(CHECK, port=81))
    assert not same_probe(CHECK, replace(CHECK, healthy_threshold=3))


def test_the_transition_table_has_every_state_and_no_self_transition() -> None:
    assert set(TRANSITIONS) == set(HealthState)
    assert all(state not in targets for state, targets in TRANSITIONS.items())
    assert INIT not in set().union(*TRANSITIONS.values())  # only a new check is initializing
