"""The agent websocket protocol: one JSON object per text frame, tagged by ``type``.

Phases: the agent opens ``/v1/agent/connect`` with its credentials in the HTTP handshake,
sends ``hello`` with its host facts, and receives ``welcome``. From then on the server sends
``request`` messages (instructions) and the agent answers each with ``progress`` messages and
exactly one ``reply`` naming the request. The agent sends ``facts`` with the sections of its
facts that changed, ``healthReport`` with the health states of the containers it checks
(``shared.health``) as they change, and ``lbReport`` with the states of its load balancers
(``shared.lb``) as they change. Liveness uses websocket ping/pong frames, not messages.

This module is pure: ``parse`` turns text into a message or raises ProtocolError, ``dump``
turns a message into text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Literal, assert_never

from shared import wirejson
from shared.errors import ErrorCode, ProtocolError

PROTOCOL_VERSION = 1
KIB = 1024
MAX_FRAME_BYTES = 4 * 1024 * KIB
AGENT_PATH = "/v1/agent/connect"
MAX_TERMINAL_SIZE = 65_535  # a tty's rows and columns are unsigned shorts

# The largest frame of each message type a server takes from an agent: most messages are
# small; an inventory (every container) and a reply (facts, a container's state) may be large.
FRAME_LIMITS: dict[str, int] = {
    "hello": 256 * KIB,
    "facts": 256 * KIB,
    "progress": 16 * KIB,
    "reply": 1024 * KIB,
    "containerEvent": 64 * KIB,
    "inventory": MAX_FRAME_BYTES,
    "streamData": 512 * KIB,
    "healthReport": 256 * KIB,
    "lbReport": 256 * KIB,
}
SMALL_FRAME_LIMIT = 16 * KIB  # any other type
# Results in one healthReport: an agent checking more containers sends several reports. A
# result is at most about 250 bytes of JSON (shared.health bounds its fields), so 1000 fit.
MAX_HEALTH_RESULTS = 1000
# Results in one lbReport: a result is at most about 1.2 KB of JSON (shared.lb bounds its
# message), and a host runs at most shared.lb.MAX_BALANCERS balancers.
MAX_LB_RESULTS = 100

JsonObject = dict[str, Any]


class CloseCode(IntEnum):
    """Websocket close codes the server uses, with the reason sent beside them."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    INVALID_MESSAGE = 4400
    HELLO_TIMEOUT = 4408
    SUPERSEDED = 4409
    HOST_REMOVED = 4410
    OVERLOADED = 4429  # the peer sent more than the server holds for it, or read too slowly


@dataclass(frozen=True)
class Hello:
    """First message of a session: who the agent is and what its host looks like."""

    agent_version: str
    facts: JsonObject
    protocol: int = PROTOCOL_VERSION
    type: Literal["hello"] = "hello"


@dataclass(frozen=True)
class Welcome:
    """The server's answer to ``hello``: the host record and the timings to use."""

    host_id: str
    ping_interval: float
    report_interval: float
    type: Literal["welcome"] = "welcome"


@dataclass(frozen=True)
class Facts:
    """Sections of the host facts that changed since the last report."""

    changes: JsonObject
    type: Literal["facts"] = "facts"


@dataclass(frozen=True)
class Request:
    """An instruction from the server to carry out on the agent's host."""

    id: str
    name: str
    resource_type: str
    resource_id: str
    data: JsonObject = field(default_factory=dict)
    timeout_ms: int = 45_000
    type: Literal["request"] = "request"


@dataclass(frozen=True)
class Progress:
    """A step of a running instruction; copied onto the resource as transitioning progress."""

    request_id: str
    message: str
    progress: int | None = None
    type: Literal["progress"] = "progress"


@dataclass(frozen=True)
class ReplyError:
    code: ErrorCode
    message: str


@dataclass(frozen=True)
class Reply:
    """The outcome of an instruction: ``data`` on success, ``error`` on failure."""

    request_id: str
    data: JsonObject = field(default_factory=dict)
    error: ReplyError | None = None
    type: Literal["reply"] = "reply"


@dataclass(frozen=True)
class ContainerEvent:
    """Something happened to a container on the host (Docker's own events, as they come)."""

    event: str
    container: JsonObject
    time: float
    type: Literal["containerEvent"] = "containerEvent"


