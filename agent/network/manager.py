"""The agent's one owner of the host's overlay: applies what ``network.apply`` sends, and keeps
the host matching it afterwards.

The server sends the whole desired state each time, so the manager only needs the latest one:
applies run one at a time, and one that is still waiting when a newer one arrives is skipped
(its caller gets the newer one's outcome, the state then in effect). What was last asked for
is the desired state, also when applying it failed: a background loop checks every
``verify_interval`` seconds that the host still matches it (``Overlay.pending``) and applies it
again when it does not, which repairs what a dockerd restart removed (its chains are rebuilt
without ours, a network may be missing) and retries an apply that failed.

Containers on the managed network wait for :meth:`NetworkManager.wait_ready`, so that one
created right after the host registered does not beat its network.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from dataclasses import dataclass, field
from typing import Protocol

from agent.logs import log
from agent.network.config import OverlayConfig, Peer, Policy, check_peers
from agent.network.errors import OverlayError
from agent.network.overlay import Overlay
from agent.network.plan import Command
from shared.errors import ErrorCode, InstructionError
from shared.overlay import NetworkApplied, NetworkApply

VERIFY_INTERVAL = 10.0
"""Seconds between two checks that the host still matches the desired state."""
TEARDOWN_TIMEOUT = 120.0
"""Seconds removing the overlay may take before the agent exits without finishing it."""


class NetworkService(Protocol):
    """What instruction handlers ask of the host's managed network."""

    async def apply(self, request: NetworkApply) -> NetworkApplied: ...

    async def wait_ready(self, timeout: float) -> None: ...


class NoNetwork:
    """The network of an agent that manages none (tests that do not need one)."""

    async def apply(self, request: NetworkApply) -> NetworkApplied:
        raise InstructionError("this agent does not manage an overlay network")

    async def wait_ready(self, timeout: float) -> None:
        raise InstructionError("the managed network is not available on this host")


def read_request(request: NetworkApply) -> tuple[OverlayConfig, list[Peer]]:
    """The overlay settings and peers of a ``network.apply``, checked: ValueError names what
    can never work."""
    policy = Policy.of(request.policy.default_action, request.policy.entries)
    config = OverlayConfig.of(request.underlay_ip, request.subnet, pool=request.pool,
                              vni=request.vni, port=request.port, mtu=request.mtu,
                              policy=policy)
    # The server sends one peer list to every host of the environment: this host is in it.
    others = [Peer.of(p.subnet, p.underlay_ip) for p in request.peers
              if (p.subnet, p.underlay_ip) != (request.subnet, request.underlay_ip)]
    return config, check_peers(config, others)


@dataclass(eq=False)
class _Desired:
    """One state asked for, and what became of it (for the applies it superseded)."""

    version: str
    config: OverlayConfig
    peers: list[Peer]
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    result: NetworkApplied | None = None
    error: InstructionError | None = None


