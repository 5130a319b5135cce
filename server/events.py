"""The stream of resource changes: every store write is published here, in process.

Subscribers (the UI's event socket, reconcile loops) each get a bounded queue; a subscriber that
falls behind loses its subscription rather than making the server buffer without bound.
"""

from __future__ import annotations

import asyncio
import logging

from server.store import Record

log = logging.getLogger(__name__)


class Subscription:
    def __init__(self, bus: EventBus, size: int) -> None:
        self._bus = bus
        self.queue: asyncio.Queue[Record | None] = asyncio.Queue(size)
        self.overflowed = False

    async def get(self) -> Record | None:
        """The next changed record, or None once the subscription has ended."""
        return await self.queue.get()

    def close(self) -> None:
        self._bus.unsubscribe(self)


class EventBus:
    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()

    def subscribe(self, size: int = 1000) -> Subscription:
        sub = Subscription(self, size)
        self._subscriptions.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscriptions.discard(sub)

    def publish(self, record: Record) -> None:
        for sub in list(self._subscriptions):
            try:
                sub.queue.put_nowait(record)
            except asyncio.QueueFull:
                log.warning("a change subscriber fell behind; ending its subscription")
                sub.overflowed = True
                self._subscriptions.discard(sub)
                sub.queue.get_nowait()
                sub.queue.put_nowait(None)
