"""Hypothesis strategies for websocket frames: agent protocol messages with hostile fields
(the hello, then what an agent may send in a session), raw frames of no protocol at all, and
the frames an API client sends on a stream (base64 input, resize control frames)."""

from __future__ import annotations

import base64
from collections.abc import Mapping

from hypothesis import strategies as st

from tests.api.fuzzing import (
    BIG_INTS,
    ODD_NUMBERS,
    PROBES,
    Json,
    Raw,
    hostile_values,
    nested,
    short,
    to_json,
)

MAX_FRAME = 4 * 1024 * 1024


class Frame:
    """One websocket data frame: ``text`` (str), ``binary`` (bytes), or ``text-bytes`` (a
    text frame whose payload is the given bytes, which need not be UTF-8)."""

    def __init__(self, kind: str, data: str | bytes) -> None:
        self.kind, self.data = kind, data

    def __repr__(self) -> str:
        text = self.data if isinstance(self.data, str) else \
            self.data.decode("utf-8", "backslashreplace")
        return f"<{self.kind} {short(text, 120)}>"


def message(obj: Mapping[str, Json]) -> Frame:
    return Frame("text", to_json(dict(obj)))


def _or_hostile(valid: st.SearchStrategy[Json]) -> st.SearchStrategy[Json]:
    return st.one_of(valid, valid, hostile_values())


def _numbers() -> st.SearchStrategy[Json]:
    return st.one_of(st.integers(0, 10**6), st.sampled_from(BIG_INTS),
                     st.sampled_from(ODD_NUMBERS))


def facts() -> st.SearchStrategy[Json]:
    """Host facts shaped as agents send them, any part of which may be hostile."""
    memory = st.fixed_dictionaries({"memTotal": _numbers(), "memAvailable": _numbers()})
    info = st.fixed_dictionaries({}, optional={
        "memoryInfo": _or_hostile(memory),
        "cpuInfo": _or_hostile(st.fixed_dictionaries({"count": _numbers()})),
        "diskInfo": _or_hostile(st.fixed_dictionaries({"mountPoints": _or_hostile(
            st.fixed_dictionaries({"/": _or_hostile(st.fixed_dictionaries(
                {"total": _numbers()}))}))})),
        "osInfo": _or_hostile(st.dictionaries(st.text(max_size=8), st.text(max_size=8),
                                              max_size=2)),
    })
    return st.fixed_dictionaries({"hostname": _or_hostile(st.text(min_size=1, max_size=20))},
                                 optional={
        "labels": _or_hostile(st.dictionaries(_or_hostile(st.text(max_size=8)),
                                              _or_hostile(st.text(max_size=8)), max_size=3)),
        "info": _or_hostile(info),
        "agentIp": _or_hostile(st.sampled_from(["10.0.0.5", "", "::1", "not an ip"])),
    })


def hellos() -> st.SearchStrategy[Frame]:
    return st.fixed_dictionaries({
        "type": st.just("hello"), "agentVersion": _or_hostile(st.text(max_size=10)),
        "protocol": _or_hostile(st.just(1)), "facts": _or_hostile(facts()),
    }).map(message)


def containers() -> st.SearchStrategy[Json]:
    """A container as an agent reports it (inventory, events)."""
    statuses = st.sampled_from(["created", "running", "exited", "removed", "paused", "bogus"])
    return st.fixed_dictionaries({"dockerId": _or_hostile(st.just("d" * 64))}, optional={
        "uuid": _or_hostile(st.uuids().map(str)), "name": _or_hostile(st.text(max_size=10)),
        "image": _or_hostile(st.just("busybox")), "status": _or_hostile(statuses),
        "exitCode": _or_hostile(st.integers(-1, 255)),
        "labels": _or_hostile(st.dictionaries(st.text(max_size=5), _or_hostile(st.text(
            max_size=5)), max_size=2)),
        "ports": _or_hostile(st.just([])), "mounts": _or_hostile(st.just([])),
        "startedAt": _or_hostile(st.just("2026-01-01T00:00:00Z")),
    })


def session_messages() -> st.SearchStrategy[Frame]:
    """What an agent may send after its hello, and what it may not."""
    ids = _or_hostile(st.uuids().map(str))
    shapes: list[st.SearchStrategy[dict[str, Json]]] = [
        st.fixed_dictionaries({"type": st.just("facts"), "changes": _or_hostile(facts())}),
        st.fixed_dictionaries({"type": st.just("containerEvent"),
                               "event": _or_hostile(st.sampled_from(["start", "die", "x"])),
                               "container": _or_hostile(containers()),
                               "time": _or_hostile(_numbers())}),
        st.fixed_dictionaries({"type": st.just("inventory"), "containers": _or_hostile(
            st.lists(containers(), max_size=3))}),
        st.fixed_dictionaries({"type": st.just("progress"), "requestId": ids,
                               "message": _or_hostile(st.text(max_size=10)),
                               "progress": _or_hostile(st.integers(0, 100))}),
        st.fixed_dictionaries({"type": st.just("reply"), "requestId": ids,
                               "data": _or_hostile(st.just({})),
                               "error": _or_hostile(st.fixed_dictionaries({
                                   "code": _or_hostile(st.just("NotFound")),
                                   "message": _or_hostile(st.text(max_size=10))}))}),
        st.fixed_dictionaries({"type": st.just("streamData"), "streamId": ids,
                               "data": _or_hostile(st.just("aGk="))}),
        st.fixed_dictionaries({"type": st.sampled_from(["hello", "welcome", "request",
                                                        "streamResize", "streamClose",
                                                        "mystery", ""])}),
    ]
    return st.one_of(*(shape.map(message) for shape in shapes))


