"""Load balancers end to end, on simulated hosts (``tests.e2e.simhosts``) with real agents,
Docker and HAProxy: a balancer made through ``cattle`` spreads requests over a service's
containers, routes by host and path, ends TLS with the right certificate by SNI, takes a
custom snippet, and changes its targets under load (scale, upgrade, a killed container)
without a failed request."""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cattle
import pytest

from tests.e2e.commands import stops_on_term
from tests.e2e.simhosts import IMAGE, Overlay, SimHost, simulated_hosts
from tests.support.processes import ACCESS_KEY, SECRET_KEY
from tests.support.timing import seconds, wait_for
from tests.unit.server.test_certificates import key_pem, make_cert, rsa_key

pytestmark = pytest.mark.integration

# httpd answering with its container's hostname, and "api" under /api/.
NAMED = stops_on_term("mkdir -p /www/api && hostname > /www/index.html && "
                      "echo ${VERSION:-one} > /www/version && httpd -f -p 80 -h /www")
API = stops_on_term("mkdir -p /www/api && echo api > /www/index.html && "
                    "echo api > /www/api/index.html && httpd -f -p 80 -h /www")
PORT = 8081
TLS_PORT = 8443


def client(overlay: Overlay) -> cattle.Client:
    return cattle.Client(url=f"{overlay.server.origin}/v2-beta/schemas",
                         access_key=ACCESS_KEY, secret_key=SECRET_KEY,
                         headers={"Accept": "application/json"})


@pytest.fixture
def two_hosts(docker_engine: None, tmp_path: Path) -> Iterator[Overlay]:
    with simulated_hosts(tmp_path, 2, agents=2) as running_hosts:
        yield running_hosts


def launch(command: list[str], **env: str) -> dict[str, Any]:
    return {"imageUuid": f"docker:{IMAGE}", "command": command, "environment": env}


def running(overlay: Overlay, service_id: str, count: int) -> list[dict[str, Any]]:
    def check() -> list[dict[str, Any]] | None:
        found = [c for c in overlay.api("GET", f"/services/{service_id}/instances")["data"]
                 if c["state"] not in ("removed", "purged")]
        live = [c for c in found if c["state"] == "running"]
        return live if len(live) == count == len(found) else None

    result: list[dict[str, Any]] = wait_for(check, 90, f"{count} running containers")
    return result


def balancer_hosts(overlay: Overlay, lb_id: str, count: int = 1) -> list[SimHost]:
    """The hosts of the balancer's ``count`` instances, once each HAProxy runs the latest
    config."""
    def check() -> list[dict[str, Any]] | None:
        found = overlay.api("GET", f"/loadbalancerservices/{lb_id}/instances")["data"]
        ready = [i for i in found if i["state"] == "running" and
                 i["configVersion"] == i["requestedConfigVersion"]]
        return ready if len(found) == len(ready) == count else None

    instances = wait_for(check, 60, f"the balancer's {count} instance(s) to run")
    return [next(h for h in overlay.hosts if h.host_id == i["hostId"]) for i in instances]


def balancer_host(overlay: Overlay, lb_id: str) -> SimHost:
    (host,) = balancer_hosts(overlay, lb_id)
    return host


def get(host: str, path: str = "/", *, hostname: str | None = None,
        port: int = PORT) -> tuple[int, str, http.client.HTTPMessage]:
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request("GET", path, headers={"Host": hostname} if hostname else {})
        response = connection.getresponse()
        return response.status, response.read().decode().strip(), response.headers
    finally:
        connection.close()


def served(host: str, path: str = "/", **kw: Any) -> str:
    status, body, _ = get(host, path, **kw)
    assert status == 200, (status, body)
    return body


def certificate(name: str) -> tuple[str, str]:
    key = rsa_key()
    now = datetime.now(UTC)
    return make_cert(key, cn=name, not_before=now - timedelta(days=1),
                     not_after=now + timedelta(days=30)), key_pem(key)


def tls_name(host: str, server_name: str, cafile: Path) -> str:
    """The CN of the certificate the balancer shows for ``server_name`` (sent as SNI),
    checked by the client against the test's own certificates."""
    context = ssl.create_default_context(cafile=str(cafile))
    context.check_hostname = False  # the default certificate answers other names too
    with socket.create_connection((host, TLS_PORT), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=server_name) as sock:
        subject = dict(x[0] for x in sock.getpeercert()["subject"])  # type: ignore[index]
        sock.sendall(f"GET / HTTP/1.0\r\nHost: {server_name}\r\n\r\n".encode())
        assert sock.recv(64).split(b"\r\n")[0].endswith(b" 200 OK")
        return str(subject["commonName"])


