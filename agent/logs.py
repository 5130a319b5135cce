"""The agent's logger: every line names the host the agent serves, once it knows it.

Level policy (docs/protocol.md and the house style): DEBUG for instruction traffic (each
message sent and received, each instruction's start and end), INFO for lifecycle (registered,
connected, disconnected, stopping), WARNING for degraded states (the engine or the server
unreachable, an instruction timed out, a stream overrun), ERROR for bugs (with tracebacks).

The host id comes from the credentials or the registration, and is confirmed by each
``welcome``; :func:`set_host` records it. Every agent module logs through :data:`log`.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

LOGGER_NAME = "corral.agent"


class HostAdapter(logging.LoggerAdapter[logging.Logger]):
    """Prefixes each message with ``[host <id>]`` and puts ``host_id`` on the record (for
    handlers and filters that want it as a field)."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logger, {})
        self.host_id: str | None = None

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[
            str, Any]]:
        kwargs["extra"] = {**(kwargs.get("extra") or {}), "host_id": self.host_id}
        if self.host_id is None:
            return msg, kwargs
        return f"[host {self.host_id}] {msg}", kwargs


log = HostAdapter(logging.getLogger(LOGGER_NAME))


def set_host(host_id: str | None) -> None:
    """From now on, every agent log line names ``host_id`` (None: no host yet)."""
    log.host_id = host_id
