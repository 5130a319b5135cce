"""The one runner of every type's operations.

A resource in a transitional state (a step's ``transitional``, with ``transitioning`` yes) has an
operation under way; the runner carries it out: one at a time per resource, claimed in the
store (owner and expiry, renewed while it runs) so that a second server process never runs the
same operation, and resumed after a restart from the recorded state alone. The operation says
where the resource ended up; the runner records it, or the step's error state with the
operation's message. An operation that cannot reach its host waits, transitioning, until the
host returns (``resume``), or until another process takes it up.

Every write the runner makes is the system's: the request that asked for the step was logged
as its caller's when it entered the transitional state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.api.types import entered
from server.caller import Caller
from server.lifecycle import Lifecycle, Step
from server.store import Condition, Query, Record, Transaction
from shared.errors import HostNotConnected, InstructionError

if TYPE_CHECKING:
    from server.services import Services

log = logging.getLogger(__name__)

CLAIM_TTL_MS = 60_000
HEARTBEAT_S = 20.0
SWEEP_S = 30.0


@dataclass(frozen=True)
class Outcome:
    """Where an operation left its resource: ``state`` (None: the step's target) and fields
    of its data map to record with it."""

    state: str | None = None
    data: Mapping[str, Any] | None = None


Operation = Callable[[Caller, Record], Awaitable[Outcome]]


@dataclass(frozen=True)
class _Table:
    lifecycle: Lifecycle
    operations: Mapping[str, Operation]


def server_owner(data_dir: Path) -> str:
    """This server's name in claims, kept in its data dir: a server that restarts takes back
    the claims it held at once, while other servers wait for them to expire."""
    path = data_dir / "server.id"
    try:
        found = path.read_text().strip()
    except FileNotFoundError:
        found = ""
    if not found:
        found = f"{socket.gethostname()}:{uuid.uuid4().hex[:12]}"
        path.write_text(found + "\n")
    return found


class Runner:
    def __init__(self, services: Services, owner: str) -> None:
        self._services = services
        self.owner = owner
        self._tables: dict[str, _Table] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._waiting: dict[int, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._stopping = False
        # Records whose claim was taken with the write that asked for the step, and when.
        self._claimed: dict[int, float] = {}

    def register(self, type_id: str, lifecycle: Lifecycle,
                 operations: Mapping[str, Operation]) -> None:
        """The operations of ``type_id``, by the names its lifecycle's steps give."""
        named = {row.operation for row in lifecycle.steps if row.operation}
        if named != set(operations):
            raise ValueError(f"{type_id}: operations {sorted(operations)} do not match the "
                             f"lifecycle's {sorted(named)}")
        self._tables[type_id] = _Table(lifecycle, operations)

    # --- scheduling ---------------------------------------------------------------------

    async def claim_in(self, tx: Transaction, record_id: int, operation: str) -> bool:
        """Claim ``record_id``'s operation in the transaction that asks for it (saving the
        runner a write of its own); after it commits, ``submit(record_id, claimed=...)``
        with what this returned (False: another server holds the claim)."""
        return await tx.claim(record_id, self.owner, operation, CLAIM_TTL_MS)

    def submit(self, record_id: int, *, claimed: bool = False) -> None:
        """Carry out the operation ``record_id``'s state says is under way (if any)."""
        if self._stopping:
            return
        if claimed:
            self._claimed[record_id] = time.monotonic()
        task = asyncio.create_task(self._run(record_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def resume(self, host_id: int | None = None) -> None:
        """Carry on every unfinished operation (of one host's resources, or everywhere).

        An operation on a host whose agent is not connected here is left alone: only the
        server holding a host's session can instruct it, and its reconnection resumes the
        host's operations (``resume(host_id)``)."""
        conditions = [Condition("transitioning", "eq", "yes")]
        if host_id is not None:
            conditions.append(Condition("hostId", "eq", host_id, "int"))
        hub = self._services.hub
        offset = 0
        while True:
            page = await self._services.store.list(Query(
                types=list(self._tables), conditions=conditions, limit=1000, offset=offset))
            for record in page:
                on = record.data.get("hostId")
                if isinstance(on, int) and not hub.is_live(on):
                    continue
                if record.id not in self._locks:
                    self.submit(record.id)
            if len(page) < 1000:
                return
            offset += 1000

    def start(self) -> None:
        """Look for unfinished operations now and then: those another process gave up."""
        self._sweeper = asyncio.create_task(self._sweep())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                await self.resume()
            except Exception:
                log.exception("could not look for unfinished operations")

    async def stop(self) -> None:
        self._stopping = True
        tasks = [*self._tasks, *([self._sweeper] if self._sweeper else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def idle(self) -> None:
        """Wait until no operation runs (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # --- running ------------------------------------------------------------------------

    async def _run(self, record_id: int) -> None:
        lock = self._locks.setdefault(record_id, asyncio.Lock())
        self._waiting[record_id] = self._waiting.get(record_id, 0) + 1
        try:
            async with lock:
                await self._operate(record_id)
        finally:
            self._waiting[record_id] -= 1
            if not self._waiting[record_id]:
                del self._waiting[record_id], self._locks[record_id]

    async def _operate(self, record_id: int) -> None:
        store = self._services.store
        record = await store.get(record_id)
        if record is None or record.transitioning != "yes":
            return
        table = self._tables.get(record.type)
        row = table.lifecycle.running(record.state) if table is not None else None
        if table is None or row is None or row.operation is None:
            return
        claimed_at = self._claimed.pop(record.id, None)
        fresh = claimed_at is not None and \
            time.monotonic() - claimed_at < CLAIM_TTL_MS / 2000
        if not fresh and not await store.claim(record.id, self.owner, row.operation,
                                               CLAIM_TTL_MS):
            log.debug("%s %s: %s is claimed by another server", record.type, record.id,
                      row.operation)
            return
        heartbeat = asyncio.create_task(self._heartbeat(record.id, row.operation))
        released = False
        try:
            released = await self._carry_out(table.operations[row.operation], record, row)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            if not released:
                with contextlib.suppress(Exception):
                    await store.release(record.id, self.owner)

    async def _heartbeat(self, record_id: int, operation: str) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            with contextlib.suppress(Exception):
                await self._services.store.claim(record_id, self.owner, operation,
                                                 CLAIM_TTL_MS)

    async def _carry_out(self, operation: Operation, record: Record, row: Step) -> bool:
        """Run the operation and record its outcome; whether the claim went with it."""
        caller = Caller.system(self._services)
        try:
            outcome = await operation(caller, record)
        except HostNotConnected as exc:
            # Resumed when the host's agent comes back (see resume()).
            message = f"waiting for the host: {exc}"
            if record.transitioning_message == message:
                return False
            return await self._finish(record, row, {"transitioning_message": message}, None)
        except InstructionError as exc:
            log.info("%s %s: %s failed: %s", record.type, record.uuid, row.operation, exc)
            return await self._finish(record, row, self._failed(row, record, str(exc)), None)
        except Exception:
            log.exception("%s %s: %s failed", record.type, record.uuid, row.operation)
            return await self._finish(
                record, row, self._failed(row, record, "internal error; see the server log"),
                None)
        return await self._finish(record, row, entered(outcome.state or row.target),
                                  outcome.data)

    @staticmethod
    def _failed(row: Step, record: Record, message: str) -> dict[str, Any]:
        return {"state": row.error or record.state, "transitioning": "error",
                "transitioning_message": message, "transitioning_progress": None}

    async def _finish(self, record: Record, row: Step, columns: dict[str, Any],
                      data: Mapping[str, Any] | None) -> bool:
        """Record the outcome and give up the claim, in one transaction, unless a newer step
        was asked for meanwhile: then only the operation's data is kept and the newer step
        runs next. True once written."""

        async def write(tx: Transaction) -> None:
            await tx.release(record.id, self.owner)
            current = await tx.lock(record.id)
            if current is None:
                return
            if not row.under_way(current.state):
                if data:  # the newer step was submitted when it was asked for
                    await tx.update(record.id, {}, data)
                return
            await tx.update(record.id, columns, data)

        await self._services.store.transact(write)
        return True
