"""Readers for compose values: each checks one value's type and returns it in Corral's shape.

A reader takes the value, its path and the file's ``Report``; on a bad value it reports a
problem at the path (or at the offending list item) and returns None, so that reading goes on
and every problem of a file is found in one pass. Numbers are accepted where a string is wanted
(``expose: [80]``); booleans are not, since YAML reads ``yes`` and ``on`` as booleans and the
user meant text. A string of digits is accepted where an integer is wanted, because an
interpolated value (``scale: ${SCALE}``) is always a string.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from server.compose.errors import Report, child

Reader = Callable[[Any, str, Report], Any]

_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([bkmg]?)", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_PORT = re.compile(r"(?:(?:(?:\[[0-9a-fA-F:.]+\]|[0-9.]+):)?[0-9]{0,5}:)?[0-9]{1,5}(?:/[a-z]+)?")
_INT = re.compile(r"-?[0-9]{1,18}")
RESTART_POLICIES = ("no", "always", "unless-stopped", "on-failure")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean (quote it if you meant text)"
    if value is None:
        return "empty"
    names: dict[type, str] = {dict: "a mapping", list: "a list", str: "a string"}
    return names.get(type(value), "a number")


def wrong(report: Report, path: str, value: Any, wanted: str) -> None:
    """Report that the value at ``path`` is not what was wanted, and say what it is."""
    report.problem(path, f"must be {wanted}, not {_kind(value)}")


def string(value: Any, path: str, report: Report) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    wrong(report, path, value, "a string")
    return None


def integer(value: Any, path: str, report: Report) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INT.fullmatch(value.strip()):
        return int(value)
    wrong(report, path, value, "an integer")
    return None


def boolean(value: Any, path: str, report: Report) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    wrong(report, path, value, "true or false")
    return None


def anything(value: Any, path: str, report: Report) -> Any:
    return value


def string_list(value: Any, path: str, report: Report) -> list[str] | None:
    """A list of strings; a single string is a list of one, as Rancher took it."""
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list):
        wrong(report, path, value, "a list of strings")
        return None
    items = [string(item, child(path, i), report) for i, item in enumerate(value)]
    return [item for item in items if item is not None] if None not in items else None


def argv(value: Any, path: str, report: Report) -> list[str] | None:
    """A command: a list, or a string split as a shell would split it."""
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            report.problem(path, f"cannot be split into arguments: {exc}")
            return None
    if isinstance(value, list):
        return string_list(value, path, report)
    wrong(report, path, value, "a string or a list of strings")
    return None


def mapping(value: Any, path: str, report: Report) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    wrong(report, path, value, "a mapping")
    return None


def string_map(value: Any, path: str, report: Report, sep: str = "=") -> dict[str, str] | None:
    """``labels``-like: a mapping of strings, or a list of ``key=value`` (a bare key is empty)."""
    if isinstance(value, list):
        pairs: dict[str, str] = {}
        for i, item in enumerate(value):
            text = string(item, child(path, i), report)
            if text is not None:
                key, _, val = text.partition(sep)
                pairs[key.strip()] = val
        return pairs
    if not isinstance(value, dict):
        wrong(report, path, value, f"a mapping or a list of key{sep}value")
        return None
    result: dict[str, str] = {}
    for key, val in value.items():
        text = "" if val is None else string(val, child(path, key), report)
        if text is not None:
            result[key] = text
    return result


def memory(value: Any, path: str, report: Report) -> int | None:
    """Bytes from ``100000``, ``512m``, ``1g``, ``1.5g`` (units of 1024, any case)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    if m is None:
        wrong(report, path, value, "a size such as 512m or 1g")
        return None
    try:
        return int(Decimal(m[1]) * _UNITS[m[2].lower()])
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        wrong(report, path, value, "a size such as 512m or 1g")
        return None


def ports(value: Any, path: str, report: Report) -> list[str] | None:
    """``[[ip:]host:]container[/protocol]`` strings; v3's ``{target, published, protocol}``."""
    if not isinstance(value, list):
        value = [value]
    result: list[str] = []
    for i, item in enumerate(value):
        at = child(path, i)
        text = _long_port(item, at, report) if isinstance(item, dict) else \
            string(item, at, report)
        if text is not None and not _PORT.fullmatch(text):
            report.problem(at, f"{text} is not [[hostIp:]hostPort:]containerPort[/protocol]")
        elif text is not None:
            result.append(text)
    return result