@dataclass(frozen=True)
class Inventory:
    """Every container on the host, sent after ``welcome`` on each (re)connection."""

    containers: list[JsonObject]
    type: Literal["inventory"] = "inventory"


@dataclass(frozen=True)
class StreamData:
    """Bytes of an open stream (logs, exec), base64-encoded; either direction."""

    stream_id: str
    data: str
    type: Literal["streamData"] = "streamData"


@dataclass(frozen=True)
class StreamResize:
    """The terminal of an exec stream changed size."""

    stream_id: str
    cols: int
    rows: int
    type: Literal["streamResize"] = "streamResize"


@dataclass(frozen=True)
class StreamClose:
    """The server's end of a stream went away: stop it (the agent still replies)."""

    stream_id: str
    type: Literal["streamClose"] = "streamClose"


@dataclass(frozen=True)
class HealthReport:
    """Health states of containers the agent checks that changed (or all of them, after a
    reconnection); each result is a ``shared.health.HealthResult`` object."""

    results: list[JsonObject]
    type: Literal["healthReport"] = "healthReport"


@dataclass(frozen=True)
class LbReport:
    """States of the agent's load balancers that changed (or all of them, on a new session);
    each result is a ``shared.lb.LbResult`` object."""

    results: list[JsonObject]
    type: Literal["lbReport"] = "lbReport"


AgentMessage = Hello | Facts | Progress | Reply | ContainerEvent | Inventory | StreamData | \
    HealthReport | LbReport
ServerMessage = Welcome | Request | StreamData | StreamResize | StreamClose
Message = AgentMessage | ServerMessage


