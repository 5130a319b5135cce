"""Stacks and services end to end, on simulated hosts (``tests.e2e.simhosts``) with real agents
and Docker: a stack from compose files through ``cattle``, discovery by name across hosts,
scale and replacement reflected in Docker, global services, health checks that recreate, a
rolling upgrade that no client notices, and partitions that the lost timer rides out."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cattle
import pytest

from server.compose import parse_stack
from tests.e2e.commands import stops_on_term
from tests.e2e.simhosts import IMAGE, Overlay, SimHost, fetch, simulated_hosts
from tests.support.processes import ACCESS_KEY, SECRET_KEY
from tests.support.timing import seconds, wait_for

pytestmark = pytest.mark.integration

# httpd serving "$VERSION" (or "hello") from /www.
HTTPD = stops_on_term("mkdir -p /www && echo ${VERSION:-hello} > /www/index.html && "
                      "httpd -f -p 80 -h /www")
SLEEPER = stops_on_term("sleep 100000")
_ADDRESS = re.compile(r"\b10\.42\.\d+\.\d+\b")


def client(overlay: Overlay) -> cattle.Client:
    return cattle.Client(url=f"{overlay.server.origin}/v2-beta/schemas",
                         access_key=ACCESS_KEY, secret_key=SECRET_KEY,
                         headers={"Accept": "application/json"})


def instances(overlay: Overlay, service_id: str) -> list[dict[str, Any]]:
    found = overlay.api("GET", f"/services/{service_id}/instances")["data"]
    return [c for c in found if c["state"] not in ("removed", "purged")]


def running(overlay: Overlay, service_id: str, count: int) -> list[dict[str, Any]]:
    def check() -> list[dict[str, Any]] | None:
        found = instances(overlay, service_id)
        live = [c for c in found if c["state"] == "running"]
        return live if len(live) == count == len(found) else None

    result: list[dict[str, Any]] = wait_for(check, 90, f"{count} running containers")
    return result


def host_of(overlay: Overlay, container: dict[str, Any]) -> SimHost:
    return next(h for h in overlay.hosts if h.host_id == container["hostId"])


def in_docker(overlay: Overlay, label: str) -> list[str]:
    """Names of the running Docker containers with ``label``, on every registered host."""
    names: list[str] = []
    for host in overlay.hosts:
        if host.agent is None:
            continue
        out = host.docker("ps", "--filter", f"label={label}", "--format", "{{.Names}}")
        names += out.stdout.split()
    return sorted(names)


def resolve(host: SimHost, container: str, name: str) -> set[str]:
    """The managed addresses ``name`` resolves to inside ``container`` (busybox's nslookup
    tries the search domains too, and exits 1 when one of them is not found)."""
    result = host.docker("exec", container, "nslookup", name, check=False)
    return set(_ADDRESS.findall(result.stdout))


def docker_name(container: dict[str, Any]) -> str:
    return str(container["name"])


@pytest.fixture
def two_hosts(docker_engine: None, tmp_path: Path) -> Iterator[Overlay]:
    with simulated_hosts(tmp_path, 3, agents=2) as running_hosts:
        yield running_hosts


# In a compose file ``$`` interpolates the stack's environment: ``$$`` is a ``$``.
_COMPOSED_HTTPD = [part.replace("$", "$$") for part in HTTPD]
COMPOSE = f"""\
version: '2'
services:
  web:
    image: {IMAGE}
    command: {_COMPOSED_HTTPD!r}
    links:
      - db
      - db:database
    labels:
      io.rancher.scheduler.affinity:container_label_ne: io.rancher.stack_service.name=shop/db
  db:
    image: {IMAGE}
    command: {_COMPOSED_HTTPD!r}
    environment:
      VERSION: db-here