def _long_port(item: dict[str, Any], path: str, report: Report) -> str | None:
    unknown(report, path, item, ("target", "published", "protocol", "mode"))
    if item.get("mode", "host") != "host":
        report.problem(child(path, "mode"), "only mode host is supported: Corral publishes "
                       "ports on the container's host")
    target = integer(item.get("target"), child(path, "target"), report)
    published = item.get("published")
    host = None if published is None else integer(published, child(path, "published"), report)
    protocol = item.get("protocol")
    protocol = None if protocol is None else string(protocol, child(path, "protocol"), report)
    if target is None:
        return None
    text = str(target) if host is None else f"{host}:{target}"
    return f"{text}/{protocol}" if protocol else text


def volumes(value: Any, path: str, report: Report) -> list[str] | None:
    """``source:target[:mode]`` strings; v3's ``{type, source, target, read_only}``."""
    if not isinstance(value, list):
        wrong(report, path, value, "a list")
        return None
    result: list[str] = []
    for i, item in enumerate(value):
        at = child(path, i)
        text = _long_volume(item, at, report) if isinstance(item, dict) else \
            string(item, at, report)
        if text is not None:
            result.append(text)
    return result


def _long_volume(item: dict[str, Any], path: str, report: Report) -> str | None:
    unknown(report, path, item, ("type", "source", "target", "read_only"))
    kind = item.get("type", "volume")
    if kind not in ("volume", "bind"):
        report.problem(child(path, "type"), f"type {kind} is not supported; use volume or bind")
    target = string(item.get("target"), child(path, "target"), report)
    source = item.get("source")
    source = None if source is None else string(source, child(path, "source"), report)
    read_only = boolean(item.get("read_only", False), child(path, "read_only"), report)
    if target is None:
        return None
    text = target if source is None else f"{source}:{target}"
    return f"{text}:ro" if read_only else text


def extra_hosts(value: Any, path: str, report: Report) -> list[str] | None:
    if isinstance(value, dict):
        hosts = string_map(value, path, report)
        return None if hosts is None else [f"{host}:{ip}" for host, ip in hosts.items()]
    return string_list(value, path, report)


def restart(value: Any, path: str, report: Report) -> dict[str, Any] | None:
    """``always``, ``unless-stopped``, ``no`` or ``on-failure[:retries]``."""
    if value is False:  # restart: no, unquoted
        value = "no"
    text = string(value, path, report)
    if text is None:
        return None
    name, colon, count = text.partition(":")
    if name not in RESTART_POLICIES or (colon and (name != "on-failure" or not count.isdigit())):
        report.problem(path, f"{text} is not one of no, always, unless-stopped, "
                       "on-failure[:retries]")
        return None
    return {"name": name, "maximumRetryCount": int(count)} if colon else {"name": name}


def ulimits(value: Any, path: str, report: Report) -> list[dict[str, Any]] | None:
    """``{nofile: {soft, hard}, nproc: 65535}`` → ``[{name, soft, hard}]``."""
    if not isinstance(value, dict):
        wrong(report, path, value, "a mapping of limit names")
        return None
    result: list[dict[str, Any]] = []
    for name, limit in value.items():
        at = child(path, name)
        if isinstance(limit, dict):
            unknown(report, at, limit, ("soft", "hard"))
            soft = integer(limit.get("soft"), child(at, "soft"), report)
            hard = integer(limit.get("hard"), child(at, "hard"), report)
        else:
            soft = hard = integer(limit, at, report)
        if soft is not None and hard is not None:
            result.append({"name": name, "soft": soft, "hard": hard})
    return result


def unknown(report: Report, path: str, value: dict[str, Any], known: tuple[str, ...] | Any,
            ) -> None:
    """Report each key of ``value`` not in ``known``, at the key."""
    for key in value:
        if key not in known:
            report.problem(child(path, key), f"unknown key {key}", at_key=True)
