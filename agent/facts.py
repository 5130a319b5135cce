"""Host facts as the agent reports them: gathered off the event loop, diffed between reports."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from agent.host_facts import changed_sections, gather_facts
from agent.logs import log
from agent.runtime import ContainerRuntime
from agent.underlay import detect_agent_ip
from shared.errors import InstructionError


class FactsSource:
    """The host's facts, with ``agentIp``: the address other hosts reach this host at.

    ``agent_ip`` is the one asked for (``--agent-ip``, or kept from the registration). Without
    it, given ``server_url``, the address is detected (``detect``, by default
    :func:`agent.underlay.detect_agent_ip`) once, on the first gathering, which runs off the
    event loop and after the agent reached the server; without either, no ``agentIp`` is
    reported and the server records the address it sees.
    """

    def __init__(self, runtime: ContainerRuntime, labels: Mapping[str, str],
                 agent_ip: str | None, *, server_url: str | None = None,
                 detect: Callable[[str], str | None] = detect_agent_ip,
                 instructions: Iterable[str] = ()) -> None:
        self._runtime = runtime
        # What this agent carries out, so that a server newer than it sends nothing else.
        self._instructions = sorted(instructions)
        self._labels = dict(labels)
        self._agent_ip = agent_ip
        self._server_url = server_url
        self._detect = detect
        self._detect_lock = threading.Lock()
        self._detected: tuple[str | None] | None = None  # (address,) once detection ran
        self._last: dict[str, Any] | None = None
        self._runtime_warned = False

    def _address(self) -> str | None:
        if self._agent_ip or self._server_url is None:
            return self._agent_ip
        with self._detect_lock:  # gatherings may run in two threads at once
            if self._detected is None:
                self._detected = (self._detect(self._server_url),)
            return self._detected[0]

    def _gather(self) -> dict[str, Any]:
        try:
            version, info = self._runtime.version(), self._runtime.info()
            self._runtime_warned = False
        except InstructionError as exc:
            if not self._runtime_warned:
                log.warning("%s", exc)
                self._runtime_warned = True
            version, info = {}, {}
        facts = gather_facts(version, info, self._labels)
        agent_ip = self._address()
        if agent_ip:
            facts["agentIp"] = agent_ip
        if self._instructions:
            facts["instructions"] = list(self._instructions)
        return facts

    async def current(self) -> dict[str, Any]:
        """Fresh facts; they also become the base of the next ``changes``."""
        facts = await asyncio.to_thread(self._gather)
        self._last = facts
        return facts

    async def changes(self) -> dict[str, Any]:
        """The sections that changed since the last report (empty if none)."""
        previous = self._last
        facts = await asyncio.to_thread(self._gather)
        self._last = facts
        return changed_sections(previous or {}, facts)
