"""Instruction handlers, by name: the one table the dispatcher looks in."""

from __future__ import annotations

from collections.abc import Mapping

from agent.dispatcher import Handler
from agent.handlers import host

HANDLERS: Mapping[str, Handler] = {
    "host.inspect": host.inspect,
}
