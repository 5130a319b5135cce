"""The payloads of health checks: Rancher's field names and defaults, round trips, and every
value a check refuses (as invalidData, naming the field)."""

from __future__ import annotations

from typing import Any

import pytest

from shared.errors import ErrorCode, InstructionError, ProtocolError
from shared.health import (
    HEALTH_STATES,
    MAX_CHECKS,
    HealthApplied,
    HealthApply,
    HealthCheck,
    HealthResult,
    HealthState,
)
from tests.unit.shared.test_purity import loaded_forbidden

FULL = {"uuid": "0b7c-11", "address": "10.42.1.5", "port": 8080,
        "requestLine": "GET /healthz HTTP/1.1", "interval": 5000, "responseTimeout": 1000,
        "healthyThreshold": 3, "unhealthyThreshold": 4, "initializingTimeout": 60000,
        "reinitializingTimeout": 30000, "startedAt": 1795781000.5}


def check(**overrides: Any) -> dict[str, Any]:
    return {**FULL, **overrides}


def test_a_check_reads_every_rancher_field() -> None:
    parsed = HealthApply.parse({"version": "v1", "checks": [FULL]})
    assert parsed.version == "v1"
    assert parsed.checks[0] == HealthCheck(
        uuid="0b7c-11", address="10.42.1.5", port=8080, request_line="GET /healthz HTTP/1.1",
        interval_ms=5000, response_timeout_ms=1000, healthy_threshold=3,
        unhealthy_threshold=4, initializing_timeout_ms=60000, reinitializing_timeout_ms=30000,
        started_at=1795781000.5)


def test_a_check_with_only_its_port_takes_rancher_defaults() -> None:
    parsed = HealthApply.parse({"checks": [{"uuid": "u", "address": "10.42.1.5",
                                            "port": 80}]})
    assert parsed == HealthApply("", (HealthCheck("u", "10.42.1.5", 80),))
    only = parsed.checks[0]
    assert (only.interval_ms, only.response_timeout_ms, only.healthy_threshold,
            only.unhealthy_threshold) == (2000, 2000, 2, 3)
    assert only.request_line is None and only.initializing_timeout_ms is None
    assert only.started_at is None


@pytest.mark.parametrize("line", ["", None])
def test_an_empty_or_absent_request_line_is_a_tcp_check(line: str | None) -> None:
    parsed = HealthApply.parse({"checks": [check(requestLine=line)]})
    assert parsed.checks[0].request_line is None


def test_apply_dumps_to_what_it_parses_from() -> None:
    request = HealthApply.parse({"version": "v1", "checks": [FULL, check(uuid="other")]})
    assert request.dump() == {"version": "v1", "checks": [FULL, check(uuid="other")]}
    assert HealthApply.parse(request.dump()) == request


def test_an_apply_without_checks_stops_every_check() -> None:
    assert HealthApply.parse({"version": "v2"}) == HealthApply("v2", ())
    assert HealthApply.parse({"version": "v2", "checks": []}).checks == ()


REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("no uuid", check(uuid=None), "checks[0].uuid"),
    ("a uuid with a space", check(uuid="a b"), "checks[0].uuid"),
    ("a uuid too long", check(uuid="u" * 65), "checks[0].uuid"),
    ("no address", check(address=None), "checks[0].address"),
    ("a host name", check(address="web.local"), "IPv4 address"),
    ("an IPv6 address", check(address="fd00::1"), "IPv4 address"),
    ("no port", check(port=None), "checks[0].port"),
    ("port 0", check(port=0), "1 to 65535"),
    ("port 65536", check(port=65536), "1 to 65535"),
    ("port a string", check(port="80"), "checks[0].port"),
    ("a request line with CRLF", check(requestLine="GET / HTTP/1.0\r\nX: y"), "one line"),
    ("a request line with LF", check(requestLine="GET /\n"), "one line"),
    ("a request line too long", check(requestLine="GET /" + "a" * 1024), "at most 1024"),
    ("a request line not ASCII", check(requestLine="GET /caf\u00e9 HTTP/1.0"), "ASCII"),
    ("interval 0", check(interval=0), "interval must be between 1"),
    ("interval negative", check(interval=-5), "interval must be between 1"),
    ("interval over a day", check(interval=86_400_001), "interval must be between 1"),
    ("interval a float", check(interval=2.5), "interval must be an integer"),
    ("interval a bool", check(interval=True), "interval must be an integer"),
    ("responseTimeout 0", check(responseTimeout=0), "responseTimeout"),
    ("healthyThreshold 0", check(healthyThreshold=0), "healthyThreshold"),
    ("unhealthyThreshold over the maximum", check(unhealthyThreshold=1001),
     "unhealthyThreshold"),
    ("initializingTimeout 0", check(initializingTimeout=0), "initializingTimeout"),
    ("reinitializingTimeout negative", check(reinitializingTimeout=-1),
     "reinitializingTimeout"),
    ("startedAt negative", check(startedAt=-1), "startedAt"),
    ("startedAt a string", check(startedAt="yesterday"), "startedAt"),
]


