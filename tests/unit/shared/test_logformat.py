"""Log formats: secrets never reach a log line, JSON output is one object per line."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from shared.logformat import JsonFormatter, TextFormatter, formatter, redact

# redact


@pytest.mark.parametrize(("text", "expected"), [
    ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic ***"),
    ("authorization=Bearer abc.def-ghi_jk", "authorization=Bearer ***"),
    ("AUTHORIZATION: BASIC QUJDOnh5eg==", "AUTHORIZATION: BASIC ***"),
    ("{'Authorization': 'Basic QUJDOnh5eg=='}", "{'Authorization': 'Basic ***'}"),
    ('{"Authorization": "Bearer a+b/c=="}', '{"Authorization": "Bearer ***"}'),
    ("GET /v1/scripts/mfrggzdfmztwq2lknnwg23tpobyxe43u HTTP/1.1",
     "GET /v1/scripts/*** HTTP/1.1"),
    ("curl -fsSL http://corral:8080/v1/scripts/ABC123 | sudo sh",
     "curl -fsSL http://corral:8080/v1/scripts/*** | sudo sh"),
    ("secretKey=abc123", "secretKey=***"),
    ("secretKey = abc123", "secretKey = ***"),
    ('{"secretKey": "abc123"}', '{"secretKey": "***"}'),
    ('{"secretKey":"abc123","hostId":"1h1"}', '{"secretKey":"***","hostId":"1h1"}'),
    ('{"secretValue": "s3cr3t"}', '{"secretValue": "***"}'),
    ("secret_key: s3cr3t", "secret_key: ***"),
    ("password=hunter2", "password=***"),
    ("password=hunter2&user=bob", "password=***&user=bob"),
    ("{'password': 'hunter2'}", "{'password': '***'}"),
    ("token=xyz", "token=***"),
    ("?token=xyz&limit=5", "?token=***&limit=5"),
    ('{"token":"xyz"}', '{"token":"***"}'),
])
def test_redact_hides_credentials(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize("text", [
    "instance.start 1i5: ok in 12 ms",
    "connected to http://corral:8080 as host 1h1",
    "GET /v1/hosts?limit=100&sort=name&marker=m100",
    "registered host node-1 (1h3) in environment 1a5",
    "password reset requested for bob",
    "3 tokens left: retry later",
    "the key to success",
    "Bearer of bad news",
    "POST /v1/register 201",
    "",
])
def test_redact_leaves_ordinary_text_alone(text: str) -> None:
    assert redact(text) == text


def test_redact_hides_the_whole_of_a_quoted_secret_with_spaces() -> None:
    redacted = redact('{"password": "correct horse battery staple"}')
    assert "horse" not in redacted
    assert "staple" not in redacted


# formatters


def record(message: str, *args: object, level: int = logging.INFO,
           exc_info: Any = None) -> logging.LogRecord:
    rec = logging.LogRecord("corral.agent", level, __file__, 1, message, args, exc_info)
    rec.created = 86_400.25
    rec.msecs = 250.0
    return rec


def test_json_formatter_emits_time_level_logger_and_redacted_message() -> None:
    line = JsonFormatter().format(record("sent %s", '{"secretKey": "abc"}', level=logging.WARNING))
    assert json.loads(line) == {
        "time": "1970-01-02T00:00:00.250Z",
        "level": "warning",
        "logger": "corral.agent",
        "message": 'sent {"secretKey": "***"}',
    }


def test_json_formatter_keeps_a_multi_line_message_on_one_line() -> None:
    line = JsonFormatter().format(record("first\nsecond"))
    assert "\n" not in line
    assert json.loads(line)["message"] == "first\nsecond"


def test_json_formatter_adds_the_redacted_traceback_on_one_line() -> None:
    try:
        raise RuntimeError("token=abc123 rejected")
    except RuntimeError:
        exc_info = sys.exc_info()
    line = JsonFormatter().format(record("failed", level=logging.ERROR, exc_info=exc_info))
    assert "\n" not in line
    out = json.loads(line)
    assert "RuntimeError: token=*** rejected" in out["exception"]
    assert "abc123" not in line


@pytest.fixture
def json_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.unit.shared.json_log")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


def test_json_log_has_one_json_object_per_line(
        json_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = json_log
    logger.info("host %s connected", "1h1")
    logger.debug("received %s", "Authorization: Basic dXNlcjpwYXNz\nand more")
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["message"] for line in lines] == [
        "host 1h1 connected",
        "received Authorization: Basic ***\nand more",
    ]
    assert [json.loads(line)["level"] for line in lines] == ["info", "debug"]


def test_text_formatter_redacts_too() -> None:
    line = TextFormatter().format(record("POST with password=%s", "hunter2"))
    assert line.endswith("INFO    corral.agent: POST with password=***")


@pytest.mark.parametrize(("kind", "cls"), [("json", JsonFormatter), ("text", TextFormatter)])
def test_formatter_by_name(kind: str, cls: type[logging.Formatter]) -> None:
    assert isinstance(formatter(kind), cls)


def test_unknown_formatter_name_is_a_value_error_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown log format 'xml': use text or json"):
        formatter("xml")
