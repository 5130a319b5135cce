"""What an agent reports of its load balancers (pure): each balancer's state on its host, in
``lbReport`` messages (``shared.protocol.LbReport``), on every change and once a session."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Self

from shared.fields import Fields, JsonObject, Refuse, protocol_error

MAX_MESSAGE = 1000  # a result's message: HAProxy's own, trimmed
MAX_VERSION = 64
# A balancer instance's record uuid: a uuid4 in practice; anything printable and short goes.
UUID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class LbState(StrEnum):
    """A balancer's state on its host."""

    STARTING = "starting"
    RUNNING = "running"
    ERROR = "error"      # HAProxy refused the config or could not start: ``message`` says why
    STOPPED = "stopped"  # no longer listed: its processes are gone


LB_STATES = tuple(state.value for state in LbState)


@dataclass(frozen=True)
class LbResult:
    """One balancer's state on its host: the ``config_version`` it runs (None before it
    runs any), HAProxy's ``message`` when in error, and its master's ``pid``."""

    uuid: str
    state: LbState
    config_version: str | None = None
    message: str | None = None
    pid: int | None = None

    @classmethod
    def parse(cls, obj: object, where: str = "a load balancer result",
              refuse: Refuse = protocol_error) -> Self:
        return cls.read(Fields(obj, where, refuse))

    @classmethod
    def read(cls, f: Fields) -> Self:
        uuid = f.text("uuid")
        if not UUID.fullmatch(uuid):
            raise f.refuse(f"{f.where}.uuid must be at most 64 letters, digits or ._:-")
        state = f.text("state")
        if state not in LB_STATES:
            raise f.refuse(f"{f.where}.state must be one of {', '.join(LB_STATES)}")
        version = f.opt_text("configVersion")
        if version is not None and len(version) > MAX_VERSION:
            raise f.refuse(f"{f.where}.configVersion must be at most {MAX_VERSION} characters")
        message = f.opt_text("message")
        if message is not None and len(message) > MAX_MESSAGE:
            raise f.refuse(f"{f.where}.message must be at most {MAX_MESSAGE} characters")
        pid = f.opt_integer("pid")
        if pid is not None and pid <= 0:
            raise f.refuse(f"{f.where}.pid must be a positive integer")
        return cls(uuid, LbState(state), version, message, pid)

    def dump(self) -> JsonObject:
        return {"uuid": self.uuid, "state": str(self.state),
                "configVersion": self.config_version, "message": self.message,
                "pid": self.pid}


_ALERT = re.compile(r"^\[ALERT\]\s*(\(\d+\))?\s*:\s*(config\s*:\s*)?")
# The lines HAProxy ends a refusal with: they say nothing the alerts before them do not.
_SUMMARY = ("Error(s) found in configuration file", "Fatal errors found in configuration")


def trim_message(text: str) -> str:
    """HAProxy's output as a result's message: its alerts only when there are any, without
    their prefixes and the closing summary, printable, bounded."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    alerts = [_ALERT.sub("", line) for line in lines if line.startswith("[ALERT]")]
    alerts = [line for line in alerts if not line.startswith(_SUMMARY)] or alerts or lines
    joined = "; ".join(alerts).encode("ascii", "replace").decode()
    return joined if len(joined) <= MAX_MESSAGE else joined[:MAX_MESSAGE - 3] + "..."
