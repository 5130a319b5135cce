"""The discovery responder on real localhost sockets: answers from the table over UDP and TCP,
forwarding to a fake upstream (a small dnslib responder), SERVFAIL when upstreams fail,
truncation, the in-flight bound, malformed packets, table swaps and resolv.conf."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from dnslib import EDNS0, QTYPE, RCODE, RR, A, DNSRecord

from agent.dns import upstream as dns_upstream
from agent.dns.resolve import Table
from agent.dns.server import DnsServer
from agent.dns.upstream import Upstreams, read_resolv_conf
from shared.discovery import DnsApply
from tests.support.timing import seconds

WAIT = seconds(5)  # reached only when something is broken
HOST = "127.0.0.1"  # where queries come from, hence the client in the table
WIRE: dict[str, Any] = {
    "version": "v1",
    "names": {
        "db.s1.rancher.internal": {"addresses": ["10.42.0.5", "10.42.1.6"]},
        "big.s1.rancher.internal": {"addresses": [f"10.42.9.{i}" for i in range(1, 101)]},
        "alias.s1.rancher.internal": {"cname": "db.s1.rancher.internal"},
        "search.s1.rancher.internal": {"cname": "search.example.com"},
    },
    "clients": {HOST: {"stack": "s1", "aliases": {"database": "db.s1.rancher.internal"}}},
}
UPSTREAM_NAMES = {"example.com.": "93.184.216.34", "search.example.com.": "10.1.1.1"}


def table(wire: dict[str, Any] = WIRE, **changes: Any) -> Table:
    return Table.of(DnsApply.parse({**wire, **changes}))


class Upstream(asyncio.DatagramProtocol):
    """A resolver that knows UPSTREAM_NAMES (NXDOMAIN otherwise), on UDP and TCP; ``silent``
    never answers. Records what it was asked."""

    def __init__(self, silent: bool = False) -> None:
        self.silent = silent
        self.asked: list[tuple[str, str]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def answer(self, data: bytes) -> bytes | None:
        request = DNSRecord.parse(data)
        name, qtype = str(request.q.qname), QTYPE[request.q.qtype]
        self.asked.append((name, qtype))
        if self.silent:
            return None
        reply = request.reply(aa=0)
        if name.lower() in UPSTREAM_NAMES:
            if qtype == "A":
                reply.add_answer(RR(name, QTYPE.A, rdata=A(UPSTREAM_NAMES[name.lower()]),
                                    ttl=300))
        else:
            reply.header.rcode = RCODE.NXDOMAIN
        return bytes(reply.pack())

    def datagram_received(self, data: bytes, addr: Any) -> None:
        reply = self.answer(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    async def serve_tcp(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        try:
            length = int.from_bytes(await reader.readexactly(2), "big")
            reply = self.answer(await reader.readexactly(length))
            if reply is not None:
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()
            else:
                await asyncio.sleep(WAIT)
        finally:
            writer.close()


@asynccontextmanager
async def upstream(host: str = HOST, port: int = 0, *,
                   silent: bool = False) -> AsyncIterator[tuple[Upstream, int]]:
    fake = Upstream(silent)
    loop = asyncio.get_running_loop()
    for attempt in range(5 if port == 0 else 1):
        transport, _ = await loop.create_datagram_endpoint(lambda: fake,
                                                           local_addr=(host, port))
        bound = transport.get_extra_info("sockname")[1]
        try:
            tcp = await asyncio.start_server(fake.serve_tcp, host, bound)
        except OSError:
            # An ephemeral UDP port whose TCP twin is taken: close it (a leaked transport
            # warns in whichever later test the collector runs) and try another.
            transport.close()
            if port != 0 or attempt == 4:
                raise
            continue
        port = bound
        break
    try:
        yield fake, port
    finally:
        transport.close()
        tcp.close()
        await tcp.wait_closed()


@asynccontextmanager
async def responder(tmp_path: Path, upstream_port: int, *nameservers: str,
                    **options: Any) -> AsyncIterator[DnsServer]:
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_text("".join(f"nameserver {ns}\n" for ns in nameservers or (HOST,)))
    server = DnsServer(HOST, 0, resolv_conf=resolv_conf, upstream_port=upstream_port,
                       **options)
    server.apply(table())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def ask(server: DnsServer, name: str, qtype: str = "A", *, tcp: bool = False,
              edns: int | None = None) -> DNSRecord:
    question = DNSRecord.question(name, qtype)
    if edns is not None:
        question.add_ar(EDNS0(udp_len=edns))
    data = await asyncio.to_thread(question.send, HOST, server.port, tcp, WAIT)
    reply = DNSRecord.parse(data)
    assert reply.header.id == question.header.id
    return reply


def addresses(reply: DNSRecord) -> set[str]:
    return {str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A}


async def test_a_service_name_resolves_authoritatively_for_one_second(tmp_path: Path) -> None:
    async with upstream() as (fake, port), responder(tmp_path, port) as server:
        reply = await ask(server, "db.s1.rancher.internal")
    assert reply.header.rcode == RCODE.NOERROR and reply.header.aa
    assert addresses(reply) == {"10.42.0.5", "10.42.1.6"}
    assert {rr.ttl for rr in reply.rr} == {1}
    assert fake.asked == []


async def test_a_bare_name_resolves_for_a_known_client_only(tmp_path: Path) -> None:
    async with upstream() as (fake, port), responder(tmp_path, port) as server:
        known = await ask(server, "db")
        server.apply(table(clients={}))
        unknown = await ask(server, "db")
    assert addresses(known) == {"10.42.0.5", "10.42.1.6"}
    assert str(known.rr[0].rname) == "db."
    assert unknown.header.rcode == RCODE.NXDOMAIN and fake.asked == [("db.", "A")]


async def test_a_link_alias_resolves_under_its_own_name(tmp_path: Path) -> None:
    async with upstream() as (_, port), responder(tmp_path, port) as server:
        reply = await ask(server, "database")
    assert addresses(reply) == {"10.42.0.5", "10.42.1.6"}
    assert {str(rr.rname) for rr in reply.rr} == {"database."}


async def test_a_cname_inside_the_table_is_followed(tmp_path: Path) -> None:
    async with upstream() as (fake, port), responder(tmp_path, port) as server:
        reply = await ask(server, "alias.s1.rancher.internal")
    assert [QTYPE[rr.rtype] for rr in reply.rr] == ["CNAME", "A", "A"]
    assert str(reply.rr[0].rdata) == "db.s1.rancher.internal."
    assert fake.asked == []


async def test_a_cname_to_an_outside_name_is_answered_with_what_upstream_says(
        tmp_path: Path) -> None:
    async with upstream() as (fake, port), responder(tmp_path, port) as server:
        reply = await ask(server, "search.s1.rancher.internal")
    assert [QTYPE[rr.rtype] for rr in reply.rr] == ["CNAME", "A"]
    assert str(reply.rr[1].rname) == "search.example.com." and addresses(reply) == {"10.1.1.1"}
    assert reply.header.rcode == RCODE.NOERROR and not reply.header.aa
    assert fake.asked == [("search.example.com.", "A")]


async def test_a_missing_name_under_rancher_internal_is_nxdomain_never_forwarded(
        tmp_path: Path) -> None:
    async with upstream() as (fake, port), responder(tmp_path, port) as server:
        reply = await ask(server, "nope.s1.rancher.internal")
        aaaa = await ask(server, "db.s1.rancher.internal", "AAAA")
    assert reply.header.rcode == RCODE.NXDOMAIN and reply.header.aa and reply.rr == []
    assert aaaa.header.rcode == RCODE.NOERROR and aaaa.rr == []
    assert fake.asked == []


async def test_other_names_are_forwarded_and_the_reply_relayed(tmp_path: Path) -> None:
    async with upstream() as (fake, port), responder(tmp_path, port) as server:
        found = await ask(server, "Example.COM")
        missing = await ask(server, "nowhere.example.net", "MX")
        assert server.counters.forwarded == 2
    assert addresses(found) == {"93.184.216.34"} and found.rr[0].ttl == 300
    assert missing.header.rcode == RCODE.NXDOMAIN
    assert fake.asked == [("Example.COM.", "A"), ("nowhere.example.net.", "MX")]


async def test_a_dead_upstream_is_servfail(tmp_path: Path) -> None:
    async with upstream() as (_, port):
        pass  # closed: the port refuses
    async with responder(tmp_path, port) as server:
        reply = await ask(server, "example.com")
        cname = await ask(server, "search.s1.rancher.internal")
        assert server.counters.failed == 2
    assert reply.header.rcode == RCODE.SERVFAIL and cname.header.rcode == RCODE.SERVFAIL


async def test_an_upstream_that_does_not_answer_in_time_gives_way_to_the_next(
        tmp_path: Path) -> None:
    async with upstream("127.0.0.2") as (fake, port), \
            upstream(HOST, port, silent=True) as (silent, _), \
            responder(tmp_path, port, HOST, "127.0.0.2", upstream_timeout=0.2) as server:
        reply = await ask(server, "example.com")
    assert addresses(reply) == {"93.184.216.34"}
    assert silent.asked == fake.asked == [("example.com.", "A")]


async def test_tcp_queries_are_answered_and_forwarded_over_tcp(tmp_path: Path) -> None:
    async with upstream() as (fake, port), responder(tmp_path, port) as server:
        ours = await ask(server, "db", tcp=True)
        theirs = await ask(server, "example.com", tcp=True)
        big = await ask(server, "big.s1.rancher.internal", tcp=True)
    assert addresses(ours) == {"10.42.0.5", "10.42.1.6"}
    assert addresses(theirs) == {"93.184.216.34"} and fake.asked == [("example.com.", "A")]
    assert len(big.rr) == 100 and not big.header.tc


async def test_a_udp_answer_over_512_bytes_is_truncated_unless_edns_allows_it(
        tmp_path: Path) -> None:
    async with upstream() as (_, port), responder(tmp_path, port) as server:
        plain = await ask(server, "big.s1.rancher.internal")
        edns = await ask(server, "big.s1.rancher.internal", edns=4096)
    assert plain.header.tc and plain.rr == [] and str(plain.q.qname) == \
        "big.s1.rancher.internal."
    assert not edns.header.tc and len(edns.rr) == 100
    assert [QTYPE[rr.rtype] for rr in edns.ar] == ["OPT"]


async def test_a_malformed_packet_is_dropped_and_the_responder_goes_on(tmp_path: Path) -> None:
    async with upstream() as (_, port), responder(tmp_path, port) as server:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for junk in (b"\x00", b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff",
                         bytes(DNSRecord.question("x").reply().pack())):
                sock.sendto(junk, (HOST, server.port))
        reply = await ask(server, "db")
        # Datagrams from two sockets may be read in either order: the junk is counted soon.
        for _ in range(500):
            if server.counters.malformed >= 3:
                break
            await asyncio.sleep(0.01)
        assert server.counters.malformed == 3
    assert addresses(reply) == {"10.42.0.5", "10.42.1.6"}


async def test_a_packet_without_a_question_is_formerr(tmp_path: Path) -> None:
    async with upstream() as (_, port), responder(tmp_path, port) as server:
        empty = DNSRecord()
        data = await asyncio.to_thread(empty.send, HOST, server.port, False, WAIT)
    reply = DNSRecord.parse(data)
    assert reply.header.rcode == RCODE.FORMERR and reply.questions == []


async def test_apply_swaps_the_table_for_the_next_query(tmp_path: Path) -> None:
    async with upstream() as (_, port), responder(tmp_path, port) as server:
        before = await ask(server, "db")
        server.apply(table(version="v2", names={
            "db.s1.rancher.internal": {"addresses": ["10.42.5.5"]}}))
        after = await ask(server, "db")
        gone = await ask(server, "alias.s1.rancher.internal")
    assert addresses(before) == {"10.42.0.5", "10.42.1.6"}
    assert addresses(after) == {"10.42.5.5"} and gone.header.rcode == RCODE.NXDOMAIN


async def test_forwarded_queries_in_flight_are_bounded(tmp_path: Path) -> None:
    async with upstream(silent=True) as (silent, port), \
            responder(tmp_path, port, max_forwards=1, upstream_timeout=WAIT) as server:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # asks, never waits
            sock.sendto(bytes(DNSRecord.question("example.com").pack()), (HOST, server.port))
            async with asyncio.timeout(WAIT):
                while not silent.asked:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            refused = await ask(server, "example.org")
            ours = await ask(server, "db")
        assert server.counters.refused == 1
    assert refused.header.rcode == RCODE.SERVFAIL and addresses(ours)
    assert silent.asked == [("example.com.", "A")]


async def test_a_restarted_responder_keeps_its_table(tmp_path: Path) -> None:
    async with upstream() as (_, port), responder(tmp_path, port) as server:
        await server.stop()
        assert not server.running
        await server.start()
        reply = await ask(server, "db")
    assert addresses(reply) == {"10.42.0.5", "10.42.1.6"}


async def test_before_any_table_our_names_are_servfail(tmp_path: Path) -> None:
    async with upstream() as (_, port), responder(tmp_path, port) as server:
        server.apply(Table())
        reply = await ask(server, "db.s1.rancher.internal")
    assert reply.header.rcode == RCODE.SERVFAIL


def test_resolv_conf_gives_its_nameservers_in_order() -> None:
    text = ("# generated\nsearch example.com\nnameserver 127.0.0.53\nnameserver  fd00::1\n"
            "nameserver bogus\noptions edns0\nnameserver 10.0.0.2 # trailing\n")
    assert read_resolv_conf(text) == ["127.0.0.53", "fd00::1", "10.0.0.2"]


def test_upstreams_skip_the_discovery_address_and_ourselves_and_follow_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dns_upstream, "RESOLV_CHECK_INTERVAL", 0.0)
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 169.254.169.250\nnameserver 127.0.0.1\nnameserver 127.0.0.53\n")
    upstreams = Upstreams(path, 53, [("127.0.0.1", 53)])
    assert upstreams.current() == [("127.0.0.53", 53)]
    path.write_text("nameserver 10.0.0.2\nnameserver 10.0.0.3\n")
    assert upstreams.current() == [("10.0.0.2", 53), ("10.0.0.3", 53)]
    path.unlink()
    assert upstreams.current() == []
