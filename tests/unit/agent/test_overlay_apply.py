"""The overlay's I/O side: observe, run the plan, verify, tear down (on the simulated host of
test_overlay_plan); failing commands as one-line errors (real child processes); the parsers on
output recorded from iproute2 6.1 and iptables 1.8.9; the ``python -m agent.network`` input."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from agent.network.__main__ import read_description
from agent.network.errors import CommandFailed, OverlayError
from agent.network.overlay import Overlay, SubprocessRunner, docker_cli, observe
from agent.network.plan import policy_jump, policy_rules
from agent.network.state import (
    FdbEntry,
    Neighbour,
    Route,
    Vxlan,
    parse_fdb,
    parse_links,
    parse_neighbours,
    parse_routes,
    parse_table,
)
from tests.unit.agent.test_overlay_plan import CONFIG, FRESH_PLAN, P2, P3, WEB, FakeHost


async def test_apply_runs_the_plan_and_applying_again_runs_nothing() -> None:
    host = FakeHost()
    overlay = Overlay(host)
    assert await overlay.apply(CONFIG, [P2, P3]) == FRESH_PLAN
    assert await overlay.apply(CONFIG, [P2, P3]) == []
    assert [c[:3] for c in await overlay.pending(CONFIG, [P2])] == [
        ("ip", "route", "del"), ("ip", "neigh", "del"), ("bridge", "fdb", "del")]


async def test_observe_reads_what_the_commands_print() -> None:
    host = FakeHost()
    await Overlay(host).apply(CONFIG, [P2])
    observed = await observe(host)
    assert observed == host.observed()
    assert observed.network is not None and observed.network.subnets == (
        ("10.42.1.0/24", "10.42.1.1"),)


async def test_a_host_that_does_not_converge_is_an_error() -> None:
    class Forgetful(FakeHost):
        def execute(self, c: tuple[str, ...]) -> None:
            if c[:2] != ("bridge", "fdb"):
                super().execute(c)

    with pytest.raises(OverlayError, match="did not converge; still to do: bridge fdb replace "
                                           "0e:42:0a:2a:02:00"):
        await Overlay(Forgetful()).apply(CONFIG, [P2])


async def test_invalid_peers_change_nothing() -> None:
    host = FakeHost()
    with pytest.raises(ValueError):
        await Overlay(host).apply(CONFIG, [P2, P2.__class__(P2.subnet, CONFIG.underlay_ip)])
    assert host.ran == []


async def test_teardown_leaves_a_stock_host_and_is_idempotent() -> None:
    host = FakeHost()
    overlay = Overlay(host)
    await overlay.apply(CONFIG, [P2, P3])
    assert len(await overlay.teardown()) == 8
    await overlay.apply(WEB, [P2])
    assert len(await overlay.teardown()) == 10
    assert host.tables == FakeHost().tables and not host.networks
    assert await overlay.teardown() == []


async def test_teardown_goes_on_past_a_network_in_use_and_raises_its_failure_after() -> None:
    host = FakeHost()
    await Overlay(host).apply(WEB, [P2])

    class InUse(FakeHost):
        async def run(self, argv: Sequence[str]) -> str:
            if tuple(argv[:3]) == ("docker", "network", "rm"):
                raise CommandFailed(argv, 1, "network corral-managed has active endpoints")
            return await host.run(argv)

    with pytest.raises(CommandFailed, match="has active endpoints"):
        await Overlay(InUse()).teardown()
    assert host.tables == FakeHost().tables and "corral-vx" not in host.links
    assert "corral-managed" in host.networks


async def test_the_first_failing_command_stops_the_plan_and_names_itself() -> None:
    host = FakeHost()
    host.networks["corral-managed"] = {"subnet": "10.42.9.0/24", "gateway": "10.42.9.1",
                                       "options": {}, "driver": "bridge"}

    class InUse(FakeHost):
        async def run(self, argv: Sequence[str]) -> str:
            if tuple(argv[:3]) == ("docker", "network", "rm"):
                raise CommandFailed(argv, 1, "Error response from daemon: error while removing "
                                    "network: network corral-managed id 1 has active endpoints\n")
            return await host.run(argv)

    with pytest.raises(CommandFailed) as caught:
        await Overlay(InUse()).apply(CONFIG, [P2])
    assert str(caught.value) == (
        "Command `docker network rm corral-managed` failed (exit 1): Error response from daemon: "
        "error while removing network: network corral-managed id 1 has active endpoints.")
    assert "corral-vx" in host.links  # what ran before stays; applying again goes on


# real child processes


async def test_a_failing_command_carries_its_argv_and_one_line_of_its_stderr() -> None:
    script = "echo 'iptables: No chain/target/match by that name.' >&2; " \
             "echo \"Try \\`iptables -h' for more information.\" >&2; exit 1"
    with pytest.raises(CommandFailed) as caught:
        await SubprocessRunner().run(["sh", "-c", script])
    assert caught.value.returncode == 1
    assert caught.value.detail == "iptables: No chain/target/match by that name"
    assert str(caught.value).startswith("Command `sh -c ")
    assert "\n" not in str(caught.value)


async def test_a_command_that_hangs_is_killed_after_the_timeout() -> None:
    with pytest.raises(CommandFailed, match=r"timed out: no answer within 0\.2 s"):
        await SubprocessRunner(timeout=0.2).run(["sleep", "10"])


async def test_a_missing_program_is_a_failed_command() -> None:
    with pytest.raises(CommandFailed, match="failed \\(exit 127\\): no-such-ip: No such file"):
        await SubprocessRunner().run(["no-such-ip", "link"])


async def test_a_command_prints_its_output() -> None:
    assert await SubprocessRunner().run(["echo", "hello"]) == "hello\n"


def test_docker_commands_reach_the_agents_engine_with_docker_pys_tls_meaning() -> None:
    assert docker_cli({}) == ["docker", "-H", "unix:///var/run/docker.sock"]
    assert docker_cli({"DOCKER_HOST": "unix:///run/d.sock"}) == ["docker", "-H",
                                                                "unix:///run/d.sock"]
    assert docker_cli({"DOCKER_HOST": "tcp://h:2376", "DOCKER_TLS_VERIFY": "1",
                       "DOCKER_CERT_PATH": "/c/"}) == [
        "docker", "-H", "tcp://h:2376", "--tlscert", "/c/cert.pem", "--tlskey", "/c/key.pem",
        "--tlsverify", "--tlscacert", "/c/ca.pem"]
    assert docker_cli({"DOCKER_HOST": "tcp://h:2376", "DOCKER_CERT_PATH": "/c"})[-1] == "--tls"


# parsers, on recorded output

VXLAN_LINK = """[{"ifindex":4,"ifname":"corral-vx","flags":["BROADCAST","MULTICAST","UP",
"LOWER_UP"],"mtu":1450,"operstate":"UNKNOWN","link_type":"ether","address":"0e:42:0a:2a:01:00",
"linkinfo":{"info_kind":"vxlan","info_data":{"id":42,"local":"10.99.0.1","link":"eth0",
"port_range":{"low":0,"high":0},"port":4789,"learning":false,"ttl":0}},
"addr_info":[{"family":"inet","local":"10.42.1.0","prefixlen":32,"scope":"global"},
{"family":"inet6","local":"fe80::c42:aff:fe2a:100","prefixlen":64,"scope":"link"}]},
{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP"],"mtu":65536,"addr_info":[]}]"""


def test_links_parse_with_their_vxlan_settings_and_ipv4_addresses() -> None:
    vx, lo = parse_links(VXLAN_LINK)
    assert (vx.name, vx.kind, vx.mac, vx.mtu, vx.up, vx.addresses) == (
        "corral-vx", "vxlan", "0e:42:0a:2a:01:00", 1450, True, frozenset({"10.42.1.0/32"}))
    assert vx.vxlan == Vxlan(vni=42, local="10.99.0.1", port=4789, underlay_device="eth0",
                             learning=False)
    assert lo.kind is None and lo.vxlan is None


def test_routes_neighbours_and_fdb_parse() -> None:
    assert parse_routes('[{"dst":"10.42.2.0/24","gateway":"10.42.2.0","flags":["onlink"]},'
                        '{"dst":"10.42.9.9","flags":[]}]') == (
        Route("10.42.2.0/24", "10.42.2.0", True), Route("10.42.9.9/32", None, False))
    assert parse_neighbours('[{"dst":"10.42.2.0","lladdr":"0e:42:0a:2a:02:00",'
                            '"state":["PERMANENT"]},{"dst":"10.42.3.0","state":["FAILED"]}]') == (
        Neighbour("10.42.2.0", "0e:42:0a:2a:02:00", True), Neighbour("10.42.3.0", None, False))
    assert parse_fdb('[{"mac":"0e:42:0a:2a:02:00","dst":"10.99.0.2","flags":["self"],'
                     '"state":"permanent"}]') == (FdbEntry("0e:42:0a:2a:02:00", "10.99.0.2",
                                                           True),)
    assert parse_routes("") == ()


def test_an_iptables_table_parses_into_chains_and_rules() -> None:
    table = parse_table('-P FORWARD DROP\n-N DOCKER-USER\n-N CORRAL-NAT\n'
                        '-A FORWARD -j DOCKER-USER\n'
                        '-A DOCKER-USER -m comment --comment "a b" -j ACCEPT\n'
                        '-A CORRAL-NAT -s 10.42.3.0/24 ! -d 10.42.0.0/16 -j MASQUERADE\n')
    assert table.rules("FORWARD") == (("-j", "DOCKER-USER"),)
    assert table.rules("DOCKER-USER") == (("-m", "comment", "--comment", "a b", "-j",
                                           "ACCEPT"),)
    assert table.rules("CORRAL-NAT") == (("-s", "10.42.3.0/24", "!", "-d", "10.42.0.0/16",
                                          "-j", "MASQUERADE"),)
    assert table.rules("CORRAL-FORWARD") is None


def test_the_policy_chain_as_iptables_prints_it_is_what_the_planner_writes() -> None:
    """Printed by iptables 1.8.9 (nf_tables) after ``-A`` of the planner's rules, some of
    them written without /32 or -m tcp."""
    printed = parse_table(
        "-N CORRAL-FORWARD\n-N CORRAL-POLICY\n"
        "-A CORRAL-FORWARD -o corral0 -j CORRAL-POLICY\n"
        "-A CORRAL-POLICY -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n"
        "-A CORRAL-POLICY -s 10.42.2.5/32 -d 10.42.1.3/32 -p tcp -m tcp --dport 80 -j ACCEPT\n"
        "-A CORRAL-POLICY -s 10.42.2.5/32 -d 10.42.1.3/32 -p udp -m udp --dport 53 -j ACCEPT\n"
        "-A CORRAL-POLICY -s 10.42.3.7/32 -d 10.42.1.3/32 -p tcp -m tcp --dport 80 -j ACCEPT\n"
        "-A CORRAL-POLICY -s 10.42.3.7/32 -d 10.42.1.3/32 -p udp -m udp --dport 53 -j ACCEPT\n"
        "-A CORRAL-POLICY -s 10.42.2.0/24 -d 10.42.1.4/32 -j ACCEPT\n"
        "-A CORRAL-POLICY -s 10.42.0.0/16 -d 10.42.1.0/24 -j DROP\n")
    assert printed.rules("CORRAL-POLICY") == policy_rules(WEB)
    assert printed.rules("CORRAL-FORWARD") == (policy_jump(WEB),)


def test_unexpected_output_is_an_error_naming_the_command() -> None:
    with pytest.raises(ValueError, match="`ip -4 -j route show` printed something that is not"):
        parse_routes("Device does not exist")
    with pytest.raises(ValueError, match="`iptables -S` printed an unexpected line"):
        parse_table("-X nonsense\n")


def test_iptables_nft_warnings_in_its_output_are_skipped() -> None:
    table = parse_table("-P INPUT ACCEPT\n# Warning: iptables-legacy tables present, use "
                        "iptables-legacy to see them\n")
    assert table.chains == {"INPUT": ()}


def test_the_command_line_description_reads_settings_and_peers() -> None:
    config, peers = read_description({"underlayIp": "10.99.0.1", "subnet": "10.42.1.0/24",
                                      "peers": [{"subnet": "10.42.2.0/24",
                                                 "underlayIp": "10.99.0.2"}]})
    assert (config, peers) == (CONFIG, [P2])
    with pytest.raises(ValueError, match="Subnet '' is not an IPv4 network"):
        read_description({"underlayIp": "10.99.0.1"})


async def test_an_underlay_with_a_smaller_mtu_gets_a_vxlan_mtu_it_can_carry() -> None:
    """A cloud network's 1400 bytes cannot carry 1450-byte VXLAN frames: the kernel refuses
    that MTU, so the device and the Docker network take 1400 less VXLAN's 50 bytes."""
    host = FakeHost()
    host.links["eth0"]["mtu"] = 1400
    commands = await Overlay(host).apply(CONFIG, [P2])
    created = next(c for c in commands if c[:3] == ("ip", "link", "add"))
    assert created[created.index("mtu") + 1] == "1350"
    network = next(c for c in commands if c[:3] == ("docker", "network", "create"))
    assert "com.docker.network.driver.mtu=1350" in network
    assert await Overlay(host).pending(CONFIG, [P2]) == []