class NetworkManager:
    """The host's overlay as the server wants it; see the module docstring."""

    def __init__(self, overlay: Overlay, *, verify_interval: float = VERIFY_INTERVAL) -> None:
        self._overlay = overlay
        self._interval = verify_interval
        self._lock = asyncio.Lock()
        self._desired: _Desired | None = None
        self._ready = asyncio.Event()
        self._last_error: str | None = None
        self._warned: str | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def last_error(self) -> str | None:
        """Why the last attempt to apply the desired state failed; None after a success."""
        return self._last_error

    @property
    def version(self) -> str | None:
        """The version of the desired state (applied or not), None before the first."""
        return None if self._desired is None else self._desired.version

    async def apply(self, request: NetworkApply) -> NetworkApplied:
        """Make the host match ``request``; the version in effect and the commands it took.

        Settings that can never work are ``invalidData`` and change nothing; a command that
        fails is a ``runtimeError`` with its own message, and the loop retries.
        """
        try:
            config, peers = read_request(request)
        except ValueError as exc:
            raise InstructionError(str(exc), ErrorCode.INVALID_DATA) from exc
        desired = _Desired(request.version, config, peers)
        self._desired = desired
        try:
            async with self._lock:
                if self._desired is desired:
                    desired.result = await self._apply(desired)
            if desired.result is None:
                # A newer state arrived while this one waited: its outcome is what is in effect.
                newer = self._desired
                if newer is None:
                    raise InstructionError("the managed network was removed before this "
                                           "network.apply ran", ErrorCode.CONFLICT)
                await newer.finished.wait()
                desired.result, desired.error = newer.result, newer.error
        except InstructionError as exc:
            desired.error = exc
            raise
        finally:
            if desired.result is None and desired.error is None:  # cancelled
                desired.error = InstructionError(f"network.apply of version {desired.version} "
                                                 "was cancelled", ErrorCode.CANCELLED)
            desired.finished.set()
        if desired.error is not None:
            raise desired.error
        assert desired.result is not None
        return desired.result

    async def _apply(self, desired: _Desired) -> NetworkApplied:
        """Apply under the lock, recording the outcome for wait_ready and the loop."""
        try:
            commands = await self._overlay.apply(desired.config, desired.peers)
        except (OverlayError, ValueError) as exc:
            # ValueError here is output the host printed that could not be read.
            self._failed(str(exc))
            if isinstance(exc, InstructionError):
                raise
            raise InstructionError(str(exc)) from exc
        self._succeeded()
        log.info("network: version %s in effect (%d change(s))", desired.version or "-",
                 len(commands))
        return NetworkApplied(desired.version, len(commands))

    def _failed(self, message: str) -> None:
        self._last_error = message
        if message != self._warned:
            log.warning("network: cannot set up the managed network: %s", message)
            self._warned = message

    def _succeeded(self) -> None:
        if self._warned is not None:
            log.info("network: the managed network is set up again")
        self._last_error = self._warned = None
        self._ready.set()

    async def verify(self) -> list[Command]:
        """Apply the desired state again if the host no longer matches it; what that ran."""
        desired = self._desired
        if desired is None:
            return []
        async with self._lock:
            if self._desired is not desired:  # an apply of a newer state ran meanwhile
                return []
            try:
                drift = await self._overlay.pending(desired.config, desired.peers)
                if not drift:
                    return []
                log.info("network: the host does not match version %s; repairing: %s",
                         desired.version or "-",
                         "; ".join(shlex.join(c) for c in drift[:5])
                         + (f" and {len(drift) - 5} more" if len(drift) > 5 else ""))
                await self._apply(desired)
            except (InstructionError, ValueError) as exc:  # _apply has logged its own
                self._failed(str(exc))
                return []
            return drift

    async def wait_ready(self, timeout: float) -> None:
        """Return once the managed network has been set up since the agent started; after
        ``timeout`` seconds without, an InstructionError saying why."""
        if self._ready.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):  # not wait_for: it can lose a cancellation
                await self._ready.wait()
            return
        if self._last_error is not None:
            why = f"the last attempt failed: {self._last_error}"
        elif self._desired is None:
            why = "the server has not sent its settings yet"
        else:
            why = "it is still being applied"
        raise InstructionError(f"the managed network is not set up on this host yet "
                               f"({why.rstrip('.')}); try again later")

    async def teardown(self, timeout: float = TEARDOWN_TIMEOUT) -> list[Command]:
        """Forget the desired state and remove the overlay from the host (the host was
        removed); the commands that ran. A failure is logged, not raised: the agent is
        leaving anyway, and what is left is harmless until the host registers again."""
        await self.stop()
        try:
            async with asyncio.timeout(timeout), self._lock:
                self._desired = None
                self._ready.clear()
                commands = await self._overlay.teardown()
        except (InstructionError, ValueError, TimeoutError) as exc:
            message = str(exc) or f"it took longer than {timeout:g} s"
            log.warning("network: could not remove all of the managed network: %s", message)
            return []
        log.info("network: managed network removed (%d command(s))", len(commands))
        return commands

    def start(self) -> None:
        """Start the loop that keeps the host matching the desired state."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="network-verify")

    async def stop(self) -> None:
        """Stop the loop (the overlay stays as it is)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.verify()
            except Exception:  # a bug: say so, keep verifying
                log.exception("network: checking the managed network failed unexpectedly")