RAW_FRAMES: tuple[Frame, ...] = (
    Frame("text", ""), Frame("text", "{"), Frame("text", "null"), Frame("text", "[]"),
    Frame("text", '{"type": 1}'), Frame("text", nested(100_000).text),
    Frame("text", nested(990).text), Frame("text-bytes", b'{"type": "\xed\xa0\x80"}'),
    Frame("text-bytes", b"\xff\xfe"), Frame("binary", b"\x00\x01"), Frame("binary", b""),
    Frame("text", '{"type":"hello","type":"facts"}'),
)


def raw_frames() -> st.SearchStrategy[Frame]:
    return st.sampled_from(RAW_FRAMES)


def hello_probes(good: Mapping[str, Json]) -> list[Frame]:
    """Hellos that are good but for one probe: in the hostname, a label, the memory, the
    agent's version and address, the protocol number."""
    def hello(**changes: Json) -> Frame:
        facts_ = {**good, **changes.pop("facts", {})}
        return message({"type": "hello", "agentVersion": "fuzz", "protocol": 1,
                        "facts": facts_, **changes})

    out = [hello(facts={"hostname": probe}) for probe in PROBES]
    out += [hello(facts={"labels": {"\ud800": "x"}}), hello(facts={"labels": {"k": "\ud800"}}),
            hello(facts={"agentIp": "\ud800"}), hello(agentVersion="\ud800"),
            hello(protocol=2**64), hello(protocol=Raw("1e400"))]
    out += [hello(facts={"info": {"memoryInfo": {"memTotal": n}}}) for n in ODD_NUMBERS]
    out += [hello(facts={"info": {"cpuInfo": {"count": 2**64}, "diskInfo": {"mountPoints": {
        "/": {"total": Raw("1e400")}}}}})]
    return [*out, *RAW_FRAMES]


def session_probes() -> list[Frame]:
    """Session messages that are well formed but for one probe."""
    out = [message({"type": "facts", "changes": {"hostname": p}}) for p in PROBES[:4]]
    out += [message({"type": "facts", "changes": {"info": {"memoryInfo": {"memTotal": n}}}})
            for n in ODD_NUMBERS]
    out += [message({"type": "facts", "changes": {"labels": {"\ud800": "\ud800"}}})]
    bad_container = {"dockerId": "e" * 64, "name": "\ud800", "image": "busybox",
                     "status": "running", "labels": {"\ud800": "x"}}
    out += [message({"type": "inventory", "containers": [bad_container]}),
            message({"type": "containerEvent", "event": "start", "container": bad_container,
                     "time": Raw("1e400")}),
            message({"type": "containerEvent", "event": "die", "time": Raw("NaN"),
                     "container": {"dockerId": "f" * 64, "exitCode": 2**64}}),
            message({"type": "progress", "requestId": "\ud800", "message": "x",
                     "progress": 2**64}),
            message({"type": "reply", "requestId": "r", "error": {"code": "\ud800",
                                                                  "message": "\ud800"}}),
            message({"type": "streamData", "streamId": "s", "data": "%%%"})]
    return [*out, *RAW_FRAMES]


def stream_frames() -> st.SearchStrategy[Frame]:
    """What an API client sends on a logs or exec stream: input, resizes, and garbage."""
    size = st.one_of(st.integers(0, 500), st.sampled_from(BIG_INTS),
                     st.sampled_from(ODD_NUMBERS), hostile_values())
    resize = st.fixed_dictionaries({"resize": _or_hostile(st.fixed_dictionaries(
        {"cols": size, "rows": size}))}).map(message)
    data = st.binary(max_size=64).map(lambda b: Frame("text", base64.b64encode(b).decode()))
    return st.one_of(data, st.binary(max_size=64).map(lambda b: Frame("binary", b)), resize,
                     st.text(max_size=20).map(lambda t: Frame("text", t)), raw_frames())


def stream_probes() -> list[Frame]:
    def resize(cols: Json, rows: Json = 24) -> Frame:
        return message({"resize": {"cols": cols, "rows": rows}})

    out = [resize(n) for n in (*ODD_NUMBERS, *BIG_INTS[-3:], -1, "80", None, [1])]
    out += [message({"resize": None}), message({"resize": [80, 24]}), Frame("text", "{"),
            Frame("text", "{" + "x" * 100), Frame("text", "%%%"), Frame("text", "aGk=\n"),
            Frame("text", "  {\"resize\": {\"cols\": 80, \"rows\": 24}}  ")]
    return [*out, *RAW_FRAMES]
