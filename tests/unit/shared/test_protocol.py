"""The agent wire protocol: round trips, golden frames, and every way a frame can be malformed."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import pytest

from shared import protocol
from shared.errors import ErrorCode, ProtocolError
from shared.health import MAX_MESSAGE, HealthResult, HealthState
from shared.protocol import (
    MAX_FRAME_BYTES,
    MAX_HEALTH_RESULTS,
    ContainerEvent,
    Facts,
    HealthReport,
    Hello,
    Inventory,
    LbReport,
    Progress,
    Reply,
    ReplyError,
    Request,
    StreamClose,
    StreamData,
    StreamResize,
    Welcome,
)

GOLDEN_DIR = Path(__file__).parents[2] / "data" / "protocol"

# One message per golden file in tests/data/protocol; the file is what dump() must produce.
GOLDEN: dict[str, protocol.Message] = {
    "hello": Hello(
        agent_version="0.1.0",
        facts={
            "hostname": "node-1",
            "labels": {"io.rancher.host.os": "linux"},
            "info": {"cpuInfo": {"count": 2}},
        },
    ),
    "welcome": Welcome(host_id="1h3", ping_interval=15.0, report_interval=60.0),
    "facts": Facts(changes={"info": {"memoryInfo": {"memTotal": 2048}}}),
    "request": Request(id="req-7", name="host.inspect", resource_type="host",
                       resource_id="1h3", data={"verbose": True}, timeout_ms=30_000),
    "progress": Progress(request_id="req-7", message="gathering host facts", progress=10),
    "reply": Reply(request_id="req-7", data={"durationMs": 12}),
    "reply_error": Reply(request_id="req-8", error=ReplyError(
        ErrorCode.RUNTIME_UNAVAILABLE, "The Docker engine cannot be reached.")),
    "container_event": ContainerEvent(event="die", time=1795781000.5, container={
        "uuid": "0b7c", "dockerId": "4f2a", "status": "exited", "exitCode": 137}),
    "inventory": Inventory(containers=[{"uuid": "0b7c", "dockerId": "4f2a",
                                        "status": "running"}]),
    "stream_data": StreamData(stream_id="req-9", data="aGVsbG8K"),
    "stream_resize": StreamResize(stream_id="req-9", cols=120, rows=40),
    "stream_close": StreamClose(stream_id="req-9"),
    "health_report": HealthReport(results=[
        {"uuid": "0b7c", "state": "unhealthy", "message": "HTTP 503", "at": 1795781000.5},
        {"uuid": "5e1d", "state": "healthy", "message": None, "at": 1795781001.25}]),
    "lb_report": LbReport(results=[
        {"uuid": "9f3a", "state": "running", "configVersion": "4be1c0d2", "message": None,
         "pid": 4242},
        {"uuid": "a71e", "state": "error", "configVersion": None,
         "message": "parsing [haproxy.cfg:32] : unknown keyword 'bogus' in 'backend' section",
         "pid": None}]),
}

# Further shapes worth a round trip: defaults, nulls, unicode, every error code.
VARIANTS: list[protocol.Message] = [
    Hello(agent_version="", facts={}),
    Welcome(host_id="1h1", ping_interval=0.5, report_interval=1),
    Facts(changes={}),
    Request(id="r", name="instance.start", resource_type="instance", resource_id="1i9"),
    Progress(request_id="r", message="pulling ubuntu:22.04 \u2014 50 % \u00e9t\u00e9"),
    Reply(request_id="r"),
    HealthReport(results=[]),
    *(Reply(request_id="r", error=ReplyError(code, f"failed with {code}")) for code in ErrorCode),
]


def golden(name: str) -> Any:
    return json.loads((GOLDEN_DIR / f"{name}.json").read_text())


# round trips


@pytest.mark.parametrize("message", [*GOLDEN.values(), *VARIANTS], ids=repr)
def test_parse_of_dump_gives_the_same_message(message: protocol.Message) -> None:
    assert protocol.parse(protocol.dump(message)) == message


@pytest.mark.parametrize("message", [*GOLDEN.values(), *VARIANTS], ids=repr)
def test_dump_is_one_line_of_json_tagged_with_the_type(message: protocol.Message) -> None:
    text = protocol.dump(message)
    assert "\n" not in text
    assert json.loads(text)["type"] == message.type


def test_parse_accepts_bytes_as_well_as_text() -> None:
    text = protocol.dump(GOLDEN["request"])
    assert protocol.parse(text.encode()) == GOLDEN["request"]


# golden files


def test_every_message_type_has_a_golden_file() -> None:
    message_types = set(typing.get_args(protocol.Message))
    assert {type(m) for m in GOLDEN.values()} == message_types
    assert {p.stem for p in GOLDEN_DIR.glob("*.json")} == set(GOLDEN)


@pytest.mark.parametrize("name", list(GOLDEN))
def test_dump_matches_the_golden_wire_format(name: str) -> None:
    assert json.loads(protocol.dump(GOLDEN[name])) == golden(name)


@pytest.mark.parametrize("name", list(GOLDEN))
def test_golden_frame_parses_to_the_message(name: str) -> None:
    text = (GOLDEN_DIR / f"{name}.json").read_text()
    assert protocol.parse(text) == GOLDEN[name]


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    frame = {**golden("hello"), "capabilities": ["gzip"]}
    assert protocol.parse(json.dumps(frame)) == GOLDEN["hello"]


@pytest.mark.parametrize(("frame", "expected"), [
    ({"type": "request", "id": "r", "name": "n", "resourceType": "t", "resourceId": "1t1"},
     Request(id="r", name="n", resource_type="t", resource_id="1t1", data={}, timeout_ms=45_000)),
    ({"type": "request", "id": "r", "name": "n", "resourceType": "t", "resourceId": "1t1",
      "data": None, "timeoutMs": None},
     Request(id="r", name="n", resource_type="t", resource_id="1t1", data={}, timeout_ms=45_000)),
    ({"type": "progress", "requestId": "r", "message": "m"},
     Progress(request_id="r", message="m", progress=None)),
    ({"type": "reply", "requestId": "r"}, Reply(request_id="r", data={}, error=None)),
    ({"type": "reply", "requestId": "r", "data": None, "error": None}, Reply(request_id="r")),
    ({"type": "welcome", "hostId": "1h1", "pingInterval": 15, "reportInterval": 60},
     Welcome(host_id="1h1", ping_interval=15.0, report_interval=60.0)),
])
def test_optional_fields_take_their_defaults_when_absent_or_null(
        frame: dict[str, Any], expected: protocol.Message) -> None:
    assert protocol.parse(json.dumps(frame)) == expected


def test_welcome_intervals_given_as_integers_parse_as_floats() -> None:
    message = protocol.parse('{"type":"welcome","hostId":"1h1","pingInterval":15,'
                             '"reportInterval":60}')
    assert isinstance(message, Welcome)
    assert isinstance(message.ping_interval, float)
    assert isinstance(message.report_interval, float)


# malformed frames


def without(name: str, key: str) -> str:
    frame = golden(name)
    del frame[key]
    return json.dumps(frame)


def with_value(name: str, key: str, value: Any) -> str:
    return json.dumps({**golden(name), key: value})


def reply_with_error(error: Any) -> str:
    return json.dumps({"type": "reply", "requestId": "r", "error": error})


MALFORMED: list[tuple[str, str | bytes, str]] = [
    # (case, frame, words the error message must contain)
    ("not json", "hello", "not valid JSON"),
    ("empty frame", "", "not valid JSON"),
    ("truncated json", '{"type": "hello"', "not valid JSON"),
    ("invalid utf-8", b'{"type": "\xff"}', "not valid JSON"),
    ("array", "[]", "must be a JSON object"),
    ("number", "42", "must be a JSON object"),
    ("string", '"hello"', "must be a JSON object"),
    ("null", "null", "must be a JSON object"),
    ("no type", "{}", "unknown message type None"),
    ("unknown type", '{"type": "bogus"}', "unknown message type 'bogus'"),
    ("type not a string", '{"type": 5}', "unknown message type 5"),
    ("type in wrong case", '{"type": "Hello"}', "unknown message type 'Hello'"),
    # missing required fields
    ("hello without agentVersion", without("hello", "agentVersion"), "'agentVersion'"),
    ("hello without facts", without("hello", "facts"), "'facts'"),
    ("hello without protocol", without("hello", "protocol"), "'protocol'"),
    ("welcome without hostId", without("welcome", "hostId"), "'hostId'"),
    ("welcome without pingInterval", without("welcome", "pingInterval"), "'pingInterval'"),
    ("welcome without reportInterval", without("welcome", "reportInterval"),
     "'reportInterval'"),
    ("facts without changes", without("facts", "changes"), "'changes'"),
    ("request without id", without("request", "id"), "'id'"),
    ("request without name", without("request", "name"), "'name'"),
    ("request without resourceType", without("request", "resourceType"), "'resourceType'"),
    ("request without resourceId", without("request", "resourceId"), "'resourceId'"),
    ("progress without requestId", without("progress", "requestId"), "'requestId'"),
    ("progress without message", without("progress", "message"), "'message'"),
    ("reply without requestId", without("reply", "requestId"), "'requestId'"),
    ("required field null", with_value("hello", "agentVersion", None), "'agentVersion'"),
    # wrong field types
    ("agentVersion a number", with_value("hello", "agentVersion", 1),
     "'agentVersion' must be a str"),
    ("facts a list", with_value("hello", "facts", []), "'facts' must be a dict"),
    ("protocol a string", with_value("hello", "protocol", "1"), "'protocol' must be a int"),
    ("protocol a float", with_value("hello", "protocol", 1.0), "'protocol' must be a int"),
    ("protocol a bool", with_value("hello", "protocol", True), "'protocol' must be a int"),
    ("hostId a number", with_value("welcome", "hostId", 3), "'hostId' must be a str"),
    ("pingInterval a string", with_value("welcome", "pingInterval", "15"), "'pingInterval'"),
    ("pingInterval a bool", with_value("welcome", "pingInterval", True), "'pingInterval'"),
    ("reportInterval a bool", with_value("welcome", "reportInterval", False),
     "'reportInterval'"),
    ("changes a string", with_value("facts", "changes", "cpu"), "'changes' must be a dict"),
    ("request id a number", with_value("request", "id", 7), "'id' must be a str"),
    ("request data a list", with_value("request", "data", [1]), "'data' must be a dict"),
    ("timeoutMs a string", with_value("request", "timeoutMs", "30000"), "'timeoutMs'"),
    ("timeoutMs a bool", with_value("request", "timeoutMs", True), "'timeoutMs' must be a int"),
    ("timeoutMs a float", with_value("request", "timeoutMs", 1.5), "'timeoutMs' must be a int"),
    ("progress a bool", with_value("progress", "progress", True), "'progress' must be a int"),
    ("progress a string", with_value("progress", "progress", "10"), "'progress' must be a int"),
    ("progress message a dict", with_value("progress", "message", {}), "'message'"),
    ("reply data a string", with_value("reply", "data", "ok"), "'data' must be a dict"),
    ("reply error a string", reply_with_error("boom"), "'error' must be an object"),
    ("reply error a list", reply_with_error([]), "'error' must be an object"),
    ("reply error without code", reply_with_error({"message": "m"}), "'code'"),
    ("reply error code a number", reply_with_error({"code": 5, "message": "m"}), "'code'"),
    ("reply error without message", reply_with_error({"code": "internal"}), "'message'"),
    ("healthReport without results", without("health_report", "results"), "'results'"),
    ("healthReport results an object", with_value("health_report", "results", {}),
     "'results' must be a list"),
    ("healthReport results of strings", with_value("health_report", "results", ["0b7c"]),
     "'results' must be a list of objects"),
    ("healthReport with too many results",
     with_value("health_report", "results", [{}] * (MAX_HEALTH_RESULTS + 1)),
     f"at most {MAX_HEALTH_RESULTS} results"),
    # size
    ("text over the limit", "x" * (MAX_FRAME_BYTES + 1), f"larger than {MAX_FRAME_BYTES}"),
    ("bytes over the limit", b" " * (MAX_FRAME_BYTES + 1), f"larger than {MAX_FRAME_BYTES}"),
]


@pytest.mark.parametrize(("frame", "words"), [(f, w) for _, f, w in MALFORMED],
                         ids=[case for case, _, _ in MALFORMED])
def test_malformed_frame_raises_protocol_error_with_a_readable_reason(
        frame: str | bytes, words: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        protocol.parse(frame)
    message = str(caught.value)
    assert words in message
    assert "\n" not in message
    assert len(message) < 300
    assert caught.value.code is ErrorCode.INVALID_MESSAGE


def test_frame_of_exactly_the_limit_is_not_refused_for_its_size() -> None:
    padding = MAX_FRAME_BYTES - len('{"type":"facts","changes":{"x":""}}')
    frame = '{"type":"facts","changes":{"x":"' + "a" * padding + '"}}'
    assert len(frame) == MAX_FRAME_BYTES
    assert protocol.parse(frame) == Facts(changes={"x": "a" * padding})


def test_text_frame_over_the_limit_in_utf8_bytes_is_refused() -> None:
    frame = '{"type":"facts","changes":{"x":"' + "é" * (MAX_FRAME_BYTES // 2 + 1) + '"}}'
    assert len(frame.encode()) > MAX_FRAME_BYTES
    with pytest.raises(ProtocolError, match="larger than"):
        protocol.parse(frame)


def test_deeply_nested_json_raises_protocol_error() -> None:
    frame = '{"type":"facts","changes":{"x":' + "[" * 100_000 + "]" * 100_000 + "}}"
    assert len(frame) < MAX_FRAME_BYTES
    with pytest.raises(ProtocolError):
        protocol.parse(frame)


@pytest.mark.parametrize("code", ["bogus", "", "INTERNAL", "Timeout"])
def test_reply_error_with_an_unknown_code_maps_to_internal_and_keeps_the_message(
        code: str) -> None:
    message = protocol.parse(reply_with_error({"code": code, "message": "disk on fire"}))
    assert message == Reply(request_id="r", error=ReplyError(ErrorCode.INTERNAL, "disk on fire"))


@pytest.mark.parametrize("code", list(ErrorCode))
def test_reply_error_with_a_known_code_keeps_it(code: ErrorCode) -> None:
    message = protocol.parse(reply_with_error({"code": code.value, "message": "m"}))
    assert isinstance(message, Reply)
    assert message.error == ReplyError(code, "m")


# health reports


def test_a_health_report_of_the_most_results_parses() -> None:
    results = [{"uuid": f"c{i}", "state": "healthy", "message": None, "at": 1.0}
               for i in range(MAX_HEALTH_RESULTS)]
    assert protocol.parse(protocol.dump(HealthReport(results=results))) == \
        HealthReport(results=results)


def test_a_health_report_of_the_largest_results_fits_its_frame_limit() -> None:
    """shared.health bounds a result's fields so that a full report is always accepted."""
    largest = HealthResult("u" * 64, HealthState.REINITIALIZING, "m" * MAX_MESSAGE,
                           1795781000.123456789)
    text = protocol.dump(HealthReport(results=[largest.dump()] * MAX_HEALTH_RESULTS))
    assert protocol.frame_size(text) <= protocol.frame_limit("healthReport")
