"""Which balancer changes HAProxy takes through its admin socket, and the commands
(``agent.lb.runtime``); what ``show proc`` says (``agent.lb.process.Processes``)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agent.lb.process import HaproxyError, Processes
from agent.lb.runtime import RuntimePlan, delete_commands, plan, succeeded
from shared.haproxy_config import Paths
from shared.lb import Backend, BackendCheck, Balancer, PortRule, Server, Stickiness

PATHS = Paths.under("/var/lib/corral/lb/u1")


def lb(*servers: Server, check: BackendCheck | None = None, **kw: object) -> Balancer:
    base = Balancer(uuid="u1", name="web", config_version="1",
                    rules=(PortRule(80, "http", "web"),),
                    backends=(Backend("web", "http", servers, check),))
    return replace(base, **kw)  # type: ignore[arg-type]


A = Server("a", "10.42.0.1", 80)
B = Server("b", "10.42.0.2", 80)


def test_the_same_servers_need_no_command() -> None:
    change = plan(lb(A, B), lb(A, B, config_version="2"), PATHS)
    assert change == RuntimePlan((), ()) and change.empty


def test_an_address_or_port_change_is_set_server_addr() -> None:
    change = plan(lb(A), lb(replace(A, address="10.42.0.9", port=8080)), PATHS)
    assert change == RuntimePlan(("set server web/a addr 10.42.0.9 port 8080",), ())


def test_draining_is_a_weight_of_zero_and_back() -> None:
    assert plan(lb(A), lb(replace(A, draining=True)), PATHS) == RuntimePlan(
        ("set server web/a weight 0",), ())
    assert plan(lb(replace(A, draining=True)), lb(A), PATHS) == RuntimePlan(
        ("set server web/a weight 1",), ())


def test_a_new_server_is_added_then_let_in_with_its_check() -> None:
    check = BackendCheck(8080, interval_ms=1000)
    change = plan(lb(A, check=check), lb(A, B, check=check), PATHS)
    assert change is not None
    assert change.commands == (
        "add server web/b 10.42.0.2:80 check port 8080 inter 1000ms rise 2 fall 3 maxconn 256",
        "set server web/b state ready", "enable health web/b")


def test_a_new_server_gets_its_cookie_and_its_draining_weight() -> None:
    sticky = Stickiness(cookie="SRV")
    change = plan(lb(A, stickiness=sticky), lb(A, replace(B, draining=True), stickiness=sticky),
                  PATHS)
    assert change is not None
    assert change.commands[0] == "add server web/b 10.42.0.2:80 weight 0 cookie b maxconn 256"


def test_a_server_that_goes_is_drained_then_deleted() -> None:
    assert plan(lb(A, B), lb(A), PATHS) == RuntimePlan((), ("web/b",))
    assert delete_commands("web/b") == ("set server web/b state maint",
                                        "shutdown sessions server web/b", "del server web/b")


@pytest.mark.parametrize("new", [
    lb(A, rules=(PortRule(80, "http", "web", path="/x"),)),
    lb(A, check=BackendCheck(80)),
    lb(A, stickiness=Stickiness(cookie="S")),
    lb(A, custom_config="backend web\n    balance leastconn\n"),
    lb(A, bind_address="10.0.0.1"),
])
def test_anything_but_servers_needs_a_reload(new: Balancer) -> None:
    assert plan(lb(A), new, PATHS) is None


@pytest.mark.parametrize(("answer", "ok"), [
    ("", True), ("\n", True), ("New server registered.\n", True), ("Server deleted.\n", True),
    ("IP changed from '10.0.0.1' to '10.0.0.2', port changed from '80' to '81' by 'stats "
     "socket command'\n", True),
    ("no need to change the addr, port changed from '80' to '81'", True),
    ("No such server.\n", False), ("Only servers in maintenance mode can be deleted.\n", False),
    ("Unknown command.", False)])
def test_the_answers_that_mean_a_command_worked(answer: str, ok: bool) -> None:
    assert succeeded(answer) is ok


SHOW_PROC = """#<PID>          <type>          <reloads>       <uptime>        <version>
12984           master          2 [failed: 1]   0d00h00m03s     2.6.12-1+deb12u3
# workers
13044           worker          0               0d00h00m00s     2.6.12-1+deb12u3
13031           worker          1               0d00h00m01s     2.6.12-1+deb12u3
# programs

"""


def test_show_proc_gives_the_reload_and_failure_counts_and_the_current_worker() -> None:
    processes = Processes.parse(SHOW_PROC)
    assert (processes.master, processes.reloads, processes.failed) == (12984, 2, 1)
    assert processes.current is not None and processes.current.pid == 13044
    assert len(processes.workers) == 2


def test_show_proc_while_no_worker_runs_has_no_current_one() -> None:
    processes = Processes.parse(SHOW_PROC.split("# workers")[0])
    assert processes.current is None


def test_an_answer_that_is_not_show_proc_is_an_error() -> None:
    with pytest.raises(HaproxyError, match="unexpected answer to show proc"):
        Processes.parse("Unknown command.\n")
