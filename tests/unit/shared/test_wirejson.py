"""The JSON the websockets accept, and the frame bounds of the protocol (pure, no sockets)."""

from __future__ import annotations

import pytest

from shared import protocol, wirejson
from shared.errors import ErrorCode, ProtocolError

REFUSED = [
    ("a lone high surrogate", '{"a": "\\ud800"}', "lone surrogate"),
    ("a lone low surrogate", '["x\\udfffy"]', "lone surrogate"),
    ("a lone surrogate key", '{"\\uDC00": 1}', "lone surrogate"),
    ("a reversed pair", '"\\ude00\\ud83d"', "lone surrogate"),
    ("NaN", '{"a": NaN}', "NaN is not a JSON number"),
    ("Infinity", "[Infinity]", "Infinity is not a JSON number"),
    ("-Infinity", "[-Infinity]", "-Infinity is not a JSON number"),
    ("1e400", "[1e400]", "out of range"),
    ("a float past int64", "[1e19]", "out of range"),
    ("an integer past int64", f"[{2**63}]", "out of range"),
    ("a negative integer past int64", f"[-{2**63 + 1}]", "out of range"),
    ("a 5000-digit integer", "[" + "9" * 5000 + "]", "out of range"),
    ("65 levels", "[" * 65 + "]" * 65, "nested more than 64"),
    ("a scalar below 64 levels", "[" * 64 + "1" + "]" * 64, "nested more than 64"),
    ("recursion", "[" * 100_000 + "]" * 100_000, "nested"),
    ("invalid UTF-8 bytes", b'{"a": "\xff"}', "not valid JSON"),
    ("surrogate escape in bytes", b'{"a": "\\ud800"}', "lone surrogate"),
    ("not JSON", "{", "not valid JSON"),
]


@pytest.mark.parametrize(("text", "words"), [(t, w) for _, t, w in REFUSED],
                         ids=[case for case, _, _ in REFUSED])
def test_json_the_server_cannot_hold_is_refused_with_a_reason(text: str | bytes,
                                                              words: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        wirejson.loads(text)
    assert words in str(caught.value) and "\n" not in str(caught.value)
    assert caught.value.code is ErrorCode.INVALID_MESSAGE


@pytest.mark.parametrize(("text", "value"), [
    ('"\\ud83d\\ude00"', "\U0001f600"),  # a surrogate pair is one character
    ('"\\\\ud800"', "\\ud800"),  # an escaped backslash, then plain text
    (f"[{2**63 - 1}, -{2**63 - 1}]", [2**63 - 1, -(2**63 - 1)]),
    ("[1.5e18, -0.0, 1e-300]", [1.5e18, -0.0, 1e-300]),
    ("[" * 63 + "1" + "]" * 63, None),  # 64 levels, the scalar included
    ('{"a": [{"b": "é"}]}', {"a": [{"b": "é"}]}),
])
def test_json_within_the_rules_reads_as_python_reads_it(text: str,
                                                       value: object | None) -> None:
    parsed = wirejson.loads(text)
    if value is not None:
        assert parsed == value


def test_frame_limits_are_per_type_with_a_small_default() -> None:
    assert protocol.frame_limit("inventory") == protocol.MAX_FRAME_BYTES
    assert protocol.frame_limit("facts") == 256 * 1024
    assert protocol.frame_limit("mystery") == protocol.SMALL_FRAME_LIMIT
    assert all(limit <= protocol.MAX_FRAME_BYTES for limit in protocol.FRAME_LIMITS.values())
    assert protocol.frame_size("é" * 10_000) == 20_000


def test_a_close_reason_is_cut_on_a_character_boundary() -> None:
    reason = protocol.close_reason("é" * 100)
    assert len(reason) <= protocol.MAX_CLOSE_REASON
    assert reason.decode() == "é" * 61


@pytest.mark.parametrize("cols", [-1, 65_536, 10**9])
def test_a_stream_resize_outside_a_terminals_size_is_refused(cols: int) -> None:
    frame = f'{{"type":"streamResize","streamId":"s","cols":{cols},"rows":24}}'
    with pytest.raises(ProtocolError, match="between 0 and 65535"):
        protocol.parse(frame)
