"""Host facts as the agent reports them: gathered off the event loop, diffed between reports."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from agent.host_facts import changed_sections, gather_facts
from agent.logs import log
from agent.runtime import ContainerRuntime
from shared.errors import InstructionError


class FactsSource:
    def __init__(self, runtime: ContainerRuntime, labels: Mapping[str, str],
                 agent_ip: str | None) -> None:
        self._runtime = runtime
        self._labels = dict(labels)
        self._agent_ip = agent_ip
        self._last: dict[str, Any] | None = None
        self._runtime_warned = False

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
        if self._agent_ip:
            facts["agentIp"] = self._agent_ip
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
