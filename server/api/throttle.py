"""Failed authentications: throttled per client address and logged in summary.

Every failed login (a wrong API key or secret, a wrong agent key, a wrong registration token)
takes a token from its client address's bucket, which refills at a steady rate. An address
whose bucket is empty gets 429 without its credentials being looked at, until a token is back:
guessing goes no faster than the refill rate. Credentials that succeeded recently still pass,
so that a client sharing its address with a guesser (behind the same NAT or proxy) is not
locked out by someone else's failures. A successful call takes no token, and an address that
has not failed lately costs one dictionary look-up.

The buckets live in this process's memory: with several servers each throttles on its own, so
an address may fail ``burst`` times on each server before the refill rate holds it back.

Logging (WARNING): the first failure from an address is one line; later failures and refusals
from it are counted and summed up in one line per address per ``log_interval``, so that
guessing at any rate cannot flood the log. Credentials never reach a line.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

from aiohttp import web

from server.api.client_headers import Network, client_ip
from server.api.errors import TooManyRequests, Unauthorized
from server.security import digest

log = logging.getLogger(__name__)
T = TypeVar("T")
# Where failures from addresses beyond ``max_logged_addresses`` are counted together.
OTHER_ADDRESSES = "other addresses"


class CredentialKind(StrEnum):
    """What a failed caller presented, as the log names it."""

    API_KEY = "API key"
    AGENT_KEY = "agent key"
    REGISTRATION_TOKEN = "registration token"


@dataclass(frozen=True)
class ThrottlePolicy:
    # Failures an address may make at once, then one more per 1 / ``per_second`` seconds.
    burst: int = 20
    per_second: float = 1.0
    log_interval: float = 60.0
    # Addresses (and successful credentials) remembered at most, so memory stays bounded.
    max_addresses: int = 10_000
    # Addresses with a line of their own per interval; the rest share one line, so that
    # guesses from ever new addresses cannot flood the log either.
    max_logged_addresses: int = 100
    # Proxies whose X-Forwarded-For names the client: their clients are throttled each on
    # their own, not the proxy as a whole.
    trusted_proxies: tuple[Network, ...] = ()


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class _Tally:
    failures: Counter[str] = field(default_factory=Counter)
    refused: int = 0

    def summary(self) -> str:
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self.failures.items()))
        total = sum(self.failures.values())
        return f"{total} failed ({kinds or 'none'}), {self.refused} refused with 429"


class AuthGuard:
    """The throttle and the failure log of one server process."""

    def __init__(self, policy: ThrottlePolicy | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy or ThrottlePolicy()
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._tallies: dict[str, _Tally] = {}
        self._good: OrderedDict[str, None] = OrderedDict()
        self._timer: asyncio.TimerHandle | None = None

    async def attempt_for(self, request: web.Request, credential: str | None,
                          kind: CredentialKind, authenticate: Callable[[], Awaitable[T]]) -> T:
        """``attempt`` for the client of ``request`` (behind trusted proxies: theirs)."""
        address = client_ip(request.remote, request.headers.getall("X-Forwarded-For", []),
                            self.policy.trusted_proxies) if request.remote else None
        return await self.attempt(address, credential, kind, authenticate)

    async def attempt(self, address: str | None, credential: str | None,
                      kind: CredentialKind, authenticate: Callable[[], Awaitable[T]]) -> T:
        """Run ``authenticate`` for a caller at ``address`` presenting ``credential``, unless
        that address is throttled (429); count its Unauthorized as a failure."""
        if not credential:  # nothing presented, nothing guessed: a plain 401
            return await authenticate()
        where = address or "unknown"
        fingerprint = digest(f"{kind}:{credential}")
        wait = self.retry_after(where)
        if wait > 0 and fingerprint not in self._good:
            self._count(where, None)
            raise TooManyRequests(f"too many failed authentications from {where}: try again "
                                  f"in {math.ceil(wait)} s")
        try:
            result = await authenticate()
        except Unauthorized:
            self.failed(where, kind)
            raise
        self._remember(fingerprint)
        return result

    def retry_after(self, address: str) -> float:
        """Seconds until ``address`` may try again; 0 when it is not throttled."""
        bucket = self._buckets.get(address)
        if bucket is None or self._refill(address, bucket) >= 1:
            return 0.0
        return (1 - bucket.tokens) / self.policy.per_second

    def failed(self, address: str, kind: CredentialKind) -> None:
        """A failed authentication from ``address``: take a token, count it."""
        bucket = self._buckets.get(address)
        if bucket is not None:
            self._refill(address, bucket)
        if address in self._buckets:
            self._buckets.move_to_end(address)
        else:
            bucket = _Bucket(float(self.policy.burst), self._clock())
            self._buckets[address] = bucket
            if len(self._buckets) > self.policy.max_addresses:
                self._buckets.popitem(last=False)  # the least recently failing address
        assert bucket is not None
        bucket.tokens = max(0.0, bucket.tokens - 1)
        self._count(address, kind)

    def flush(self) -> None:
        """One summary line per address with failures or refusals since its last line;
        addresses that stayed quiet are forgotten (their next failure is a new first line)."""
        for address, tally in list(self._tallies.items()):
            if not tally.failures and not tally.refused:
                del self._tallies[address]
                continue
            log.warning("authentication from %s in the last %g s: %s", address,
                        self.policy.log_interval, tally.summary())
            self._tallies[address] = _Tally()

    def _refill(self, address: str, bucket: _Bucket) -> float:
        now = self._clock()
        bucket.tokens = min(float(self.policy.burst),
                            bucket.tokens + (now - bucket.updated) * self.policy.per_second)
        bucket.updated = now
        if bucket.tokens >= self.policy.burst:
            del self._buckets[address]  # a full bucket says nothing: keep memory for others
        return bucket.tokens

    def _count(self, address: str, kind: CredentialKind | None) -> None:
        tally = self._tallies.get(address)
        if tally is None:
            if len(self._tallies) >= self.policy.max_logged_addresses:
                address = OTHER_ADDRESSES
                tally = self._tallies.setdefault(address, _Tally())
            else:
                tally = self._tallies[address] = _Tally()
                if kind is not None:
                    log.warning("authentication failed from %s: %s refused (further "
                                "failures from this address are summed up every %g s)",
                                address, kind, self.policy.log_interval)
                    self._arm()
                    return
        if kind is None:
            tally.refused += 1
        else:
            tally.failures[kind.value] += 1
        self._arm()

    def _arm(self) -> None:
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.policy.log_interval, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.flush()
        if self._tallies:
            self._arm()

    def _remember(self, fingerprint: str) -> None:
        self._good[fingerprint] = None
        self._good.move_to_end(fingerprint)
        if len(self._good) > self.policy.max_addresses:
            self._good.popitem(last=False)
