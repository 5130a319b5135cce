"""Reconnect policy: which handshake failures and close codes end the agent, which retry."""

from __future__ import annotations

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import InvalidMessage, InvalidStatus
from websockets.http11 import Response

from agent.connection import AgentExit, _final_close, process_exception
from shared.protocol import CloseCode


def invalid_status(status_code: int) -> InvalidStatus:
    return InvalidStatus(Response(status_code, "x", Headers()))


# process_exception


def test_a_rejected_key_ends_the_agent_and_says_to_register_again() -> None:
    outcome = process_exception(invalid_status(401))
    assert isinstance(outcome, AgentExit)
    assert "rejected this agent's credentials" in str(outcome)
    assert "register again" in str(outcome)


@pytest.mark.parametrize("status_code", [400, 403, 404])
def test_other_client_errors_end_the_agent_naming_the_status(status_code: int) -> None:
    outcome = process_exception(invalid_status(status_code))
    assert isinstance(outcome, AgentExit)
    assert f"HTTP {status_code}" in str(outcome)


@pytest.mark.parametrize("exc", [
    invalid_status(500),
    invalid_status(502),
    invalid_status(503),
    invalid_status(504),
    OSError("connection refused"),
    ConnectionRefusedError(111, "Connection refused"),
    TimeoutError(),
    InvalidMessage("did not receive a valid HTTP response"),
], ids=repr)
def test_server_errors_and_network_errors_are_retried(exc: Exception) -> None:
    assert process_exception(exc) is None


def test_an_unexpected_exception_is_raised_again() -> None:
    exc = ValueError("bug")
    assert process_exception(exc) is exc


# _final_close


def test_host_removed_close_ends_the_agent_about_the_removal() -> None:
    outcome = _final_close(CloseCode.HOST_REMOVED, "host removed")
    assert isinstance(outcome, AgentExit)
    assert "removed" in str(outcome)
    assert CloseCode.HOST_REMOVED == 4410


def test_superseded_close_ends_the_agent_about_another_agent() -> None:
    outcome = _final_close(CloseCode.SUPERSEDED, "")
    assert isinstance(outcome, AgentExit)
    assert "another agent" in str(outcome)
    assert CloseCode.SUPERSEDED == 4409


def test_invalid_message_close_ends_the_agent_with_the_server_s_reason() -> None:
    outcome = _final_close(CloseCode.INVALID_MESSAGE, "field 'requestId' must be a str")
    assert isinstance(outcome, AgentExit)
    assert "field 'requestId' must be a str" in str(outcome)


@pytest.mark.parametrize("code", [None, 1000, 1001, 1006, 1011, 1012, 4408])
def test_other_closes_reconnect(code: int | None) -> None:
    assert _final_close(code, "going away") is None
