"""The agent's log lines: each names the host once it is known; instruction traffic is DEBUG."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from agent.dispatcher import Dispatcher
from agent.facts import FactsSource
from agent.handlers import HANDLERS
from agent.logs import LOGGER_NAME, log, set_host
from shared import protocol
from tests.unit.agent.fakes import FakeRuntime


@pytest.fixture(autouse=True)
def no_host() -> Iterator[None]:
    set_host(None)
    yield
    set_host(None)


def test_before_the_host_is_known_lines_are_as_written(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, LOGGER_NAME):
        log.info("registered with %s", "http://corral:8080")
    assert caplog.records[-1].getMessage() == "registered with http://corral:8080"


def test_once_the_host_is_known_every_line_names_it(caplog: pytest.LogCaptureFixture) -> None:
    set_host("1h7")
    with caplog.at_level(logging.DEBUG, LOGGER_NAME):
        log.warning("cannot watch container events: %s", "down")
        log.debug("sent %s", "{}")
    assert [r.getMessage() for r in caplog.records] == [
        "[host 1h7] cannot watch container events: down", "[host 1h7] sent {}"]
    assert all(getattr(r, "host_id", None) == "1h7" for r in caplog.records)


async def test_instruction_traffic_is_debug_and_names_the_host(
        caplog: pytest.LogCaptureFixture) -> None:
    set_host("1h7")
    runtime = FakeRuntime()
    dispatcher = Dispatcher(HANDLERS, runtime, FactsSource(runtime, {}, None))
    sent: list[protocol.AgentMessage] = []

    async def send(message: protocol.AgentMessage) -> None:
        sent.append(message)

    with caplog.at_level(logging.DEBUG, LOGGER_NAME):
        await dispatcher.handle(protocol.Request(
            id="r-1", name="instance.inspect", resource_type="container", resource_id="1i1",
            data={"uuid": "nope"}), send)
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER_NAME]
    assert lines and all(level == logging.DEBUG for level, _ in lines)
    assert all(message.startswith("[host 1h7] instruction instance.inspect container 1i1")
               for _, message in lines)
    assert "does not exist" in lines[-1][1]
