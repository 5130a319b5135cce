"""Where a load balancer's instances go (pure): one a host, scale hosts or every host, never
beside another balancer's port, kept through a short disconnection."""

from __future__ import annotations

from server.engine.lb_placement import LbHost, Placed, place
from server.engine.service_units import HostView


def host(host_id: int, *, active: bool = True, lost: bool = False,
         ports: frozenset[int] = frozenset(), balancers: int = 0,
         taking_part: bool = True) -> LbHost:
    return LbHost(HostView(host_id, active=active, lost=lost), taking_part=taking_part,
                  ports=ports, balancers=balancers)


HOSTS = {1: host(1), 2: host(2), 3: host(3)}


def test_scale_places_one_instance_a_host_on_the_least_loaded() -> None:
    hosts = {**HOSTS, 1: host(1, balancers=2)}
    plan = place(running=True, scale=2, global_=False, ports={80}, instances=[], hosts=hosts)
    assert plan.create == [(1, 2), (2, 3)]
    assert plan.short == 0


def test_a_host_where_another_balancer_holds_the_port_is_passed_over() -> None:
    hosts = {**HOSTS, 2: host(2, ports=frozenset({80, 443}))}
    plan = place(running=True, scale=3, global_=False, ports={443}, instances=[], hosts=hosts)
    assert [h for _, h in plan.create] == [1, 3]
    assert plan.short == 1  # no third host can take it


def test_hosts_that_cannot_run_a_balancer_are_passed_over() -> None:
    hosts = {1: host(1, active=False), 2: host(2, taking_part=False), 3: host(3)}
    plan = place(running=True, scale=3, global_=False, ports=set(), instances=[], hosts=hosts)
    assert plan.create == [(1, 3)]


def test_a_disconnected_host_keeps_its_instance_until_it_is_lost() -> None:
    away = {**HOSTS, 1: host(1, active=False)}
    kept = place(running=True, scale=1, global_=False, ports=set(),
                 instances=[Placed(10, 1, 1)], hosts=away)
    assert kept.create == [] and kept.remove == []
    lost = {**HOSTS, 1: host(1, active=False, lost=True)}
    moved = place(running=True, scale=1, global_=False, ports=set(),
                  instances=[Placed(10, 1, 1)], hosts=lost)
    assert moved.remove == [10]
    assert moved.create == [(1, 2)]  # the index of the instance removed at once


def test_scale_down_removes_instances_of_hosts_that_are_not_active_then_the_newest() -> None:
    hosts = {**HOSTS, 2: host(2, active=False)}
    instances = [Placed(10, 1, 1), Placed(11, 2, 2), Placed(12, 3, 3)]
    plan = place(running=True, scale=1, global_=False, ports=set(), instances=instances,
                 hosts=hosts)
    assert plan.remove == [11, 12]


def test_global_runs_one_on_every_host_and_removes_a_second_one() -> None:
    instances = [Placed(10, 1, 1), Placed(11, 1, 2)]
    plan = place(running=True, scale=1, global_=True, ports=set(), instances=instances,
                 hosts=HOSTS)
    assert plan.remove == [11]
    assert plan.create == [(2, 2), (3, 3)]


def test_a_balancer_not_running_has_no_instances() -> None:
    plan = place(running=False, scale=2, global_=False, ports=set(),
                 instances=[Placed(10, 1, 1)], hosts=HOSTS)
    assert plan.remove == [10] and plan.create == []
