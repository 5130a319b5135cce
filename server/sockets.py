"""Client websockets (change subscriptions, log and exec streams) open in this process, so
that shutdown closes each with GOING_AWAY instead of waiting for its client to leave."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from aiohttp import web


class ClientSockets:
    def __init__(self) -> None:
        self._open: set[web.WebSocketResponse] = set()

    def add(self, ws: web.WebSocketResponse) -> None:
        self._open.add(ws)

    def discard(self, ws: web.WebSocketResponse) -> None:
        self._open.discard(ws)

    @contextlib.contextmanager
    def holding(self, ws: web.WebSocketResponse) -> Iterator[None]:
        self.add(ws)
        try:
            yield
        finally:
            self.discard(ws)

    def __len__(self) -> int:
        return len(self._open)

    async def close_all(self) -> None:
        sockets, self._open = list(self._open), set()
        await asyncio.gather(*(ws.close(code=1001, message=b"server shutting down")
                               for ws in sockets), return_exceptions=True)