"""


def test_a_stack_from_compose_finds_its_links_by_name_across_hosts(two_hosts: Overlay) -> None:
    api = client(two_hosts)
    stack = api.wait_success(api.create_stack(name="shop", dockerCompose=COMPOSE,
                                              startOnCreate=True))
    services = {s.name: s for s in api.list_service(stackId=stack.id)}
    (web,) = running(two_hosts, services["web"].id, 1)
    (db,) = running(two_hosts, services["db"].id, 1)
    web_host, db_host = host_of(two_hosts, web), host_of(two_hosts, db)
    assert web_host is not db_host  # the anti-affinity label put them on two hosts
    assert web["name"] == "shop-web-1" and db["name"] == "shop-db-1"

    db_ip = db["primaryIpAddress"]
    for name in ("db", "db.shop", "db.shop.rancher.internal", "database"):
        assert wait_for(lambda n=name: resolve(web_host, "shop-web-1", n) == {db_ip} or None,
                        15, f"{name} to resolve to {db_ip}")
    reply = fetch(web_host, "shop-web-1", "http://db/")
    assert reply.stdout == "db-here\n", reply.stderr
    assert fetch(web_host, "shop-web-1", "http://database.shop.rancher.internal/"
                 ).stdout == "db-here\n"

    config = api.by_id_stack(stack.id).exportconfig()
    assert parse_stack(config.dockerComposeConfig, config.rancherComposeConfig) == \
        parse_stack(COMPOSE)


def test_scale_replacement_and_global_services_in_docker(two_hosts: Overlay) -> None:
    api = client(two_hosts)
    stack = api.create_stack(name="s")
    web = api.create_service(name="web", stackId=stack.id, startOnCreate=True,
                             launchConfig={"imageUuid": f"docker:{IMAGE}",
                                           "command": SLEEPER})
    label = "io.rancher.stack_service.name=s/web"
    running(two_hosts, web.id, 1)
    for scale in (5, 2):
        api.update(api.by_id_service(web.id), scale=scale)
        wait_for(lambda s=scale: len(in_docker(two_hosts, label)) == s or None, 60,
                 f"{scale} containers in Docker")
    assert in_docker(two_hosts, label) == ["s-web-1", "s-web-2"]

    (victim, _) = running(two_hosts, web.id, 2)
    host_of(two_hosts, victim).docker("rm", "-f", docker_name(victim))
    replaced = running(two_hosts, web.id, 2)
    assert victim["id"] not in {c["id"] for c in replaced}
    wait_for(lambda: len(in_docker(two_hosts, label)) == 2 or None, 60, "2 again in Docker")

    every = api.create_service(name="every", stackId=stack.id, startOnCreate=True,
                               launchConfig={"imageUuid": f"docker:{IMAGE}",
                                             "command": SLEEPER, "labels": {
                                                 "io.rancher.scheduler.global": "true"}})
    found = running(two_hosts, every.id, 2)
    assert {c["hostId"] for c in found} == {h.host_id for h in two_hosts.hosts[:2]}
    two_hosts.start_agent(two_hosts.hosts[2])
    found = running(two_hosts, every.id, 3)
    assert {c["hostId"] for c in found} == {h.host_id for h in two_hosts.hosts}


HEALTH = {"port": 80, "requestLine": "GET /index.html HTTP/1.0", "interval": 1000,
          "responseTimeout": 1000, "healthyThreshold": 2, "unhealthyThreshold": 2}


def healthy(overlay: Overlay, service_id: str, count: int) -> list[dict[str, Any]]:
    """The service's running containers once ``count`` run, all healthy (an upgraded service
    keeps its old ones too, stopped)."""
    def check() -> list[dict[str, Any]] | None:
        found = [c for c in instances(overlay, service_id) if c["state"] != "stopped"]
        good = [c for c in found if c["state"] == "running" and c.get("healthState") ==
                "healthy"]
        return good if len(good) == count == len(found) else None

    result: list[dict[str, Any]] = wait_for(check, 90, f"{count} healthy containers")
    return result


def test_an_unhealthy_container_leaves_dns_and_is_recreated(two_hosts: Overlay) -> None:
    api = client(two_hosts)
    stack = api.create_stack(name="hc")
    web = api.create_service(name="web", stackId=stack.id, scale=2, startOnCreate=True,
                             launchConfig={"imageUuid": f"docker:{IMAGE}", "command": HTTPD,
                                           "healthCheck": HEALTH})
    probe_host = two_hosts.hosts[0]
    two_hosts.api("POST", "/containers", json={
        "imageUuid": f"docker:{IMAGE}", "name": "probe", "command": SLEEPER,
        "requestedHostId": probe_host.host_id})
    wait_for(lambda: probe_host.docker("exec", "probe", "true", check=False).returncode == 0
             or None, 60, "the probe container")
    first, second = healthy(two_hosts, web.id, 2)
    both = {first["primaryIpAddress"], second["primaryIpAddress"]}
    wait_for(lambda: resolve(probe_host, "probe", "web.hc") == both or None, 15,
             "both in the answers")
    assert api.by_id_service(web.id).healthState == "healthy"

    host_of(two_hosts, first).docker("exec", docker_name(first), "rm", "/www/index.html")
    # Out of the answers within its thresholds and the push, then replaced by a healthy one.
    wait_for(lambda: first["primaryIpAddress"] not in resolve(probe_host, "probe", "web.hc")
             or None, 20, "the unhealthy one to leave the answers")
    after = healthy(two_hosts, web.id, 2)
    assert first["id"] not in {c["id"] for c in after}
    assert second["id"] in {c["id"] for c in after}
    addresses = {c["primaryIpAddress"] for c in after}
    wait_for(lambda: resolve(probe_host, "probe", "web.hc") == addresses or None, 15,
             "the new one in the answers")


def test_a_rolling_upgrade_with_start_first_no_client_notices(two_hosts: Overlay) -> None:
    api = client(two_hosts)
    stack = api.create_stack(name="up")
    config = {"imageUuid": f"docker:{IMAGE}", "command": HTTPD, "healthCheck": HEALTH,
              "environment": {"VERSION": "v1"}}
    web = api.create_service(name="web", stackId=stack.id, scale=4, startOnCreate=True,
                             launchConfig=config)
    before = healthy(two_hosts, web.id, 4)
    probe_host = two_hosts.hosts[0]
    two_hosts.api("POST", "/containers", json={
        "imageUuid": f"docker:{IMAGE}", "name": "loop", "requestedHostId": probe_host.host_id,
        "command": ["sh", "-c", "while true; do timeout 3 wget -qO- http://web.up/ "
                    ">> /tmp/seen 2>&1 || echo FAIL >> /tmp/seen; sleep 0.1; done"]})
    wait_for(lambda: "v1" in probe_host.docker("exec", "loop", "cat", "/tmp/seen",
                                               check=False).stdout or None,
             60, "the client to get answers")

    # The service's ``upgrade`` field hides the action: gdapi binds it as upgrade_action.
    upgraded = api.by_id_service(web.id).upgrade_action(inServiceStrategy={
        "batchSize": 1, "intervalMillis": 500, "startFirst": True,
        "launchConfig": {**config, "environment": {"VERSION": "v2"}}})
    upgraded = api.wait_success(upgraded, timeout=seconds(240))
    assert upgraded.state == "upgraded"
    after = healthy(two_hosts, web.id, 4)
    assert not {c["id"] for c in before} & {c["id"] for c in after}
    kept = {c["id"]: c["state"] for c in instances(two_hosts, web.id)
            if c["id"] not in {a["id"] for a in after}}
    assert kept == {c["id"]: "stopped" for c in before}  # kept for a rollback
    time.sleep(2)  # answers of the last batch
    seen = probe_host.docker("exec", "loop", "cat", "/tmp/seen").stdout.split()
    assert "FAIL" not in seen, seen.count("FAIL")
    assert seen[-1] == "v2" and set(seen) == {"v1", "v2"}

    rolled = api.wait_success(api.by_id_service(web.id).rollback(), timeout=seconds(240))
    assert rolled.state == "active"
    assert rolled.launchConfig.environment.VERSION == "v1"
    back = healthy(two_hosts, web.id, 4)
    assert {c["id"] for c in back} == {c["id"] for c in before}


def partition(host: SimHost, seconds_down: float) -> None:
    """The host's link to the underlay down for a while (its containers keep running)."""
    host.run("ip", "link", "set", "eth0", "down")
    try:
        time.sleep(seconds_down)
    finally:
        host.run("ip", "link", "set", "eth0", "up")


