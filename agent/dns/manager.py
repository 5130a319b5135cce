"""The agent's one owner of the discovery DNS: keeps the table ``dns.apply`` sends and runs the
responder that answers from it.

The responder listens on :data:`~shared.discovery.RESOLVER_ADDRESS`, which the managed network
puts on its bridge (``agent.network.plan``): so the manager waits until the network is set up,
then binds, trying again every ``retry_interval`` seconds while binding fails (warning once).
Tables are accepted before that and kept: the responder answers from the latest as soon as it
listens, and keeps it when it is stopped and started again.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from agent.dns.resolve import Table
from agent.dns.server import DnsServer
from agent.logs import log
from shared.discovery import DnsApplied, DnsApply
from shared.errors import InstructionError

RETRY_INTERVAL = 1.0
"""Seconds between two attempts to bind the responder, or to find the network ready."""
READY_WAIT = 60.0
"""Seconds of one wait for the managed network, before waiting again."""


class DnsService(Protocol):
    """What instruction handlers ask of the host's discovery DNS."""

    async def apply(self, request: DnsApply) -> DnsApplied: ...


class NoDns:
    """The discovery DNS of an agent that runs none (tests that do not need one)."""

    async def apply(self, request: DnsApply) -> DnsApplied:
        raise InstructionError("this agent does not run the service discovery DNS")


class Readiness(Protocol):
    """What the manager needs of the managed network (``NetworkManager``)."""

    async def wait_ready(self, timeout: float) -> None: ...


class Responder(Protocol):
    """What the manager needs of the responder (``DnsServer``)."""

    host: str
    port: int

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def apply(self, table: Table) -> None: ...


class DnsManager:
    """The host's discovery DNS; see the module docstring."""

    def __init__(self, network: Readiness, responder: Responder | None = None, *,
                 retry_interval: float = RETRY_INTERVAL) -> None:
        self._network = network
        self._responder = responder if responder is not None else DnsServer()
        self._retry = retry_interval
        self._table: Table | None = None
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    @property
    def version(self) -> str | None:
        """The version of the table in effect, None before the first."""
        return None if self._table is None else self._table.version

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    async def wait_listening(self) -> None:
        await self._listening.wait()

    async def apply(self, request: DnsApply) -> DnsApplied:
        """Answer from ``request``'s table from now on (at once if the responder listens, else
        from when it does); the version in effect."""
        table = Table.of(request)
        previous, self._table = self._table, table
        self._responder.apply(table)
        if previous is None or previous.version != table.version:
            log.info("dns: version %s in effect (%d names, %d clients)%s", table.version,
                     len(table.names), len(table.clients),
                     "" if self.listening else "; answering once the responder listens")
        return DnsApplied(request.version)

    def start(self) -> None:
        """Start the responder once the managed network is set up (in the background)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="dns-responder")

    async def stop(self) -> None:
        """Stop the responder; the table is kept for the next start."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._listening.clear()
        await self._responder.stop()

    async def _run(self) -> None:
        while True:
            try:
                await self._network.wait_ready(READY_WAIT)
                break
            except InstructionError:
                await asyncio.sleep(self._retry)  # NoNetwork refuses at once
        warned = False
        where = f"{self._responder.host} port {self._responder.port}"
        while True:
            try:
                await self._responder.start()
                break
            except OSError as exc:
                if not warned:
                    log.warning("dns: cannot listen on %s yet (%s); trying again every %g s",
                                where, exc.strerror or exc, self._retry)
                    warned = True
            await asyncio.sleep(self._retry)
        self._listening.set()
        log.info("dns: answering on %s (UDP and TCP)", f"{self._responder.host} port "
                 f"{self._responder.port}")
