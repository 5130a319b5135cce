"""The load balancer controller on the engine with a fake hub: instances placed one a host,
each host sent its balancers with the targets' running containers as servers, agents'
reports recorded, and the servers following scale, drain and deactivation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from server import operations
from server.store import Condition, Query, Record
from shared import protocol
from shared.lb import LbApply
from tests.unit.server.engine.harness import Engine
from tests.unit.server.engine.test_services import at_scale, service, stack, until
from tests.unit.server.test_certificates import key_pem, make_cert, rsa_key


async def lb_host(engine: Engine, name: str) -> Record:
    return await engine.add_host(name, agentInstructions=["lb.apply"])


async def instances(engine: Engine, balancer: Record) -> list[Record]:
    return await engine.store.list(Query(
        types=["loadBalancerInstance"], project_id=engine.project.id, limit=100,
        conditions=[Condition("serviceId", "eq", balancer.id, "int"),
                    Condition("removed", "null")]))


def pushed(engine: Engine, host: Record) -> LbApply | None:
    sent = engine.hub.balancers.get(host.id)
    return LbApply.parse(sent[-1]) if sent else None


async def servers_on(engine: Engine, host: Record) -> Any:
    async def check() -> Any:
        payload = pushed(engine, host)
        if payload is None or not payload.balancers:
            return None
        (balancer,) = payload.balancers
        return balancer

    return await until(check, f"a balancer pushed to {host.name}")


async def balanced(engine: Engine, **body: Any) -> tuple[Record, Record]:
    the_stack = await stack(engine)
    web = await service(engine, the_stack, scale=2)
    await at_scale(engine, web, 2)
    lb = await operations.create(engine.caller, "loadBalancerService", {
        "name": "lb", "stackId": f"1st{the_stack.id}", "startOnCreate": True,
        "lbConfig": {"portRules": [{"sourcePort": 8081, "targetPort": 80,
                                    "serviceId": f"1s{web.id}"}]}, **body})
    return web, lb


async def test_instances_are_placed_one_a_host_and_sent_their_targets(engine: Engine) -> None:
    h1, h2 = await lb_host(engine, "h1"), await lb_host(engine, "h2")
    web, lb = await balanced(engine, scale=2)
    placed = await until(lambda: _count(engine, lb, 2), "two instances")
    assert {i.data["hostId"] for i in placed} == {h1.id, h2.id}
    assert all(i.state == "starting" and i.data["ports"] == ["8081:8081/tcp"] for i in placed)

    balancer = await servers_on(engine, h1)
    assert [r.source_port for r in balancer.rules] == [8081]
    (backend,) = balancer.backends
    containers = await at_scale(engine, web, 2)
    assert {(s.address, s.port) for s in backend.servers} == \
        {(c.data["primaryIpAddress"], 80) for c in containers}

    # The agent says it runs it: the instance is running and healthy, the balancer at scale.
    mine = next(i for i in placed if i.data["hostId"] == h1.id)
    requested = (await engine.get(mine)).data["requestedConfigVersion"]
    assert requested == balancer.config_version
    await engine.services.lb.on_report(h1.id, protocol.LbReport(results=[
        {"uuid": mine.uuid, "state": "running", "configVersion": requested, "pid": 42}]))
    mine = await engine.get(mine)
    assert (mine.state, mine.data["healthState"], mine.data["configVersion"]) == \
        ("running", "healthy", requested)
    # Another host's report about it is not taken.
    await engine.services.lb.on_report(h2.id, protocol.LbReport(results=[
        {"uuid": mine.uuid, "state": "error", "message": "no"}]))
    assert (await engine.get(mine)).state == "running"


async def _count(engine: Engine, lb: Record, count: int) -> list[Record] | None:
    found = await instances(engine, lb)
    return found if len(found) == count else None


async def _none(engine: Engine, lb: Record) -> bool:
    return not await instances(engine, lb)


async def test_a_refused_config_shows_on_the_instance_with_haproxy_s_message(
        engine: Engine) -> None:
    h1 = await lb_host(engine, "h1")
    _, lb = await balanced(engine)
    (instance,) = await until(lambda: _count(engine, lb, 1), "one instance")
    await engine.services.lb.on_report(h1.id, protocol.LbReport(results=[
        {"uuid": instance.uuid, "state": "error", "message": "unknown keyword 'x'"}]))
    instance = await engine.get(instance)
    assert instance.state == "error" and instance.transitioning == "error"
    assert instance.transitioning_message == "unknown keyword 'x'"
    assert instance.data["healthState"] == "unhealthy"


async def test_servers_follow_the_target_s_scale_and_drain(engine: Engine) -> None:
    h1 = await lb_host(engine, "h1")
    web, _ = await balanced(engine)
    await servers_on(engine, h1)
    await operations.update(engine.caller, await engine.get(web), {"scale": 1})

    async def servers(wanted: list[bool]) -> Any:
        balancer = await servers_on(engine, h1)
        found = sorted(s.draining for s in balancer.backends[0].servers)
        return found if found == wanted else None

    await until(lambda: servers([False, True]), "the surplus server draining")
    await until(lambda: servers([False]), "the drained server gone")


async def test_a_deactivated_balancer_runs_nowhere(engine: Engine) -> None:
    h1 = await lb_host(engine, "h1")
    _, lb = await balanced(engine)
    await until(lambda: _count(engine, lb, 1), "one instance")
    await engine.act(lb, "deactivate")
    await until(lambda: _none(engine, lb), "no instance")

    async def emptied() -> bool:
        payload = pushed(engine, h1)
        return payload is not None and payload.balancers == ()

    await until(emptied, "h1 told to run no balancer")


async def test_hosts_whose_agents_cannot_run_haproxy_get_no_instance(engine: Engine) -> None:
    await engine.add_host("old-agent")
    _, lb = await balanced(engine)
    await until(lambda: _settled(engine, lb), "the balancer summed up")
    assert await instances(engine, lb) == []


async def _settled(engine: Engine, lb: Record) -> bool:
    current = await engine.get(lb)
    return current.state == "active" and current.data.get("healthState") == "initializing"


async def test_a_removed_balancer_leaves_no_instance(engine: Engine) -> None:
    h1 = await lb_host(engine, "h1")
    _, lb = await balanced(engine)
    (instance,) = await until(lambda: _count(engine, lb, 1), "one instance")
    await operations.remove(engine.caller, await engine.get(lb))
    await until(lambda: _gone(engine, instance), "the instance removed")
    # The push follows the removal: the agent is told to run nothing.
    await until(lambda: _told_nothing(engine, h1), "an empty balancer list pushed")


async def _told_nothing(engine: Engine, host: Record) -> bool:
    payload = pushed(engine, host)
    return payload is not None and payload.balancers == ()


async def _gone(engine: Engine, record: Record) -> bool:
    current = await engine.store.get(record.id)
    return current is None or current.removed is not None


async def test_a_certificate_updated_reaches_every_balancer_that_serves_it(
        engine: Engine) -> None:
    h1 = await lb_host(engine, "h1")
    now = datetime.now(UTC)
    key = rsa_key()

    def cert(cn: str) -> str:
        return make_cert(key, cn=cn, not_before=now - timedelta(days=1),
                         not_after=now + timedelta(days=30))

    certificate = await operations.create(engine.caller, "certificate", {
        "name": "shop", "cert": cert("one.shop.test"), "key": key_pem(key)})
    the_stack = await stack(engine)
    web = await service(engine, the_stack)
    await at_scale(engine, web, 1)
    await operations.create(engine.caller, "loadBalancerService", {
        "name": "lb", "stackId": f"1st{the_stack.id}", "startOnCreate": True,
        "lbConfig": {"defaultCertificateId": f"1c{certificate.id}", "portRules": [
            {"sourcePort": 443, "protocol": "https", "targetPort": 80,
             "serviceId": f"1s{web.id}"}]}})
    first = await servers_on(engine, h1)
    (bundle,) = first.certificates
    assert "PRIVATE KEY" in bundle.pem and bundle.name == first.default_certificate

    await operations.update(engine.caller, await engine.get(certificate),
                            {"cert": cert("two.shop.test")})

    async def renewed() -> Any:
        balancer = await servers_on(engine, h1)
        return balancer if balancer.certificates[0].pem != bundle.pem else None

    again = await until(renewed, "the new certificate pushed")
    assert again.config_version != first.config_version
