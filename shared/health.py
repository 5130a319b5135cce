"""The payloads of Rancher's health checks, which each agent runs for the containers of its own
host. Pure.

The server decides which host checks which container (the container's own: its agent reaches
the container's managed address over the local bridge, whatever the network policy between
hosts says) and sends each agent ``health.apply``: the whole list of checks it must run, never a
delta, so an agent that missed one applies the next. The agent answers with the version it now
runs (:class:`HealthApplied`) and reports each container's state as it changes, in
``healthReport`` messages (``shared.protocol.HealthReport``) whose results are
:class:`HealthResult` objects.

The field names and defaults are those of a Rancher 1.x ``healthCheck``; times are in
milliseconds there as here, except ``startedAt`` and ``at``, epoch seconds as in every other
Corral message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address
from typing import Self

from shared.fields import (
    Applied,
    Fields,
    JsonObject,
    Refuse,
    bounded,
    bounded_or,
    invalid_data,
    protocol_error,
)


class HealthState(StrEnum):
    """A container's health, as Rancher named it."""

    INITIALIZING = "initializing"  # just started: failures are forgiven for a while
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    REINITIALIZING = "reinitializing"  # restarted after it had been checked


HEALTH_STATES = tuple(state.value for state in HealthState)

DEFAULT_INTERVAL_MS = 2000
DEFAULT_RESPONSE_TIMEOUT_MS = 2000
DEFAULT_HEALTHY_THRESHOLD = 2
DEFAULT_UNHEALTHY_THRESHOLD = 3
MAX_DURATION_MS = 86_400_000  # a day: any longer is a mistake, and a task that never wakes
MAX_THRESHOLD = 1000
MAX_CHECKS = 10_000  # one host's containers, with room to spare
MAX_REQUEST_LINE = 1024
MAX_MESSAGE = 100  # a result's message: short, so that a report of 1000 stays small
# A container's record uuid: a uuid4 in practice; anything printable and short is accepted.
_UUID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def _uuid(f: Fields) -> str:
    value = f.text("uuid")
    if not _UUID.fullmatch(value):
        raise f.refuse(f"{f.where}.uuid must be at most 64 letters, digits or ._:-")
    return value


@dataclass(frozen=True)
class HealthCheck:
    """One container to check: connect to ``address:port`` every ``interval_ms``; with a
    ``request_line`` (``GET /ping HTTP/1.0``) send it and read the status line, else a TCP
    connect is the whole check. ``started_at`` is when the container last (re)started: the
    (re)initializing windows count from it, and a new value means it restarted."""

    uuid: str
    address: str
    port: int
    request_line: str | None = None
    interval_ms: int = DEFAULT_INTERVAL_MS
    response_timeout_ms: int = DEFAULT_RESPONSE_TIMEOUT_MS
    healthy_threshold: int = DEFAULT_HEALTHY_THRESHOLD
    unhealthy_threshold: int = DEFAULT_UNHEALTHY_THRESHOLD
    initializing_timeout_ms: int | None = None
    reinitializing_timeout_ms: int | None = None
    started_at: float | None = None

    @classmethod
    def read(cls, f: Fields) -> Self:
        address = f.text("address")
        try:
            IPv4Address(address)
        except ValueError:
            raise f.refuse(f"{f.where}.address must be an IPv4 address") from None
        port = f.integer("port")
        if not 0 < port < 65536:
            raise f.refuse(f"{f.where}.port must be a port number, 1 to 65535")
        request_line = f.opt_text("requestLine") or None  # empty: a TCP check, as in Rancher
        if request_line is not None:
            if "\r" in request_line or "\n" in request_line:
                raise f.refuse(f"{f.where}.requestLine must be one line")
            if len(request_line) > MAX_REQUEST_LINE or not request_line.isascii():
                raise f.refuse(f"{f.where}.requestLine must be at most {MAX_REQUEST_LINE} "
                               "ASCII characters")
        return cls(
            uuid=_uuid(f), address=address, port=port, request_line=request_line,
            interval_ms=bounded_or(f, "interval", DEFAULT_INTERVAL_MS, MAX_DURATION_MS),
            response_timeout_ms=bounded_or(f, "responseTimeout", DEFAULT_RESPONSE_TIMEOUT_MS,
                                          MAX_DURATION_MS),
            healthy_threshold=bounded_or(f, "healthyThreshold", DEFAULT_HEALTHY_THRESHOLD,
                                        MAX_THRESHOLD),
            unhealthy_threshold=bounded_or(f, "unhealthyThreshold",
                                          DEFAULT_UNHEALTHY_THRESHOLD, MAX_THRESHOLD),
            initializing_timeout_ms=bounded(f, "initializingTimeout", None, MAX_DURATION_MS),
            reinitializing_timeout_ms=bounded(f, "reinitializingTimeout", None,
                                               MAX_DURATION_MS),
            started_at=f.opt_number("startedAt", minimum=0))

    def dump(self) -> JsonObject:
        return {"uuid": self.uuid, "address": self.address, "port": self.port,
                "requestLine": self.request_line, "interval": self.interval_ms,
                "responseTimeout": self.response_timeout_ms,
                "healthyThreshold": self.healthy_threshold,
                "unhealthyThreshold": self.unhealthy_threshold,
                "initializingTimeout": self.initializing_timeout_ms,
                "reinitializingTimeout": self.reinitializing_timeout_ms,
                "startedAt": self.started_at}