def _require(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ProtocolError(f"field {key!r} must be a {name}")
    return value


def _optional(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    if obj.get(key) is None:
        return default
    return _require(obj, key, kind)


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


MAX_CLOSE_REASON = 123  # bytes: a close frame's payload is at most 125, 2 for the code


def close_reason(reason: str) -> bytes:
    """``reason`` as a close frame carries it: UTF-8, cut on a character boundary."""
    encoded = reason.encode("utf-8", errors="replace")[:MAX_CLOSE_REASON]
    return encoded.decode("utf-8", errors="ignore").encode()


def frame_size(text: str | bytes) -> int:
    """The size of a frame in bytes (UTF-8 for text), counted only when it could matter."""
    if isinstance(text, str) and len(text) * 4 > SMALL_FRAME_LIMIT:
        return len(text.encode("utf-8", errors="surrogatepass"))
    return len(text)


def frame_limit(message_type: str) -> int:
    """The largest frame of ``message_type`` a server takes from an agent."""
    return FRAME_LIMITS.get(message_type, SMALL_FRAME_LIMIT)


def _terminal_size(obj: Mapping[str, Any], key: str) -> int:
    value = _require(obj, key, int)
    if not 0 <= value <= MAX_TERMINAL_SIZE:
        raise ProtocolError(f"field {key!r} must be between 0 and {MAX_TERMINAL_SIZE}")
    return int(value)


def parse(text: str | bytes) -> Message:
    """Parse one frame into a message; raise ProtocolError with a readable reason otherwise."""
    size = len(text.encode(errors="surrogatepass")) \
        if isinstance(text, str) and len(text) * 4 > MAX_FRAME_BYTES else len(text)
    if size > MAX_FRAME_BYTES:
        raise ProtocolError(f"message larger than {MAX_FRAME_BYTES} bytes")
    obj = wirejson.loads(text)
    if not isinstance(obj, dict):
        raise ProtocolError("message must be a JSON object")
    kind = obj.get("type")
    match kind:
        case "hello":
            return Hello(
                agent_version=_require(obj, "agentVersion", str),
                facts=_require(obj, "facts", dict),
                protocol=_require(obj, "protocol", int),
            )
        case "welcome":
            return Welcome(
                host_id=_require(obj, "hostId", str),
                ping_interval=float(_require(obj, "pingInterval", (int, float))),
                report_interval=float(_require(obj, "reportInterval", (int, float))),
            )
        case "facts":
            return Facts(changes=_require(obj, "changes", dict))
        case "request":
            return Request(
                id=_require(obj, "id", str),
                name=_require(obj, "name", str),
                resource_type=_require(obj, "resourceType", str),
                resource_id=_require(obj, "resourceId", str),
                data=_optional(obj, "data", dict, {}),
                timeout_ms=_optional(obj, "timeoutMs", int, 45_000),
            )
        case "progress":
            return Progress(
                request_id=_require(obj, "requestId", str),
                message=_require(obj, "message", str),
                progress=_optional(obj, "progress", int, None),
            )
        case "reply":
            error = obj.get("error")
            reply_error = None
            if error is not None:
                if not isinstance(error, dict):
                    raise ProtocolError("field 'error' must be an object")
                try:
                    code = ErrorCode(_require(error, "code", str))
                except ValueError:
                    code = ErrorCode.INTERNAL
                reply_error = ReplyError(code=code, message=_require(error, "message", str))
            return Reply(
                request_id=_require(obj, "requestId", str),
                data=_optional(obj, "data", dict, {}),
                error=reply_error,
            )
        case "containerEvent":
            return ContainerEvent(event=_require(obj, "event", str),
                                  container=_require(obj, "container", dict),
                                  time=float(_require(obj, "time", (int, float))))
        case "inventory":
            containers = _require(obj, "containers", list)
            if not all(isinstance(c, dict) for c in containers):
                raise ProtocolError("field 'containers' must be a list of objects")
            return Inventory(containers=containers)
        case "healthReport":
            results = _require(obj, "results", list)
            if len(results) > MAX_HEALTH_RESULTS:
                raise ProtocolError(f"field 'results' may hold at most {MAX_HEALTH_RESULTS} "
                                    "results; send several reports")
            if not all(isinstance(r, dict) for r in results):
                raise ProtocolError("field 'results' must be a list of objects")
            return HealthReport(results=results)
        case "lbReport":
            results = _require(obj, "results", list)
            if len(results) > MAX_LB_RESULTS:
                raise ProtocolError(f"field 'results' may hold at most {MAX_LB_RESULTS} "
                                    "results; send several reports")
            if not all(isinstance(r, dict) for r in results):
                raise ProtocolError("field 'results' must be a list of objects")
            return LbReport(results=results)
        case "streamData":
            return StreamData(stream_id=_require(obj, "streamId", str),
                              data=_require(obj, "data", str))
        case "streamResize":
            return StreamResize(stream_id=_require(obj, "streamId", str),
                                cols=_terminal_size(obj, "cols"),
                                rows=_terminal_size(obj, "rows"))
        case "streamClose":
            return StreamClose(stream_id=_require(obj, "streamId", str))
        case _:
            raise ProtocolError(f"unknown message type {kind!r}")


def dump(message: Message) -> str:
    """Serialise a message to the text of one frame."""
    obj: JsonObject
    match message:
        case Hello():
            obj = {"agentVersion": message.agent_version, "facts": message.facts,
                   "protocol": message.protocol}
        case Welcome():
            obj = {"hostId": message.host_id, "pingInterval": message.ping_interval,
                   "reportInterval": message.report_interval}
        case Facts():
            obj = {"changes": message.changes}
        case Request():
            obj = {"id": message.id, "name": message.name, "resourceType": message.resource_type,
                   "resourceId": message.resource_id, "data": message.data,
                   "timeoutMs": message.timeout_ms}
        case Progress():
            obj = {"requestId": message.request_id, "message": message.message,
                   "progress": message.progress}
        case Reply():
            obj = {"requestId": message.request_id, "data": message.data}
            if message.error is not None:
                obj["error"] = {"code": str(message.error.code), "message": message.error.message}
        case ContainerEvent():
            obj = {"event": message.event, "container": message.container, "time": message.time}
        case Inventory():
            obj = {"containers": message.containers}
        case HealthReport() | LbReport():
            obj = {"results": message.results}
        case StreamData():
            obj = {"streamId": message.stream_id, "data": message.data}
        case StreamResize():
            obj = {"streamId": message.stream_id, "cols": message.cols, "rows": message.rows}
        case StreamClose():
            obj = {"streamId": message.stream_id}
        case _:
            assert_never(message)
    obj["type"] = message.type
    return json.dumps(obj, separators=(",", ":"))