def test_a_balancer_spreads_routes_and_ends_tls_by_sni(two_hosts: Overlay,
                                                       tmp_path: Path) -> None:
    api = client(two_hosts)
    stack = api.create_stack(name="front")
    web = api.create_service(name="web", stackId=stack.id, scale=3, startOnCreate=True,
                             launchConfig=launch(NAMED))
    backend = api.create_service(name="api", stackId=stack.id, startOnCreate=True,
                                 launchConfig=launch(API))
    names = {c["externalId"][:12] for c in running(two_hosts, web.id, 3)}
    running(two_hosts, backend.id, 1)
    (cert_a, key_a), (cert_b, key_b) = certificate("a.shop.test"), certificate("b.shop.test")
    first = api.create_certificate(name="a", cert=cert_a, key=key_a)
    second = api.create_certificate(name="b", cert=cert_b, key=key_b)
    cafile = tmp_path / "ca.pem"
    cafile.write_text(cert_a + cert_b)
    lb = api.create_loadBalancerService(
        name="lb", stackId=stack.id, startOnCreate=True, scale=2, lbConfig={
            "portRules": [
                {"sourcePort": PORT, "targetPort": 80, "serviceId": web.id},
                {"sourcePort": PORT, "targetPort": 80, "serviceId": backend.id,
                 "hostname": "api.shop.test"},
                {"sourcePort": PORT, "targetPort": 80, "serviceId": backend.id,
                 "path": "/api/"},
                {"sourcePort": TLS_PORT, "protocol": "https", "targetPort": 80,
                 "serviceId": web.id}],
            "certificateIds": [first.id, second.id], "defaultCertificateId": first.id})
    lb = api.wait_success(lb)
    # Scale 2: one HAProxy on each host, each answering on its host's address.
    first_host, second_host = (h.ip for h in balancer_hosts(two_hosts, lb.id, 2))
    assert first_host != second_host
    host = first_host

    seen = {served(host) for _ in range(30)}
    assert seen == names  # round-robin over the three containers
    assert {served(second_host) for _ in range(30)} == names
    assert served(host, hostname="api.shop.test") == "api"
    assert served(host, "/api/") == "api"
    assert served(host, hostname="www.shop.test") in names

    assert tls_name(host, "a.shop.test", cafile) == "a.shop.test"
    assert tls_name(host, "b.shop.test", cafile) == "b.shop.test"
    assert tls_name(host, "www.shop.test", cafile) == "a.shop.test"  # the default one

    # A custom snippet is merged into the frontend it names.
    api.update(api.by_id_loadBalancerService(lb.id), lbConfig={
        **_config(api, lb.id),
        "config": f"frontend {PORT}\n  http-response set-header X-Balanced-By corral\n"})
    wait_for(lambda: get(host)[2].get("X-Balanced-By") == "corral" or None, 30,
             "the custom header")


def _config(api: cattle.Client, lb_id: str) -> dict[str, Any]:
    found = api.by_id_loadBalancerService(lb_id).lbConfig
    rules = [vars(r) for r in found.portRules]
    return {"portRules": [{k: v for k, v in r.items() if v is not None} for r in rules],
            "certificateIds": list(found.certificateIds or []),
            "defaultCertificateId": found.defaultCertificateId}


@dataclass
class Load:
    """Clients looping on the balancer: half keep their connection, half do not."""

    host: str
    clients: int = 20
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Load:
        for index in range(self.clients):
            thread = threading.Thread(target=self._loop, args=(index % 2 == 0,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=seconds(30))

    def _loop(self, keep_alive: bool) -> None:
        connection: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            try:
                if connection is None:
                    connection = http.client.HTTPConnection(self.host, PORT, timeout=15)
                connection.request("GET", "/version",
                                   headers={} if keep_alive else {"Connection": "close"})
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}")
                if not keep_alive or response.will_close:
                    connection.close()
                    connection = None
                with self._lock:
                    self.ok += 1
            except Exception as exc:  # every failure is counted, whatever it is
                with self._lock:
                    self.failures.append(f"{'keep-alive' if keep_alive else 'close'}: {exc!r}")
                if connection is not None:
                    connection.close()
                connection = None
                time.sleep(0.05)
        if connection is not None:
            connection.close()


