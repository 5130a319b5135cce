"""The failed-authentication throttle on its own, on a clock the test moves."""

from __future__ import annotations

import logging

import pytest

from server.api.errors import TooManyRequests, Unauthorized
from server.api.throttle import OTHER_ADDRESSES, AuthGuard, CredentialKind, ThrottlePolicy

API = CredentialKind.API_KEY


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def guard(clock: Clock, max_addresses: int = 100, max_logged: int = 100) -> AuthGuard:
    """Two failures at once, then one every two seconds."""
    return AuthGuard(ThrottlePolicy(burst=2, per_second=0.5, max_addresses=max_addresses,
                                    max_logged_addresses=max_logged), clock=clock)


async def accept() -> str:
    return "principal"


async def refuse() -> str:
    raise Unauthorized("wrong")


async def test_a_bucket_refills_at_the_rate_after_its_burst() -> None:
    clock = Clock()
    g = guard(clock)
    g.failed("10.0.0.1", API)
    assert g.retry_after("10.0.0.1") == 0
    g.failed("10.0.0.1", API)
    assert g.retry_after("10.0.0.1") == pytest.approx(2.0)
    clock.now += 1
    assert g.retry_after("10.0.0.1") == pytest.approx(1.0)
    clock.now += 1
    assert g.retry_after("10.0.0.1") == 0
    assert g.retry_after("10.0.0.2") == 0


async def test_attempt_refuses_a_throttled_address_without_asking_the_store() -> None:
    clock = Clock()
    g = guard(clock)
    assert await g.attempt("10.0.0.1", "good", API, accept) == "principal"
    for _ in range(2):
        with pytest.raises(Unauthorized):
            await g.attempt("10.0.0.1", "bad", API, refuse)
    asked: list[str] = []

    async def recording() -> str:
        asked.append("asked")
        return "principal"

    with pytest.raises(TooManyRequests) as error:
        await g.attempt("10.0.0.1", "new guess", API, recording)
    assert error.value.status == 429 and asked == []
    # Credentials that succeeded before still pass, and are still checked.
    assert await g.attempt("10.0.0.1", "good", API, recording) == "principal"
    assert asked == ["asked"]
    # No credentials, nothing guessed: never throttled.
    assert await g.attempt("10.0.0.1", None, API, accept) == "principal"


async def test_memory_stays_bounded_by_max_addresses() -> None:
    clock = Clock()
    g = guard(clock, max_addresses=3)
    for _ in range(2):
        g.failed("10.0.0.1", API)
    for n in range(2, 6):
        g.failed(f"10.0.0.{n}", API)
    # The least recently failing address was let go: it starts afresh.
    assert g.retry_after("10.0.0.1") == 0


async def test_flush_sums_up_each_address_once_and_forgets_quiet_ones(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="server.api.throttle")
    clock = Clock()
    g = guard(clock, max_logged=2)
    for _ in range(50):
        g.failed("10.0.0.1", CredentialKind.REGISTRATION_TOKEN)
    g.failed("10.0.0.2", CredentialKind.AGENT_KEY)
    g.failed("10.0.0.3", API)
    g.failed("10.0.0.4", API)
    assert len(caplog.records) == 2  # the first failure of each address tracked
    g.flush()
    lines = [r.getMessage() for r in caplog.records[2:]]
    assert len(lines) == 2
    assert "10.0.0.1" in lines[0] and "49 failed (registration token 49)" in lines[0]
    assert OTHER_ADDRESSES in lines[1] and "2 failed (API key 2)" in lines[1]
    g.flush()
    g.flush()
    assert len(caplog.records) == 4
    g.failed("10.0.0.1", API)  # a new first line once the address was forgotten
    assert "API key refused" in caplog.records[-1].getMessage()


async def test_settings_reject_a_throttle_that_cannot_work() -> None:
    from server.config import Settings

    for env in ({"CORRAL_AUTH_FAILURE_BURST": "0"}, {"CORRAL_AUTH_FAILURE_RATE": "-1"},
                {"CORRAL_AUTH_LOG_INTERVAL": "0"}, {"CORRAL_AUTH_FAILURE_RATE": "fast"}):
        with pytest.raises(ValueError):
            Settings.from_sources({}, env)
    settings = Settings.from_sources({}, {"CORRAL_AUTH_FAILURE_BURST": "5",
                                          "CORRAL_AUTH_FAILURE_RATE": "0.5"})
    assert (settings.auth_failure_burst, settings.auth_failure_rate) == (5, 0.5)
