"""The discovery DNS responder: answers the managed network's containers on UDP and TCP port 53
of :data:`~shared.discovery.RESOLVER_ADDRESS`, from the table of :mod:`agent.dns.resolve`, and
relays what is not ours to the host's own resolvers.

The only module that imports dnslib, and only to read and write packets. What it guarantees:

- the table is swapped whole (:meth:`DnsServer.apply` replaces one reference): a query answers
  from one table, the one in place when it arrived;
- a relayed query goes out as the client sent it to the host's resolvers
  (:mod:`agent.dns.upstream`), over TCP for a TCP client; the first reply goes back untouched,
  SERVFAIL when none comes. A CNAME of ours that leaves the table is answered with what they
  say of its target, asked with the question's type;
- memory stays bounded: at most ``max_forwards`` relayed queries in flight (more are SERVFAIL at
  once), :data:`MAX_TCP_CONNECTIONS` TCP connections (more are closed at once) and
  :data:`UDP_BUFFER_LIMIT` bytes of UDP replies the socket has not taken (more are dropped);
- a packet that does not parse is dropped and counted (DEBUG), never an error; a UDP answer
  larger than 512 bytes, or than the client's EDNS buffer, is truncated (TC set, answers left
  out) so that the client asks again over TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

from dnslib import (  # type: ignore[import-untyped]
    CLASS,
    CNAME,
    EDNS0,
    OPCODE,
    QTYPE,
    RCODE,
    RR,
    A,
    DNSHeader,
    DNSLabel,
    DNSRecord,
)

from agent.dns.resolve import (
    EMPTY,
    FORWARD,
    TTL,
    Answer,
    Forward,
    Outcome,
    Record,
    Shuffle,
    Table,
    resolve,
)
from agent.dns.upstream import LENGTH, RESOLV_CONF, UPSTREAM_TIMEOUT, Upstreams
from agent.logs import log
from shared.discovery import RESOLVER_ADDRESS

DEFAULT_PORT = 53
MAX_FORWARDS = 256
MAX_TCP_CONNECTIONS = 128
TCP_IDLE_TIMEOUT = 10.0
"""Seconds a TCP client may keep a connection open without sending a whole query."""
UDP_BUFFER_LIMIT = 1 << 20
"""Bytes of UDP replies waiting for the socket beyond which more replies are dropped."""
UDP_LIMIT = 512       # without EDNS (RFC 1035)
EDNS_LIMIT = 4096     # what we accept and advertise with EDNS


@dataclass
class Counters:
    """What the responder has done since it started (for logs and tests)."""

    queries: int = 0
    answered: int = 0      # from the table
    forwarded: int = 0     # relayed, and a reply came back
    failed: int = 0        # relayed, and no upstream answered: SERVFAIL
    refused: int = 0       # over the in-flight bound: SERVFAIL at once
    malformed: int = 0     # dropped


@dataclass(frozen=True)
class _Query:
    request: DNSRecord
    data: bytes
    tcp: bool
    limit: int            # the largest reply the client takes
    outcome: Forward


class _Datagrams(Protocol):
    """What the listener uses of its transport: CPython's datagram transports have a write
    buffer (typeshed's DatagramTransport does not say so)."""

    def sendto(self, data: bytes, addr: tuple[str | object, ...]) -> None: ...

    def get_write_buffer_size(self) -> int: ...

    def is_closing(self) -> bool: ...


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self._server = server
        self.transport: _Datagrams | None = None
        self.closed = asyncio.Event()  # the socket is closed: the port may be bound again

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(_Datagrams, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if self.transport is not None:
            self._server._datagram(self.transport, data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("dns: UDP error: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


class DnsServer:
    """The responder on ``host``:``port`` (0: any free port, for tests; UDP and TCP share it).
    ``upstream_port`` is where the upstreams of ``resolv_conf`` listen (53, but for tests)."""

    def __init__(self, host: str = RESOLVER_ADDRESS, port: int = DEFAULT_PORT, *,
                 resolv_conf: Path = RESOLV_CONF, upstream_port: int = DEFAULT_PORT,
                 upstream_timeout: float = UPSTREAM_TIMEOUT, max_forwards: int = MAX_FORWARDS,
                 shuffle: Shuffle = random.shuffle) -> None:
        self.host, self.port = host, port
        self._resolv_conf, self._upstream_port = resolv_conf, upstream_port
        self._upstream_timeout = upstream_timeout
        self._max_forwards = max_forwards
        self._shuffle = shuffle
        self._table = EMPTY
        self._upstreams: Upstreams | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._listener: _Listener | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()          # relayed UDP queries
        self._connections: set[asyncio.Task[None]] = set()    # TCP clients
        self._in_flight = 0
        self.counters = Counters()

    @property
    def table(self) -> Table:
        return self._table

    @property
    def running(self) -> bool:
        return self._udp is not None

    def apply(self, table: Table) -> None:
        """Answer from ``table`` from now on; queries already in progress keep theirs."""
        self._table = table

    async def start(self) -> None:
        """Listen on UDP and TCP; OSError when the address cannot be bound (yet)."""
        if self._udp is not None:
            return
        loop = asyncio.get_running_loop()
        for attempt in range(5 if self.port == 0 else 1):
            transport, listener = await loop.create_datagram_endpoint(
                lambda: _Listener(self), local_addr=(self.host, self.port))
            port = int(transport.get_extra_info("sockname")[1])
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self.host, port,
                                                       reuse_address=True)
            except OSError:
                transport.close()
                if self.port != 0 or attempt == 4:
                    raise
                continue  # an ephemeral UDP port whose TCP twin is taken: try another
            self._udp, self._listener, self.port = transport, listener, port
            break
        self._upstreams = Upstreams(self._resolv_conf, self._upstream_port,
                                    [(self.host, self.port)], timeout=self._upstream_timeout)
        self._upstreams.current()

    async def stop(self) -> None:
        """Stop listening and drop the queries in progress (their clients ask again)."""
        udp, self._udp = self._udp, None
        listener, self._listener = self._listener, None
        tcp, self._tcp = self._tcp, None
        if udp is not None:
            udp.close()
        if tcp is not None:
            tcp.close()
        tasks = [*self._tasks, *self._connections]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if tcp is not None:
            await tcp.wait_closed()
        if listener is not None:
            await listener.closed.wait()

    # --- receiving ----------------------------------------------------------------------

    def _datagram(self, transport: _Datagrams, data: bytes,
                  addr: tuple[str | object, ...]) -> None:
        received = self._receive(data, str(addr[0]), tcp=False)
        if isinstance(received, bytes):
            _send(transport, received, addr)
        elif received is not None:
            task = asyncio.create_task(self._relay_udp(transport, received, addr))
            self._tasks.add(task)
            task.add_done_callback(self._forward_done)

    async def _relay_udp(self, transport: _Datagrams, query: _Query,
                         addr: tuple[str | object, ...]) -> None:
        reply = await self._forward(query)
        if not transport.is_closing():
            _send(transport, reply, addr)

    def _forward_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._in_flight -= 1
        if not task.cancelled() and task.exception() is not None:
            log.error("dns: relaying a query failed unexpectedly", exc_info=task.exception())

    async def _serve_tcp(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._connections) >= MAX_TCP_CONNECTIONS or task is None:
            writer.close()
            return
        self._connections.add(task)
        client = str(writer.get_extra_info("peername")[0])
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE_TIMEOUT):
                    (length,) = LENGTH.unpack(await reader.readexactly(2))
                    data = await reader.readexactly(length)
                reply = await self._answer_tcp(data, client)
                if reply is None:
                    break  # a malformed message: the stream cannot be trusted any more
                writer.write(LENGTH.pack(len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        except asyncio.CancelledError:
            # stop(): end quietly, as Python 3.11's asyncio reports a cancelled client task.
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    async def _answer_tcp(self, data: bytes, client: str) -> bytes | None:
        received = self._receive(data, client, tcp=True)
        if received is None or isinstance(received, bytes):
            return received
        try:
            return await self._forward(received)
        finally:
            self._in_flight -= 1

    def _receive(self, data: bytes, client: str, tcp: bool) -> bytes | _Query | None:
        """The reply to a query when the table decides it; a query to relay (its slot taken);
        None to drop the packet."""
        self.counters.queries += 1
        try:
            request = DNSRecord.parse(data)
        except Exception as exc:  # dnslib's DNSError, but a hostile packet may find others
            self.counters.malformed += 1
            log.debug("dns: dropped a malformed packet from %s: %s", client, exc)
            return None
        if request.header.qr:  # a response is never a question for us
            self.counters.malformed += 1
            return None
        limit = 65535 if tcp else _udp_limit(request)
        if request.header.opcode != OPCODE.QUERY:
            return _error(request, RCODE.NOTIMP)
        if len(request.questions) != 1:
            return _error(request, RCODE.FORMERR)
        question = request.q
        name = _name(question.qname)
        outcome: Outcome = FORWARD  # another class (CHAOS) or a name that cannot be ours
        if question.qclass == CLASS.IN and name is not None:
            outcome = resolve(self._table, name, str(QTYPE.get(question.qtype)), client,
                              self._shuffle)
        log.debug("dns: %s asks %s %s: %s", client, question.qname, QTYPE.get(question.qtype),
                  outcome)
        if isinstance(outcome, Answer):
            self.counters.answered += 1
            return _pack(_reply(request, getattr(RCODE, outcome.rcode), outcome.records,
                                aa=True), limit)
        if self._in_flight >= self._max_forwards:
            self.counters.refused += 1
            return _error(request, RCODE.SERVFAIL)
        self._in_flight += 1
        return _Query(request, data, tcp, limit, outcome)

    # --- relaying -----------------------------------------------------------------------

    async def _forward(self, query: _Query) -> bytes:
        """The reply to a query that is not (wholly) ours."""
        target = query.outcome.target
        if target is None:
            relayed = await self._ask(query.data, query.tcp)
            if relayed is not None:
                return relayed
            return _error(query.request, RCODE.SERVFAIL)
        question = DNSRecord.question(target, "A")
        question.q.qtype = query.request.q.qtype
        question.header.id = random.randrange(65536)
        relayed = await self._ask(bytes(question.pack()), query.tcp)
        if relayed is not None:
            with contextlib.suppress(Exception):  # dnslib's errors: a reply we cannot read
                upstream = DNSRecord.parse(relayed)
                reply = _reply(query.request, upstream.header.rcode, query.outcome.records)
                reply.add_answer(*upstream.rr)
                return _pack(reply, query.limit)
        return _error(query.request, RCODE.SERVFAIL)

    async def _ask(self, data: bytes, tcp: bool) -> bytes | None:
        reply = None if self._upstreams is None else await self._upstreams.ask(data, tcp=tcp)
        if reply is None:
            self.counters.failed += 1
        else:
            self.counters.forwarded += 1
        return reply


def _send(transport: _Datagrams, reply: bytes,
          addr: tuple[str | object, ...]) -> None:
    """Send a UDP reply, unless replies are already piling up (the client asks again)."""
    if transport.get_write_buffer_size() < UDP_BUFFER_LIMIT:
        transport.sendto(reply, addr)


# --- packets ------------------------------------------------------------------------------


def _name(qname: DNSLabel) -> str | None:
    """The question's name as text, None when it cannot be one of ours (bytes that are not
    letters, digits and the like)."""
    try:
        labels = [label.decode("ascii") for label in qname.label]
    except UnicodeDecodeError:
        return None
    if any("." in label for label in labels):
        return None
    return ".".join(labels)


def _udp_limit(request: DNSRecord) -> int:
    for rr in request.ar:
        if rr.rtype == QTYPE.OPT:
            return max(UDP_LIMIT, min(int(rr.rclass), EDNS_LIMIT))
    return UDP_LIMIT


def _reply(request: DNSRecord, rcode: int, records: Iterable[Record] = (), *,
           aa: bool = False) -> DNSRecord:
    """A reply to ``request``: its id, opcode, RD and CD bits and question, our flags."""
    header = DNSHeader(id=request.header.id, bitmap=request.header.bitmap, qr=1, aa=int(aa),
                       tc=0, ra=1, z=0, ad=0, rcode=rcode)
    reply = DNSRecord(header, questions=list(request.questions[:1]))
    for record in records:
        rdata = A(record.value) if record.kind == "A" else CNAME(record.value)
        reply.add_answer(RR(record.name, getattr(QTYPE, record.kind), rdata=rdata, ttl=TTL))
    if any(rr.rtype == QTYPE.OPT for rr in request.ar):
        reply.add_ar(EDNS0(udp_len=EDNS_LIMIT))
    return reply


def _error(request: DNSRecord, rcode: int) -> bytes:
    return bytes(_reply(request, rcode).pack())


def _pack(reply: DNSRecord, limit: int) -> bytes:
    """``reply`` packed, truncated (TC, no answers) when larger than ``limit``."""
    packed = bytes(reply.pack())
    if len(packed) <= limit:
        return packed
    reply.rr, reply.auth = [], []
    reply.header.tc = 1
    return bytes(reply.pack())
