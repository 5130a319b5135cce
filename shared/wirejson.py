"""JSON as Corral's websockets accept it: close to I-JSON (RFC 7493), with bounds on numbers
and nesting.

Python's ``json`` accepts more than other parts of the server can hold: lone surrogates
(``"\\ud800"``) that no UTF-8 encoder takes, ``NaN`` and ``1e400`` (infinity) that no JSON
column stores, and nesting deep enough to exhaust the recursion limit of whatever walks the
value next. ``loads`` refuses all of them with a ProtocolError naming the reason, so a value
it returns can be stored, rendered and sent on as it is.

Pure: no I/O.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from shared.errors import ProtocolError
from shared.text import encodable

MAX_DEPTH = 64
# Numbers hold in a 64-bit integer (what Docker and the store take; sizes in bytes need more
# than the 2^53 that I-JSON advises).
MAX_NUMBER = 2**63 - 1

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _number_error(text: str) -> ProtocolError:
    return ProtocolError(f"number {text[:40]} is out of range (at most 2^63-1 in magnitude)")


def _parse_int(text: str) -> int:
    if len(text) > 18:
        value = int(text) if len(text) < 40 else None
        if value is None or abs(value) > MAX_NUMBER:
            raise _number_error(text)
        return value
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or abs(value) > MAX_NUMBER:
        raise _number_error(text)
    return value


def _parse_constant(name: str) -> Any:
    raise ProtocolError(f"{name} is not a JSON number")


def loads(text: str | bytes) -> Any:
    """The JSON value of ``text``; ProtocolError with a readable reason if it is not one the
    server accepts."""
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("message is not valid JSON: it is not UTF-8 text") from None
    try:
        value = json.loads(text, parse_int=_parse_int, parse_float=_parse_float,
                           parse_constant=_parse_constant)
    except RecursionError:
        raise ProtocolError("message is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError
        raise ProtocolError(f"message is not valid JSON: {exc}") from None
    _check_shape(value, may_hold_surrogates=_SURROGATE_ESCAPE.search(text) is not None,
                 may_be_deep=text.count("{") + text.count("[") >= MAX_DEPTH)
    return value


def _check_shape(value: Any, *, may_hold_surrogates: bool, may_be_deep: bool) -> None:
    """Walk the value only when the text says it might break a rule (most messages are
    shallow and plain), one level at a time, with no object made per item (a large message
    is walked in a fraction of the time its parse takes)."""
    if not (may_hold_surrogates or may_be_deep):
        return
    level: list[Any] = [value]
    depth = 0
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            raise ProtocolError(f"message is nested more than {MAX_DEPTH} levels deep")
        below: list[Any] = []
        for item in level:
            kind = type(item)
            if kind is dict:
                if may_hold_surrogates:
                    for key in item:
                        _check_text(key)
                below.extend(item.values())
            elif kind is list:
                below.extend(item)
            elif kind is str and may_hold_surrogates:
                _check_text(item)
        level = below


def _check_text(text: str) -> None:
    if not encodable(text):
        raise ProtocolError("message holds a lone surrogate (\\ud800-\\udfff), which is not "
                            "text") from None
