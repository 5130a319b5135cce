"""The host's own resolvers, to which the discovery responder relays what is not ours.

They are the ``nameserver`` lines of the host's ``resolv.conf``, read when the responder starts
and again when the file changes (checked at most every :data:`RESOLV_CHECK_INTERVAL` seconds,
so that a DHCP renewal or a VPN is followed). Loopback resolvers stay: the agent runs in the
host's network namespace, where systemd-resolved's ``127.0.0.53`` answers. The discovery
address and the responder's own address are left out, so that nothing loops.

:meth:`Upstreams.ask` sends a query's bytes as they are, from a fresh socket each time (a random
source port: a reply is matched by its socket and its id, and no id is rewritten), to each
resolver in turn with ``timeout`` seconds each. It only moves bytes: the responder reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import time
from collections.abc import Iterable
from ipaddress import ip_address
from pathlib import Path

from agent.logs import log
from shared.discovery import RESOLVER_ADDRESS

UPSTREAM_TIMEOUT = 2.0
"""Seconds one upstream resolver has to answer before the next one is asked."""
RESOLV_CONF = Path("/etc/resolv.conf")
RESOLV_CHECK_INTERVAL = 5.0
LENGTH = struct.Struct("!H")  # the length prefix of DNS over TCP

Upstream = tuple[str, int]
_MISSING = (0, 0, 0)


def read_resolv_conf(text: str) -> list[str]:
    """The ``nameserver`` addresses of a ``resolv.conf``, in order, invalid ones left out."""
    found = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            with contextlib.suppress(ValueError):
                found.append(str(ip_address(words[1])))
    return found


class Upstreams:
    """The resolvers of ``path``, listening on ``port``, but for those in ``skip``."""

    def __init__(self, path: Path = RESOLV_CONF, port: int = 53,
                 skip: Iterable[Upstream] = (), *, timeout: float = UPSTREAM_TIMEOUT) -> None:
        self._path, self._port, self.timeout = path, port, timeout
        self._skip = {*skip, (RESOLVER_ADDRESS, port)}
        self._stamp: tuple[int, int, int] | None = None
        self._checked = float("-inf")
        self._servers: list[Upstream] = []
        self._failing = False

    def current(self) -> list[Upstream]:
        """The resolvers now, the file read again if it changed."""
        now = time.monotonic()
        if now - self._checked >= RESOLV_CHECK_INTERVAL:
            self._checked = now
            self._reload()
        return self._servers

    async def ask(self, data: bytes, *, tcp: bool = False) -> bytes | None:
        """The first resolver's reply to the query ``data`` (over TCP when ``tcp``), None when
        none answers in time. A failure of all of them is a WARNING once, until one answers."""
        servers = self.current()
        for server in servers:
            try:
                async with asyncio.timeout(self.timeout):
                    reply = await (_tcp_exchange(server, data) if tcp
                                   else _udp_exchange(server, data))
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                log.debug("dns: upstream %s did not answer: %s", server[0], exc or "timed out")
                continue
            if self._failing:
                self._failing = False
                log.info("dns: the host's resolvers answer again")
            return reply
        if servers and not self._failing:
            self._failing = True
            log.warning("dns: none of the host's resolvers (%s) answered within %g s; "
                        "answering SERVFAIL", ", ".join(s[0] for s in servers), self.timeout)
        return None

    def _reload(self) -> None:
        try:
            info = os.stat(self._path)
            stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
            if stamp == self._stamp:
                return
            text = self._path.read_text(errors="replace")
        except OSError as exc:
            if self._stamp != _MISSING:
                log.warning("dns: cannot read %s (%s); names that are not ours go unanswered",
                            self._path, exc.strerror)
            self._stamp, self._servers = _MISSING, []
            return
        self._stamp = stamp
        self._servers = [(a, self._port) for a in read_resolv_conf(text)
                         if (a, self._port) not in self._skip]
        if self._servers:
            log.info("dns: relaying other names to %s",
                     ", ".join(address for address, _ in self._servers))
        else:
            log.warning("dns: %s names no resolver but ours; names that are not ours go "
                        "unanswered", self._path)


class _Exchange(asyncio.DatagramProtocol):
    """One relayed query's socket: the first reply carrying the query's id."""

    def __init__(self, query_id: bytes) -> None:
        self._id = query_id
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if data[:2] == self._id and not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:  # e.g. ICMP port unreachable
        if not self.reply.done():
            self.reply.set_exception(exc)


async def _udp_exchange(upstream: Upstream, data: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    transport, exchange = await loop.create_datagram_endpoint(
        lambda: _Exchange(data[:2]), remote_addr=upstream)
    try:
        transport.sendto(data)
        return await exchange.reply
    finally:
        transport.close()


async def _tcp_exchange(upstream: Upstream, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*upstream)
    try:
        writer.write(LENGTH.pack(len(data)) + data)
        await writer.drain()
        (length,) = LENGTH.unpack(await reader.readexactly(2))
        reply = await reader.readexactly(length)
        if reply[:2] != data[:2]:
            raise ConnectionError("the reply is not to our query")
        return reply
    finally:
        writer.close()
