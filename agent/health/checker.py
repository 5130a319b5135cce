"""The agent's health checker: runs the checks ``health.apply`` lists and reports each
container's health state as it changes.

Each check has a task that probes at the check's interval, its first probe at a random point of
the first interval so that a thousand checks applied at once do not all fire together; at most
``max_concurrent`` probes run at a time. Each outcome goes through the container's
:class:`~agent.health.machine.Tracker`, and only what changes a state is reported: the first
``initializing`` of each check, then its transitions. Results are gathered for ``batch_delay``
seconds and sent together (at most ``MAX_HEALTH_RESULTS`` per call); a container whose state
changed twice within a batch is reported in its latest state only, as the server keeps no more.

An apply replaces the whole set: a check whose parameters are unchanged keeps its state and its
task, one that says only that its container restarted (a new ``startedAt``) keeps its task and
becomes ``reinitializing``, one whose probe changed starts over as a new check, and checks no
longer listed stop. A report that cannot be sent is dropped: after a reconnection, call
:meth:`HealthChecker.reconnected` and the next apply (the server sends one on every connection)
reports every state once, so the server's view is whole again.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from agent.health.machine import Tracker, same_probe
from agent.health.probe import ProbeResult, probe
from agent.logs import log
from shared.health import MAX_MESSAGE, HealthApplied, HealthApply, HealthCheck, HealthResult
from shared.protocol import MAX_HEALTH_RESULTS

Report = Callable[[list[HealthResult]], Awaitable[None]]
Probe = Callable[[HealthCheck], Awaitable[ProbeResult]]

MAX_CONCURRENT = 64
"""Probes running at once: enough for thousands of checks at seconds' intervals, few enough
not to flood the host with connections."""
BATCH_DELAY = 0.1
"""Seconds results wait to be sent together."""


def _first_delay(interval: float) -> float:
    return random.uniform(0, interval)


@dataclass(eq=False)
class _Check:
    tracker: Tracker
    task: asyncio.Task[None] | None = None


class HealthChecker:
    """The checks of this host; see the module docstring."""

    def __init__(self, report: Report, *, clock: Callable[[], float] = time.time,
                 probe: Probe = probe, max_concurrent: int = MAX_CONCURRENT,
                 batch_delay: float = BATCH_DELAY,
                 first_delay: Callable[[float], float] = _first_delay) -> None:
        self._report = report
        self._clock = clock  # wall clock: startedAt and reported times are epoch seconds
        self._probe = probe
        self._slots = asyncio.Semaphore(max_concurrent)
        self._batch_delay = batch_delay
        self._first_delay = first_delay
        self._checks: dict[str, _Check] = {}
        self._pending: dict[str, HealthResult] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._running = False
        self._resync = False
        self._version: str | None = None

    @property
    def version(self) -> str | None:
        """The version of the checks applied last, None before the first apply."""
        return self._version

    async def apply(self, request: HealthApply) -> HealthApplied:
        """Run exactly ``request``'s checks from now on (idempotent: applying the same list
        again changes nothing)."""
        now = self._clock()
        wanted = {check.uuid for check in request.checks}
        stopped = [self._remove(uuid) for uuid in list(self._checks) if uuid not in wanted]
        started = changed = 0
        for check in request.checks:
            entry = self._checks.get(check.uuid)
            if entry is not None and entry.tracker.check == check:
                continue
            if entry is not None and same_probe(entry.tracker.check, check):
                result = entry.tracker.restarted(check, now)
                if result is not None:
                    self._queue(result)
                continue
            if entry is not None:
                stopped.append(self._remove(check.uuid))
                changed += 1
            else:
                started += 1
            self._add(check, now)
        self._version = request.version
        log.info("health: version %s in effect: %d check(s), %d new, %d changed, %d stopped",
                 request.version or "-", len(self._checks), started, changed,
                 len(stopped) - changed)
        if self._resync:
            self._resync = False
            self.report_all()
        await _finish(task for task in stopped if task is not None)
        return HealthApplied(request.version)

    def snapshot(self) -> list[HealthResult]:
        """The current state of every check."""
        return [entry.tracker.result() for entry in self._checks.values()]

    def report_all(self) -> None:
        """Report the current state of every check once (in the next batches)."""
        for entry in self._checks.values():
            self._queue(entry.tracker.result())

    def reconnected(self) -> None:
        """The connection to the server was lost and is back: reports may have been lost, so
        the next apply reports every state once."""
        self._resync = True

    def start(self) -> None:
        """Start probing (the checks applied so far and those applied later)."""
        if self._running:
            return
        self._running = True
        for entry in self._checks.values():
            self._spawn(entry)
        if self._pending:
            self._schedule_flush()

    async def stop(self) -> None:
        """Stop probing and reporting (results not yet sent are dropped: the agent is
        leaving); the checks and their states are kept for a later start."""
        self._running = False
        tasks = [entry.task for entry in self._checks.values()] + [self._flusher]
        for entry in self._checks.values():
            entry.task = None
        self._flusher = None
        self._pending.clear()
        await _finish(task for task in tasks if task is not None)

    # --- checks -------------------------------------------------------------------------

    def _add(self, check: HealthCheck, now: float) -> None:
        entry = _Check(Tracker.new(check, now))
        self._checks[check.uuid] = entry
        self._queue(entry.tracker.result())
        if self._running:
            self._spawn(entry)

    def _remove(self, uuid: str) -> asyncio.Task[None] | None:
        """Forget a check; its task, cancelled (the caller waits for it)."""
        entry = self._checks.pop(uuid)
        self._pending.pop(uuid, None)  # the server no longer asks about it
        task, entry.task = entry.task, None
        if task is not None:
            task.cancel()
        return task

    def _spawn(self, entry: _Check) -> None:
        entry.task = asyncio.create_task(self._run(entry),
                                         name=f"health-{entry.tracker.check.uuid}")

    async def _run(self, entry: _Check) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self._first_delay(entry.tracker.check.interval_ms / 1000))
        while True:
            began = loop.time()
            check = entry.tracker.check
            try:
                async with self._slots:
                    outcome = await self._probe(check)
            except Exception:  # a bug, not the container's failure: say so, keep checking
                log.exception("health: probing container %s failed unexpectedly", check.uuid)
            else:
                if self._checks.get(check.uuid) is entry:
                    message = outcome.message
                    if message is not None:  # reports stay small and printable
                        message = message.encode("ascii", "replace").decode()[:MAX_MESSAGE]
                    result = entry.tracker.observe(outcome.ok, message, self._clock())
                    if result is not None:
                        self._queue(result)
            elapsed = loop.time() - began
            await asyncio.sleep(max(0.0, check.interval_ms / 1000 - elapsed))

    # --- reports ------------------------------------------------------------------------

    def _queue(self, result: HealthResult) -> None:
        self._pending.pop(result.uuid, None)  # the latest state goes last, once
        self._pending[result.uuid] = result
        if self._running:
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="health-report")

    async def _flush(self) -> None:
        while self._pending:
            await asyncio.sleep(self._batch_delay)
            results = list(self._pending.values())
            self._pending.clear()
            for i in range(0, len(results), MAX_HEALTH_RESULTS):
                chunk = results[i:i + MAX_HEALTH_RESULTS]
                try:
                    await self._report(chunk)
                except Exception as exc:  # the connection is down: the resync makes up for it
                    log.warning("health: could not report %d result(s): %s", len(chunk),
                                str(exc) or type(exc).__name__)


async def _finish(tasks: Iterable[asyncio.Task[None]]) -> None:
    """Wait for cancelled tasks to end (a probe closes its connection on the way out)."""
    pending = list(tasks)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
