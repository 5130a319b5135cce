"""Fixtures of the engine's tests: run on every database backend (see tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from server.config import Settings
from server.engine import service_units
from tests.support.fake_hub import FakeHub
from tests.unit.server.engine.harness import Engine, engine_running


@pytest.fixture(autouse=True)
def short_drain(monkeypatch: pytest.MonkeyPatch) -> None:
    """Containers drain for half a second, not 2.5: still longer than the tests' polls (the
    fake hub answers at once), and upgrades of several batches take seconds, not tens."""
    monkeypatch.setattr(service_units, "DRAIN_SECONDS", 0.5)


@pytest.fixture
def hub() -> FakeHub:
    """The hosts' agents: the same hub across a restart, as real hosts outlive a server."""
    return FakeHub()


@pytest.fixture
async def engine(settings: Settings, hub: FakeHub) -> AsyncIterator[Engine]:
    """The started services in the Default environment, with no host yet."""
    async with engine_running(settings, hub) as running:
        yield running
