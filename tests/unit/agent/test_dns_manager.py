"""The DnsManager: tables are kept from the first apply, the responder binds once the managed
network is set up (a real NetworkManager on the simulated host), binding is retried every
interval with one warning, and a restarted responder answers from the last table."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from dnslib import QTYPE, DNSRecord

from agent.dns.manager import DnsManager, NoDns
from agent.dns.resolve import Table
from agent.dns.server import DnsServer
from agent.network.manager import NetworkManager, NoNetwork
from agent.network.overlay import Overlay
from shared.discovery import DnsApplied, DnsApply
from shared.errors import InstructionError
from shared.overlay import NetworkApply
from tests.support.timing import seconds
from tests.unit.agent.test_overlay_plan import FakeHost

WAIT = seconds(5)  # reached only when something is broken
INTERVAL = 0.01
TABLE: dict[str, Any] = {
    "version": "v1",
    "names": {"db.s1.rancher.internal": {"addresses": ["10.42.0.5"]}},
    "clients": {"127.0.0.1": {"stack": "s1", "aliases": {}}},
}
NETWORK = NetworkApply(subnet="10.42.1.0/24", underlay_ip="10.99.0.1", pool="10.42.0.0/16",
                       vni=42, port=4789, mtu=1450, version="n1")


class FakeResponder:
    """Records starts and tables; its first ``failures`` starts cannot bind."""

    host = "169.254.169.250"
    port = 53

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.starts = 0
        self.stops = 0
        self.tables: list[Table] = []

    async def start(self) -> None:
        self.starts += 1
        if self.failures:
            self.failures -= 1
            raise OSError(99, "Cannot assign requested address")

    async def stop(self) -> None:
        self.stops += 1

    def apply(self, table: Table) -> None:
        self.tables.append(table)


def request(version: str = "v1") -> DnsApply:
    return DnsApply.parse({**TABLE, "version": version})


async def listening(manager: DnsManager) -> None:
    await asyncio.wait_for(manager.wait_listening(), WAIT)


async def test_a_table_applied_before_the_responder_listens_is_kept_and_acknowledged() -> None:
    responder = FakeResponder()
    manager = DnsManager(NoNetwork(), responder, retry_interval=INTERVAL)
    assert manager.version is None
    assert await manager.apply(request("v1")) == DnsApplied("v1")
    assert manager.version == "v1" and not manager.listening
    assert [t.version for t in responder.tables] == ["v1"]
    assert "db.s1.rancher.internal" in responder.tables[0].names


async def test_the_responder_binds_only_once_the_managed_network_is_set_up() -> None:
    network = NetworkManager(Overlay(FakeHost()))
    responder = FakeResponder()
    manager = DnsManager(network, responder, retry_interval=INTERVAL)
    manager.start()
    try:
        await asyncio.sleep(INTERVAL * 5)
        assert responder.starts == 0
        await network.apply(NETWORK)
        await listening(manager)
        assert responder.starts == 1
    finally:
        await manager.stop()


async def test_a_network_that_refuses_at_once_is_asked_again_without_spinning() -> None:
    class Counting(NoNetwork):
        asked = 0

        async def wait_ready(self, timeout: float) -> None:
            Counting.asked += 1
            await super().wait_ready(timeout)

    manager = DnsManager(Counting(), FakeResponder(), retry_interval=INTERVAL)
    manager.start()
    await asyncio.sleep(INTERVAL * 5)
    await manager.stop()
    assert 1 <= Counting.asked <= 10


async def test_binding_is_retried_every_interval_and_warned_about_once(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    network = NetworkManager(Overlay(FakeHost()))
    await network.apply(NETWORK)
    responder = FakeResponder(failures=3)
    manager = DnsManager(network, responder, retry_interval=INTERVAL)
    manager.start()
    try:
        await listening(manager)
    finally:
        await manager.stop()
    assert responder.starts == 4
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "cannot listen on 169.254.169.250 port 53 yet (Cannot assign requested address)" \
        in warnings[0]
    assert any("answering on 169.254.169.250 port 53" in r.getMessage() for r in caplog.records)


async def test_stop_stops_the_responder_and_a_new_start_keeps_the_table() -> None:
    network = NetworkManager(Overlay(FakeHost()))
    await network.apply(NETWORK)
    responder = FakeResponder()
    manager = DnsManager(network, responder, retry_interval=INTERVAL)
    await manager.apply(request("v1"))
    manager.start()
    await listening(manager)
    await manager.stop()
    assert responder.stops == 1 and not manager.listening
    manager.start()
    await listening(manager)
    await manager.stop()
    assert responder.starts == 2 and manager.version == "v1"
    assert [t.version for t in responder.tables] == ["v1"]


async def test_the_real_responder_answers_from_the_latest_table_after_a_restart(
        tmp_path: Path) -> None:
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_text("")
    network = NetworkManager(Overlay(FakeHost()))
    await network.apply(NETWORK)
    server = DnsServer("127.0.0.1", 0, resolv_conf=resolv_conf)
    manager = DnsManager(network, server, retry_interval=INTERVAL)
    manager.start()
    try:
        await listening(manager)
        await manager.apply(request("v1"))
        await manager.apply(DnsApply.parse({**TABLE, "version": "v2", "names": {
            "db.s1.rancher.internal": {"addresses": ["10.42.7.7"]}}}))
        await manager.stop()
        manager.start()
        await listening(manager)
        data = await asyncio.to_thread(DNSRecord.question("db").send, "127.0.0.1",
                                       server.port, False, WAIT)
    finally:
        await manager.stop()
    reply = DNSRecord.parse(data)
    assert [(QTYPE[rr.rtype], str(rr.rdata)) for rr in reply.rr] == [("A", "10.42.7.7")]


async def test_an_agent_without_discovery_dns_refuses_dns_apply() -> None:
    with pytest.raises(InstructionError, match="does not run the service discovery DNS"):
        await NoDns().apply(request())