def test_a_short_partition_replaces_nothing(two_hosts: Overlay) -> None:
    api = client(two_hosts)
    stack = api.create_stack(name="p")
    web = api.create_service(name="web", stackId=stack.id, startOnCreate=True,
                             launchConfig={"imageUuid": f"docker:{IMAGE}",
                                           "command": SLEEPER})
    (only,) = running(two_hosts, web.id, 1)
    cut = host_of(two_hosts, only)
    partition(cut, 20)
    wait_for(lambda: two_hosts.server.get_host(str(cut.host_id))["state"] == "active"
             or None, 90, "the host back")
    time.sleep(3)  # a reconcile pass after it returned
    assert [c["id"] for c in instances(two_hosts, web.id)] == [only["id"]]
    assert in_docker(two_hosts, "io.rancher.stack_service.name=p/web") == ["p-web-1"]


def test_a_long_partition_replaces_and_heals_to_scale(docker_engine: None,
                                                       tmp_path: Path) -> None:
    with simulated_hosts(tmp_path, 2, agents=2,
                         server_env={"CORRAL_HOST_LOST_TIMEOUT": "10"}) as overlay:
        api = client(overlay)
        stack = api.create_stack(name="p")
        web = api.create_service(name="web", stackId=stack.id, startOnCreate=True,
                                 launchConfig={"imageUuid": f"docker:{IMAGE}",
                                               "command": SLEEPER})
        (only,) = running(overlay, web.id, 1)
        cut = host_of(overlay, only)
        other = next(h for h in overlay.hosts if h is not cut)
        cut.run("ip", "link", "set", "eth0", "down")
        down_at = time.monotonic()
        try:
            # Disconnected after 15 s, lost 10 s later: replaced on the other host.
            replacement = wait_for(lambda: next(
                (c for c in instances(overlay, web.id)
                 if c["hostId"] == other.host_id and c["state"] == "running"), None),
                60, "a replacement on the other host")
            time.sleep(max(0.0, 30 - (time.monotonic() - down_at)))  # a 30 s partition
        finally:
            cut.run("ip", "link", "set", "eth0", "up")
        wait_for(lambda: overlay.server.get_host(str(cut.host_id))["state"] == "active"
                 or None, 90, "the host back")
        label = "io.rancher.stack_service.name=p/web"
        wait_for(lambda: len(in_docker(overlay, label)) == 1 or None, 60,
                 "exactly one container in Docker")
        assert [c["id"] for c in running(overlay, web.id, 1)] == [replacement["id"]]