@dataclass(frozen=True)
class HealthApply:
    """``health.apply``: every check this host must run (none: stop checking). ``version``
    names the list (a digest), so that logs and the reply say which one a host runs."""

    version: str = ""
    checks: tuple[HealthCheck, ...] = ()

    @classmethod
    def parse(cls, obj: object, where: str = "data", refuse: Refuse = invalid_data) -> Self:
        return cls.read(Fields(obj, where, refuse))

    @classmethod
    def read(cls, f: Fields) -> Self:
        raw = f.obj.get("checks")
        if isinstance(raw, list) and len(raw) > MAX_CHECKS:
            raise f.refuse(f"{f.where}.checks must hold at most {MAX_CHECKS} checks")
        checks = f.nested_list("checks", HealthCheck.read)
        seen: set[str] = set()
        for i, check in enumerate(checks):
            if check.uuid in seen:  # one state per container: two checks would fight over it
                raise f.refuse(f"{f.where}.checks[{i}].uuid {check.uuid} is checked twice")
            seen.add(check.uuid)
        return cls(f.opt_text("version") or "", checks)

    def dump(self) -> JsonObject:
        return {"version": self.version, "checks": [c.dump() for c in self.checks]}


@dataclass(frozen=True)
class HealthApplied(Applied):
    """The reply of ``health.apply``: the version now being checked."""


@dataclass(frozen=True)
class HealthResult:
    """One container's health state since ``at`` (epoch seconds), and why when it is not
    healthy (``connection refused``, ``HTTP 404``, ``timed out``)."""

    uuid: str
    state: HealthState
    message: str | None = None
    at: float = 0.0

    @classmethod
    def parse(cls, obj: object, where: str = "a health result",
              refuse: Refuse = protocol_error) -> Self:
        return cls.read(Fields(obj, where, refuse))

    @classmethod
    def read(cls, f: Fields) -> Self:
        state = f.text("state")
        if state not in HEALTH_STATES:
            raise f.refuse(f"{f.where}.state must be one of {', '.join(HEALTH_STATES)}")
        message = f.opt_text("message")
        if message is not None and len(message) > MAX_MESSAGE:
            raise f.refuse(f"{f.where}.message must be at most {MAX_MESSAGE} characters")
        at = f.opt_number("at", minimum=0)
        if at is None:
            raise f.refuse(f"{f.where}.at must be a number of at least 0")
        return cls(_uuid(f), HealthState(state), message, at)

    def dump(self) -> JsonObject:
        return {"uuid": self.uuid, "state": str(self.state), "message": self.message,
                "at": self.at}
