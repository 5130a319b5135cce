"""The managed network end to end: a Corral server in the root namespace and real agents on
simulated hosts (scripts/overlay-hosts.sh: namespaces on one underlay switch, each with its own
dockerd and FORWARD DROP, as a stock host has). Containers launched through the API on the
default network reach each other across hosts by their managed addresses with their real source
address; policy, host removal, a host added later and a dockerd restart follow."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.simhosts import (
    Overlay,
    fetch,
    overlay_hosts,
    ping,
    seen_source,
    simulated_hosts,
)
from tests.support.timing import seconds, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def overlay(docker_engine: None, tmp_path: Path) -> Iterator[Overlay]:
    with simulated_hosts(tmp_path, 4, agents=3) as running:
        yield running


def test_the_managed_network_across_hosts(overlay: Overlay) -> None:
    h1, h2, h3, h4 = overlay.hosts
    web = {h.index: overlay.launch(h, f"web-{h.index}", {"io.rancher.stack.name": "shop"})
           for h in (h1, h2, h3)}
    assert len(set(web.values())) == 3

    # Every container reaches the others by their managed addresses, and the receiver sees
    # the sender's own address (no NAT on the way).
    for sender in (h1, h2, h3):
        for receiver in (h1, h2, h3):
            if receiver is sender:
                continue
            name, target = f"web-{sender.index}", web[receiver.index]
            wait_for(partial(ping, sender, name, target), 15,
                     f"{name} to reach {target}")
            assert fetch(sender, name, f"http://{target}/").stdout == "hello\n"
            assert seen_source(sender, name, target) == web[sender.index]

    # Policy: deny by default, allow within a stack. A container of another stack on h2
    # cannot connect to h1's; the one of the same stack can.
    managed = overlay.api("GET", "/networks?name=managed")["data"][0]
    overlay.api("PUT", f"/networks/{managed['id']}", json={
        "defaultPolicyAction": "deny", "policy": [{"within": "stack", "action": "allow"}]})
    outsider = overlay.launch(h2, "other-2", {"io.rancher.stack.name": "other"})
    wait_for(lambda: seen_source(h2, "other-2", web[1]) is None, 10,
             "the other stack's container to be refused")
    assert seen_source(h2, "web-2", web[1]) == web[2]
    assert seen_source(h3, "web-3", web[2]) == web[3]
    assert seen_source(h2, "web-2", outsider) is None  # nor the same host across stacks
    # Back to allow: the outsider gets through again, within 2 s of the change.
    overlay.api("PUT", f"/networks/{managed['id']}",
                json={"defaultPolicyAction": "allow", "policy": []})
    wait_for(lambda: seen_source(h2, "other-2", web[1]) == outsider, 10,
             "the other stack's container to get through again")

    # A host added later reaches and is reached.
    overlay.start_agent(h4)
    web[4] = overlay.launch(h4, "web-4")
    wait_for(partial(ping, h4, "web-4", web[1]), 15, "h4 to reach h1")
    assert seen_source(h1, "web-1", web[4]) == web[1]
    assert seen_source(h4, "web-4", web[3]) == web[4]

    # h3 removed (and purged): the others drop its entries within 10 s, and h3's agent
    # removes what it had set up.
    overlay.api("POST", f"/hosts/{h3.host_id}?action=deactivate")
    overlay.api("POST", f"/hosts/{h3.host_id}?action=remove")
    h3_subnet = str(ipaddress.ip_network(f"{web[3]}/24", strict=False))

    def forgotten() -> bool:
        return all(h3_subnet not in h.run("ip", "route", "show", "dev", "corral-vx").stdout
                   for h in (h1, h2, h4))

    wait_for(forgotten, 10, "the other hosts to drop h3's route")
    assert h3.agent is not None
    h3.agent.wait(timeout=seconds(30))
    assert "CORRAL" not in h3.run("iptables", "-S").stdout
    assert h3.run("ip", "link", "show", "corral-vx", check=False).returncode != 0
    assert seen_source(h1, "web-1", web[2]) == web[1]

    # A dockerd restart on h2: its container, once started again, is reachable.
    restart = overlay_hosts("restart-docker", "2")
    assert restart.returncode == 0, restart.stderr
    container = overlay.api("GET", "/containers?name=web-2")["data"][0]

    def started_again() -> bool:
        found = overlay.api("GET", f"/containers/{container['id']}")
        if found["state"] == "stopped":
            overlay.api("POST", f"/containers/{container['id']}?action=start")
        return bool(found["state"] == "running")

    wait_for(started_again, 60, "web-2 to run again")
    wait_for(lambda: seen_source(h1, "web-1", web[2]) == web[1], 20,
             "web-2 to be reachable after the restart")
    assert seen_source(h2, "web-2", web[4]) == web[2]
    assert overlay.network_state(h2)[0] != "error"


def test_a_host_that_cannot_be_programmed_shows_the_error(overlay: Overlay) -> None:
    h1 = overlay.hosts[0]
    # The agent's VXLAN port taken by the driver's options (an invalid one is refused by
    # the API): use a port some other VXLAN device on h1 already holds.
    h1.run("ip", "link", "add", "squat", "type", "vxlan", "id", "7", "dstport", "4790",
           "local", h1.ip, "dev", "eth0")
    try:
        driver = overlay.api("GET", "/networkdrivers?name=vxlan")["data"][0]
        overlay.api("PUT", f"/networkdrivers/{driver['id']}",
                    json={"networkMetadata": {"port": 4790, "vni": 7}})

        def failed() -> Any:
            state, message = overlay.network_state(h1)
            return message if state == "error" else None

        message = wait_for(failed, 20, "h1 to show its network error")
        assert "File exists" in message or "exists" in message.lower(), message
        assert overlay.server.api("GET", "/hosts").status_code == 200
    finally:
        h1.run("ip", "link", "del", "squat", check=False)
