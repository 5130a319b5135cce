"""The agent's load balancers: one HAProxy master-worker per balancer that ``lb.apply`` lists,
each in its own directory ``<base>/<uuid>/``, kept at the balancer's config.

For each balancer an apply renders its config (``shared.haproxy_config``) and, when the text
changed, writes its certificates, writes the config beside the running one and has HAProxy
check it (``haproxy -c``). A config HAProxy refuses leaves the running one serving, and the
balancer's state is ``error`` with HAProxy's message. Otherwise:

- a balancer without a live master gets one;
- a change of servers only goes through the admin socket (``agent.lb.runtime``), the file
  written too so that the next reload agrees; a removed server is drained at once and
  deleted after ``drain_seconds``;
- any other change reloads through the master CLI, once the servers' states are saved to the
  state file, and waits until the new worker runs; a failed reload puts the previous file
  back (the old worker keeps serving) and reports the error.

Balancers no longer listed are soft-stopped (their listeners close, open connections finish
for up to ``stop_grace`` seconds) and their directories removed. Stopping the agent leaves
every HAProxy serving; the next agent adopts each master whose pid file names a live process
that answers on its master socket (:meth:`LbManager.start`). A master that exits on its own
is reported in ``error`` and started again after a growing delay.

Each balancer's state is reported (``LbResult``, through ``report``) whenever it changes, and
every state once on each new session (:meth:`LbManager.reconnected`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.lb import disk, runtime
from agent.lb.process import Files, HaproxyError, Master, check_config, command
from agent.logs import log
from agent.state import write_private
from shared.haproxy_config import Paths, render
from shared.lb import Balancer, LbApplied, LbApply
from shared.lb_report import LbResult, LbState, trim_message

Report = Callable[[list[LbResult]], Awaitable[None]]

DRAIN_SECONDS = 2.0
"""How long a server removed at runtime gets to finish its requests before it is deleted."""
STOP_GRACE = 10.0
"""How long a stopped balancer's open connections get before its processes are killed."""
START_TIMEOUT = 10.0
RELOAD_TIMEOUT = 40.0  # longer than the config's hard-stop-after: the master waits for no one
RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass(eq=False)
class _Entry:
    """One balancer on this host: what it should run and what its HAProxy runs."""

    uuid: str
    files: Files
    desired: Balancer | None = None
    running: Balancer | None = None  # what HAProxy was last given (None: not known)
    text: str | None = None          # the config text HAProxy runs
    master: Master | None = None
    state: LbState = LbState.STARTING
    message: str | None = None
    reported: LbResult | None = None
    failures: int = 0
    watcher: asyncio.Task[None] | None = None
    removals: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def result(self) -> LbResult:
        return LbResult(self.uuid, self.state,
                        None if self.running is None else self.running.config_version,
                        self.message, None if self.master is None else self.master.pid)