@pytest.mark.parametrize(("value", "words"), [(v, w) for _, v, w in REFUSED],
                         ids=[case for case, _, _ in REFUSED])
def test_a_bad_check_is_refused_as_invalid_data_naming_the_field(
        value: dict[str, Any], words: str) -> None:
    with pytest.raises(InstructionError) as caught:
        HealthApply.parse({"version": "v1", "checks": [value]})
    assert caught.value.code is ErrorCode.INVALID_DATA
    assert words in str(caught.value)
    assert str(caught.value).startswith("data.checks[0]")


def test_a_container_checked_twice_is_refused() -> None:
    with pytest.raises(InstructionError, match=r"checks\[1\].uuid 0b7c-11 is checked twice"):
        HealthApply.parse({"checks": [FULL, check(port=9090)]})


def test_more_than_the_most_checks_are_refused_before_reading_them() -> None:
    with pytest.raises(InstructionError, match=f"at most {MAX_CHECKS} checks"):
        HealthApply.parse({"checks": [{}] * (MAX_CHECKS + 1)})


def test_the_most_checks_are_accepted() -> None:
    checks = [check(uuid=f"c{i}") for i in range(MAX_CHECKS)]
    assert len(HealthApply.parse({"checks": checks}).checks) == MAX_CHECKS


@pytest.mark.parametrize("data", [None, [], "checks", {"checks": {}}, {"checks": [1]}])
def test_a_payload_that_is_not_an_object_of_checks_is_refused(data: Any) -> None:
    with pytest.raises(InstructionError):
        HealthApply.parse(data)


# replies and results


def test_applied_round_trips_and_a_missing_version_is_a_protocol_error() -> None:
    assert HealthApplied.parse(HealthApplied("v3").dump()) == HealthApplied("v3")
    assert HealthApplied("v3").dump() == {"version": "v3"}
    with pytest.raises(ProtocolError):
        HealthApplied.parse({})


def test_a_bad_reply_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        HealthApplied.parse({"version": 3})


def test_the_states_are_rancher_s() -> None:
    assert HEALTH_STATES == ("initializing", "healthy", "unhealthy", "reinitializing")
    assert [str(s) for s in HealthState] == list(HEALTH_STATES)


@pytest.mark.parametrize("result", [
    HealthResult("0b7c", HealthState.UNHEALTHY, "HTTP 404", 1795781000.5),
    HealthResult("0b7c", HealthState.HEALTHY, None, 1795781000.0),
    HealthResult("0b7c", HealthState.INITIALIZING, None, 0.0),
], ids=repr)
def test_a_result_round_trips(result: HealthResult) -> None:
    assert HealthResult.parse(result.dump()) == result


def test_a_result_dumps_its_state_as_a_plain_string() -> None:
    dumped = HealthResult("0b7c", HealthState.HEALTHY, None, 12.5).dump()
    assert dumped == {"uuid": "0b7c", "state": "healthy", "message": None, "at": 12.5}
    assert type(dumped["state"]) is str


@pytest.mark.parametrize(("obj", "words"), [
    ({"uuid": "u", "state": "dead", "at": 1}, "state must be one of initializing"),
    ({"uuid": "u", "state": None, "at": 1}, "state"),
    ({"uuid": "u", "state": "healthy"}, "at must be a number"),
    ({"uuid": "u", "state": "healthy", "at": -1}, "at must be a number"),
    ({"uuid": "u", "state": "unhealthy", "message": "m" * 101, "at": 1}, "at most 100"),
    ({"uuid": "", "state": "healthy", "at": 1}, "uuid"),
    ({"state": "healthy", "at": 1}, "uuid"),
])
def test_a_bad_result_is_a_protocol_error_naming_the_field(obj: dict[str, Any],
                                                           words: str) -> None:
    with pytest.raises(ProtocolError, match=words):
        HealthResult.parse(obj)


def test_importing_shared_health_pulls_in_no_io_library() -> None:
    assert loaded_forbidden(["shared.health"]) == []
