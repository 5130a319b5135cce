"""One container's health state machine, as Rancher's. Pure: the checker feeds it probe
outcomes and the time; it answers with the result to report when the state changed.

- A container starts ``initializing``; ``healthyThreshold`` consecutive successes make it
  ``healthy``.
- While initializing, failures are forgiven until ``initializingTimeout`` has passed since
  ``startedAt`` (or since the check arrived, when the server did not say when it started): the
  first failure after that makes it ``unhealthy`` at once (the window was its grace). Without an
  ``initializingTimeout``, ``unhealthyThreshold`` consecutive failures make it ``unhealthy``.
- From ``healthy``, ``unhealthyThreshold`` consecutive failures make it ``unhealthy``; from
  ``unhealthy``, ``healthyThreshold`` consecutive successes make it ``healthy`` again.
- A new ``startedAt`` (the container restarted) makes it ``reinitializing``, which then behaves
  as initializing with ``reinitializingTimeout``. A container still initializing that restarts
  stays initializing, its window starting again.

The window is judged when a probe ends, so an unhealthy verdict may come up to one interval
after the timeout itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from shared.health import HealthCheck, HealthResult, HealthState

_I, _H, _U, _R = (HealthState.INITIALIZING, HealthState.HEALTHY, HealthState.UNHEALTHY,
                  HealthState.REINITIALIZING)
TRANSITIONS: Mapping[HealthState, frozenset[HealthState]] = {
    _I: frozenset({_H, _U}),
    _H: frozenset({_U, _R}),
    _U: frozenset({_H, _R}),
    _R: frozenset({_H, _U}),
}
"""The states each state may move to; anything else is a bug."""


def same_probe(a: HealthCheck, b: HealthCheck) -> bool:
    """Whether two checks probe and judge alike (they may differ in ``started_at``)."""
    return replace(a, started_at=None) == replace(b, started_at=None)


@dataclass
class Tracker:
    """The health of one container under ``check``; see the module docstring."""

    check: HealthCheck
    state: HealthState
    at: float  # when the state was entered (epoch seconds)
    window_start: float  # when the container (re)started, for the (re)initializing window
    message: str | None = None
    successes: int = 0
    failures: int = 0

    @classmethod
    def new(cls, check: HealthCheck, now: float) -> Tracker:
        start = check.started_at if check.started_at is not None else now
        return cls(check, HealthState.INITIALIZING, now, start)

    def result(self) -> HealthResult:
        """The current state, as a report carries it."""
        return HealthResult(self.check.uuid, self.state, self.message, self.at)

    def observe(self, ok: bool, message: str | None, now: float) -> HealthResult | None:
        """Count one probe's outcome; the new state when it changed."""
        check = self.check
        if ok:
            self.successes, self.failures = self.successes + 1, 0
        else:
            self.successes, self.failures = 0, self.failures + 1
        match self.state:
            case HealthState.INITIALIZING | HealthState.REINITIALIZING:
                if ok:
                    if self.successes >= check.healthy_threshold:
                        return self._enter(HealthState.HEALTHY, None, now)
                    return None
                timeout_ms = check.initializing_timeout_ms \
                    if self.state is HealthState.INITIALIZING else check.reinitializing_timeout_ms
                if timeout_ms is not None:
                    if now >= self.window_start + timeout_ms / 1000:
                        return self._enter(HealthState.UNHEALTHY, message, now)
                    return None
                if self.failures >= check.unhealthy_threshold:
                    return self._enter(HealthState.UNHEALTHY, message, now)
                return None
            case HealthState.HEALTHY:
                if not ok and self.failures >= check.unhealthy_threshold:
                    return self._enter(HealthState.UNHEALTHY, message, now)
                return None
            case HealthState.UNHEALTHY:
                if ok and self.successes >= check.healthy_threshold:
                    return self._enter(HealthState.HEALTHY, None, now)
                if not ok and message != self.message:
                    self.message = message  # still unhealthy; the snapshot says the latest why
                return None

    def restarted(self, check: HealthCheck, now: float) -> HealthResult | None:
        """Take ``check``, which probes alike but may say the container restarted; the new
        state when it did (``reinitializing``)."""
        previous, self.check = self.check.started_at, check
        if check.started_at is None or check.started_at == previous:
            return None
        self.window_start = check.started_at
        self.successes = self.failures = 0
        if self.state is HealthState.INITIALIZING:  # never judged yet: its window restarts
            return None
        if self.state is HealthState.REINITIALIZING:
            return None
        return self._enter(HealthState.REINITIALIZING, None, now)

    def _enter(self, state: HealthState, message: str | None, now: float) -> HealthResult:
        assert state in TRANSITIONS[self.state], f"{self.state} -> {state}"
        self.state, self.message, self.at = state, message, now
        self.successes = self.failures = 0
        return self.result()