class LbManager:
    """The host's load balancers; see the module docstring."""

    def __init__(self, base_dir: Path, report: Report, *, haproxy: str = "haproxy",
                 drain_seconds: float = DRAIN_SECONDS, stop_grace: float = STOP_GRACE,
                 start_timeout: float = START_TIMEOUT,
                 reload_timeout: float = RELOAD_TIMEOUT) -> None:
        self._base = base_dir
        self._report = report
        self._haproxy = haproxy
        self._drain = drain_seconds
        self._stop_grace = stop_grace
        self._start_timeout = start_timeout
        self._reload_timeout = reload_timeout
        self._entries: dict[str, _Entry] = {}
        self._lock = asyncio.Lock()
        self._started = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._version: str | None = None

    def files(self, uuid: str) -> Files:
        """Where balancer ``uuid``'s files and sockets are."""
        return disk.files(self._base, self._base / uuid)

    @property
    def version(self) -> str | None:
        """The version of the balancers applied last, None before the first apply."""
        return self._version

    def results(self) -> list[LbResult]:
        return [entry.result() for entry in self._entries.values()]

    async def start(self) -> None:
        """Adopt the masters a previous agent left running (idempotent)."""
        async with self._lock:
            await self._adopt_all()

    async def apply(self, request: LbApply) -> LbApplied:
        """Run exactly ``request``'s balancers (idempotent: the same list changes nothing)."""
        async with self._lock:
            await self._adopt_all()
            wanted = {balancer.uuid for balancer in request.balancers}
            for uuid in [u for u in self._entries if u not in wanted]:
                await self._remove(self._entries[uuid])
            await self._remove_strays(wanted)
            for balancer in request.balancers:
                entry = self._entries.get(balancer.uuid)
                if entry is None:
                    entry = self._entries[balancer.uuid] = _Entry(
                        balancer.uuid, disk.files(self._base, self._base / balancer.uuid))
                entry.desired = balancer
                await self._reconcile(entry)
            self._version = request.version
            log.info("lb: version %s in effect: %d balancer(s), %d in error",
                     request.version or "-", len(self._entries),
                     sum(e.state is LbState.ERROR for e in self._entries.values()))
        return LbApplied(request.version)

    def reconnected(self) -> None:
        """A new session: its server knows nothing yet, so report every state once."""
        entries = list(self._entries.values())
        for entry in entries:
            entry.reported = None
        self._spawn(self._send([entry.result() for entry in entries]))

    async def stop(self) -> None:
        """Stop watching (the agent is leaving): every HAProxy goes on serving."""
        tasks = list(self._tasks)
        for entry in self._entries.values():
            tasks += [t for t in (entry.watcher, *entry.removals.values()) if t is not None]
            entry.watcher = None
            entry.removals.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def stop_all(self) -> None:
        """Stop every balancer and remove its directory (the host leaves Corral)."""
        await self.apply(LbApply())

    # --- one balancer -------------------------------------------------------------------

    async def _reconcile(self, entry: _Entry) -> None:
        desired = entry.desired
        assert desired is not None
        paths = disk.paths(entry.files, desired)
        try:
            text = render(desired, paths)
        except ValueError as exc:  # its custom text is not HAProxy sections
            await self._set(entry, LbState.ERROR, trim_message(f"customConfig {exc}"))
            return
        master = entry.master
        if master is not None and master.alive() and entry.text == text:
            if entry.running != desired:  # the same text: at most its version changed
                entry.running = desired
                disk.save_applied(entry.files, desired)
            await self._set(entry, LbState.RUNNING, None)
            return
        entry.files.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        disk.write_certificates(desired, paths)
        staged = entry.files.directory / "haproxy.cfg.new"
        write_private(staged, text)
        try:
            await check_config(self._haproxy, staged)
        except HaproxyError as exc:
            staged.unlink(missing_ok=True)
            log.warning("lb: %s (%s): HAProxy refused config %s: %s", desired.name,
                        desired.uuid, desired.config_version, exc)
            await self._set(entry, LbState.ERROR, str(exc))
            return
        try:
            if master is None or not master.alive():
                await self._start(entry, staged)
            elif not await self._change_servers(entry, staged, desired, paths):
                await self._reload(entry, staged)
        except HaproxyError as exc:
            log.warning("lb: %s (%s): %s", desired.name, desired.uuid, exc)
            await self._set(entry, LbState.ERROR, str(exc))
            return
        entry.text, entry.running, entry.failures = text, desired, 0
        disk.save_applied(entry.files, desired)
        disk.remove_old_certificates(entry.files, paths)
        await self._set(entry, LbState.RUNNING, None)

    async def _start(self, entry: _Entry, staged: Path) -> None:
        files = entry.files
        os.replace(staged, files.config)
        files.pid.unlink(missing_ok=True)
        await self._set(entry, LbState.STARTING, None)
        try:
            master = Master.spawn(self._haproxy, files)
        except OSError as exc:
            raise HaproxyError(f"cannot start {self._haproxy}: {exc.strerror or exc}") from exc
        entry.master = master
        try:
            await master.ready(self._start_timeout)
        except HaproxyError:
            entry.master = None
            await master.stop(0)
            raise
        self._watch(entry, master)
        log.info("lb: %s (%s) started, master pid %d", entry.desired and entry.desired.name,
                 entry.uuid, master.pid)

    async def _change_servers(self, entry: _Entry, staged: Path, desired: Balancer,
                              paths: Paths) -> bool:
        """Make a servers-only change through the admin socket; False when it needs a
        reload (anything else changed, or the socket refused a command)."""
        running = entry.running
        if running is None or entry.text is None:
            return False
        change = runtime.plan(running, desired, paths)
        slots = {f"{b.name}/{s.name}" for b in desired.backends for s in b.servers}
        if change is None or slots & set(entry.removals):
            return False  # a server being deleted comes back: only a reload is sure
        socket = entry.files.admin_socket
        for line in change.commands + tuple(
                c for slot in change.removals for c in runtime.drain_commands(slot)):
            answer = await command(socket, line)
            if not runtime.succeeded(answer):
                log.warning("lb: %s: %r answered %r; reloading instead", desired.name, line,
                            answer.strip()[:200])
                return False
        os.replace(staged, entry.files.config)  # so that the next reload agrees
        for slot in change.removals:
            entry.removals[slot] = asyncio.create_task(self._delete_later(entry, slot))
        log.info("lb: %s (%s) config %s applied without a reload (%d command(s), %d server(s) "
                 "draining)", desired.name, desired.uuid, desired.config_version,
                 len(change.commands), len(change.removals))
        return True

    async def _delete_later(self, entry: _Entry, slot: str) -> None:
        try:
            await asyncio.sleep(self._drain)
            for line in runtime.delete_commands(slot):
                answer = await command(entry.files.admin_socket, line)
                if not runtime.succeeded(answer):
                    # Still in maintenance: it receives nothing, and the next reload drops it.
                    log.debug("lb: %r answered %r", line, answer.strip()[:200])
                    break
        except HaproxyError as exc:
            log.debug("lb: deleting %s: %s", slot, exc)
        finally:
            if entry.removals.get(slot) is asyncio.current_task():
                del entry.removals[slot]

    async def _reload(self, entry: _Entry, staged: Path) -> None:
        master = entry.master
        assert master is not None
        files = entry.files
        with contextlib.suppress(HaproxyError):  # without it checks start over: no harm
            state = await command(files.admin_socket, "show servers state")
            if state.startswith("1\n"):
                write_private(files.state, state)
        self._cancel_removals(entry)
        previous = files.config.read_text() if files.config.exists() else None
        os.replace(staged, files.config)
        try:
            await master.reload(self._reload_timeout)
        except HaproxyError:
            if previous is not None:
                write_private(files.config, previous)
            raise
        desired = entry.desired
        assert desired is not None
        log.info("lb: %s (%s) reloaded with config %s", desired.name, entry.uuid,
                 desired.config_version)

    async def _remove(self, entry: _Entry) -> None:
        self._cancel_removals(entry)
        master, entry.master = entry.master, None
        if entry.watcher is not None:
            entry.watcher.cancel()
            entry.watcher = None
        if master is not None:
            await master.stop(self._stop_grace)
        await asyncio.to_thread(shutil.rmtree, entry.files.directory, True)
        if entry.files.sockets is not None:
            await asyncio.to_thread(shutil.rmtree, entry.files.sockets, True)
            with contextlib.suppress(OSError):  # the agent's own, once it holds none
                entry.files.sockets.parent.rmdir()
        entry.state, entry.message = LbState.STOPPED, None
        log.info("lb: %s stopped and removed", entry.uuid)
        await self._send([entry.result()])
        del self._entries[entry.uuid]

    async def _remove_strays(self, wanted: set[str]) -> None:
        """Directories of balancers this agent does not know (left by a crash): stop what
        runs there and remove them."""
        if not self._base.is_dir():
            return
        for directory in sorted(self._base.iterdir()):
            if directory.name in wanted or directory.name in self._entries or \
                    not directory.is_dir():
                continue
            files = disk.files(self._base, directory)
            master = await Master.adopt(files)
            if master is not None:
                await master.stop(self._stop_grace)
            await asyncio.to_thread(shutil.rmtree, directory, True)
            await asyncio.to_thread(shutil.rmtree, files.sockets or directory, True)

    def _cancel_removals(self, entry: _Entry) -> None:
        for task in entry.removals.values():
            task.cancel()
        entry.removals.clear()

    # --- adoption and watching ----------------------------------------------------------

    async def _adopt_all(self) -> None:
        if self._started:
            return
        self._started = True
        if not self._base.is_dir():
            return
        for directory in sorted(self._base.iterdir()):
            if not directory.is_dir():
                continue
            files = disk.files(self._base, directory)
            master = await Master.adopt(files)
            if master is None:
                continue
            entry = _Entry(directory.name, files, master=master, state=LbState.RUNNING)
            entry.running = disk.load_applied(files)
            with contextlib.suppress(OSError):
                entry.text = files.config.read_text()
            self._entries[entry.uuid] = entry
            self._watch(entry, master)
            log.info("lb: adopted the running HAProxy of %s (master pid %d)", entry.uuid,
                     master.pid)

    def _watch(self, entry: _Entry, master: Master) -> None:
        if entry.watcher is not None:
            entry.watcher.cancel()
        entry.watcher = asyncio.create_task(self._watch_master(entry, master),
                                            name=f"lb-{entry.uuid}")

    async def _watch_master(self, entry: _Entry, master: Master) -> None:
        await master.wait()
        if entry.master is not master:
            return  # stopped on purpose
        entry.master, entry.watcher = None, None
        message = trim_message("haproxy exited unexpectedly; " + master.log_tail())
        log.warning("lb: %s (%s): %s", entry.desired and entry.desired.name, entry.uuid,
                    message)
        await self._set(entry, LbState.ERROR, message)
        delay = RESTART_DELAYS[min(entry.failures, len(RESTART_DELAYS) - 1)]
        entry.failures += 1
        self._spawn(self._restart_later(entry, delay))

    async def _restart_later(self, entry: _Entry, delay: float) -> None:
        await asyncio.sleep(delay)
        async with self._lock:
            if self._entries.get(entry.uuid) is entry and entry.master is None and \
                    entry.desired is not None:
                entry.text = None
                await self._reconcile(entry)

    # --- reports ------------------------------------------------------------------------

    async def _set(self, entry: _Entry, state: LbState, message: str | None) -> None:
        entry.state, entry.message = state, message
        result = entry.result()
        if result != entry.reported:
            await self._send([result])

    async def _send(self, results: list[LbResult]) -> None:
        if not results:
            return
        for result in results:
            entry = self._entries.get(result.uuid)
            if entry is not None:
                entry.reported = result
        try:
            await self._report(results)
        except Exception as exc:  # the session is down: the next one gets every state
            log.warning("lb: could not report %d result(s): %s", len(results),
                        str(exc) or type(exc).__name__)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