class Versions:
    """The changes of config the balancer's HAProxy ran, as the API shows them (a version
    names a config: one may come back, as when a scale brings the same names and addresses
    back)."""

    def __init__(self, overlay: Overlay, lb_id: str) -> None:
        self.seen: list[str] = []
        self._overlay, self._lb_id = overlay, lb_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            for instance in self._overlay.api(
                    "GET", f"/loadbalancerservices/{self._lb_id}/instances")["data"]:
                version = instance.get("configVersion")
                if version and (not self.seen or self.seen[-1] != version):
                    self.seen.append(version)
            time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=seconds(10))


def test_targets_change_under_load_without_a_failed_request(two_hosts: Overlay) -> None:
    api = client(two_hosts)
    stack = api.create_stack(name="busy")
    web = api.create_service(name="web", stackId=stack.id, scale=3, startOnCreate=True,
                             launchConfig=launch(NAMED),
                             upgradeStrategy={"batchSize": 1, "startFirst": True})
    running(two_hosts, web.id, 3)
    lb = api.wait_success(api.create_loadBalancerService(
        name="lb", stackId=stack.id, startOnCreate=True, lbConfig={"portRules": [
            {"sourcePort": PORT, "targetPort": 80, "serviceId": web.id}]}))
    host = balancer_host(two_hosts, lb.id).ip
    versions = Versions(two_hosts, lb.id)
    try:
        with Load(host) as load:
            # Scale changes until HAProxy has run 20 configs (each container that comes,
            # drains or goes is one or more), then an upgrade on top.
            for scale in (1, 4, 2, 4, 1, 3, 1, 4, 2, 4, 1, 3, 1, 4):
                api.update(api.by_id_service(web.id), scale=scale)
                running(two_hosts, web.id, scale)
                if len(versions.seen) >= 20 and scale == 4:
                    break
            upgraded = api.by_id_service(web.id).upgrade_action(inServiceStrategy={
                "batchSize": 1, "startFirst": True, "intervalMillis": 0,
                "launchConfig": launch(NAMED, VERSION="two")})
            api.wait_success(upgraded, timeout=seconds(240))
            api.wait_success(api.by_id_service(web.id).finishupgrade(),
                             timeout=seconds(120))
            wait_for(lambda: served(host, "/version") == "two" or None, 30, "version two")
            time.sleep(2)  # the load keeps going on the final config
    finally:
        versions.stop()
    assert load.failures == [], load.failures[:5]
    assert load.ok > 100
    assert len(versions.seen) >= 20, f"only {len(versions.seen)} config changes"


def test_a_killed_backend_leaves_the_pool(two_hosts: Overlay) -> None:
    api = client(two_hosts)
    stack = api.create_stack(name="kill")
    check = {"port": 80, "requestLine": "GET /version HTTP/1.0", "interval": 1000,
             "responseTimeout": 1000, "healthyThreshold": 1, "unhealthyThreshold": 2}
    web = api.create_service(name="web", stackId=stack.id, scale=3, startOnCreate=True,
                             launchConfig={**launch(NAMED), "healthCheck": check})
    containers = running(two_hosts, web.id, 3)
    lb = api.wait_success(api.create_loadBalancerService(
        name="lb", stackId=stack.id, startOnCreate=True, lbConfig={"portRules": [
            {"sourcePort": PORT, "targetPort": 80, "serviceId": web.id}]}))
    host = balancer_host(two_hosts, lb.id).ip
    victim = containers[0]
    victim_host = next(h for h in two_hosts.hosts if h.host_id == victim["hostId"])
    with Load(host) as load:
        time.sleep(1)
        victim_host.docker("kill", victim["externalId"])
        killed_at = (load.ok, len(load.failures))
        time.sleep(8)  # two checks a second apart, and the push: well past them
        settled = (load.ok, len(load.failures))
        time.sleep(5)
    # Only requests in flight on the killed container may fail (at most one a client);
    # once it is out of the pool, none.
    assert len(load.failures) - killed_at[1] <= load.clients, load.failures[:5]
    assert len(load.failures) == settled[1], load.failures[settled[1]:][:5]
    assert load.ok > settled[0]
