"""Log line formats shared by server and agent: readable text or JSON lines, secrets elided.

Formatting is pure; each program installs its own handler at its edge.
"""

from __future__ import annotations

import json
import logging
import re
import time

# Basic credentials, bearer tokens, registration tokens in script URLs, and secret fields.
_AUTH = re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(basic|bearer)\s+[A-Za-z0-9+/=._-]+")
_SCRIPT_URL = re.compile(r"(/v1/scripts/)[A-Za-z0-9]+")
# ``key: value``, ``key=value``, JSON and Python reprs; a quoted value is hidden whole.
_FIELD = re.compile(r"(?i)([\"']?(?:secret\w*|password|token|key)[\"']?\s*[:=]\s*)"
                    r"(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|[^\s,}&'\"]+)")


def _hide(match: re.Match[str]) -> str:
    value = match.group(2)
    quote = value[0] if value[0] in "\"'" else ""
    return f"{match.group(1)}{quote}***{quote}"


def redact(text: str) -> str:
    """``text`` with every credential-looking value replaced by ``***``."""
    text = _AUTH.sub(r"\1\2 ***", text)
    text = _SCRIPT_URL.sub(r"\1***", text)
    return _FIELD.sub(_hide, text)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        if record.exc_info:
            out["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(out)


def formatter(kind: str) -> logging.Formatter:
    if kind == "json":
        return JsonFormatter()
    if kind == "text":
        return TextFormatter()
    raise ValueError(f"unknown log format {kind!r}: use text or json")
