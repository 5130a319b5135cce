"""Load balancer services over the API: lbConfig checked in full with each problem a 422
naming its field, references rendered as public ids, and load balancers from compose files."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient

from tests.conftest import ADMIN
from tests.unit.server.test_certificates import key_pem, make_cert, rsa_key


async def send(client: TestClient, method: str, path: str,
               body: Any = None) -> tuple[int, Any]:
    resp = await client.request(method, path, headers=ADMIN,
                                data=None if body is None else json.dumps(body))
    return resp.status, await resp.json()


async def made(client: TestClient, collection: str, body: dict[str, Any]) -> dict[str, Any]:
    status, found = await send(client, "POST", f"/v2-beta/{collection}", body)
    assert status == 201, (found.get("fieldName"), found.get("message"))
    return dict(found)


async def stack_with_web(client: TestClient, name: str = "shop") -> tuple[str, str]:
    stack = await made(client, "stacks", {"name": name})
    web = await made(client, "services", {"name": "web", "stackId": stack["id"],
                                          "launchConfig": {"imageUuid": "docker:busybox"}})
    return stack["id"], web["id"]


def balancer(stack_id: str, rules: list[dict[str, Any]], **config: Any) -> dict[str, Any]:
    return {"name": "lb", "stackId": stack_id, "scale": 2,
            "lbConfig": {"portRules": rules, **config}}


async def test_a_load_balancer_is_made_and_shown_with_public_ids(client: TestClient) -> None:
    stack_id, web_id = await stack_with_web(client)
    lb = await made(client, "loadbalancerservices", balancer(stack_id, [
        {"sourcePort": 8081, "targetPort": 80, "serviceId": web_id},
        {"sourcePort": 8081, "targetPort": 80, "serviceId": web_id, "hostname": "*.shop.test",
         "path": "/api", "priority": 2}]))
    assert lb["type"] == "loadBalancerService" and lb["baseType"] == "service"
    assert lb["id"].startswith("1s") and lb["state"] == "inactive"
    rules = lb["lbConfig"]["portRules"]
    assert [r["serviceId"] for r in rules] == [web_id, web_id]
    assert rules[0]["protocol"] == "http" and rules[1]["hostname"] == "*.shop.test"
    status, listed = await send(client, "GET", f"/v2-beta/services?stackId={stack_id}")
    assert status == 200
    assert {s["type"] for s in listed["data"]} == {"service", "loadBalancerService"}
    status, instances = await send(client, "GET", f"/v2-beta/loadbalancerservices/{lb['id']}"
                                                  "/instances")
    assert status == 200 and instances["data"] == []


@pytest.mark.parametrize("rules, config, field, words", [
    ([{"sourcePort": 80, "serviceId": "1s999999"}], {}, "lbConfig.portRules[0].serviceId",
     "not a service"),
    ([{"targetPort": 80, "serviceId": "WEB"}], {}, "lbConfig.portRules[0].sourcePort", "port"),
    ([{"sourcePort": 70000, "serviceId": "WEB"}], {}, "lbConfig.portRules[0].sourcePort",
     "port"),
    ([{"sourcePort": 53, "protocol": "udp", "serviceId": "WEB"}], {},
     "lbConfig.portRules[0].protocol", "udp"),
    ([{"sourcePort": 80, "serviceId": "WEB"}, {"sourcePort": 80, "protocol": "tcp",
                                               "serviceId": "WEB"}], {},
     "lbConfig.portRules[1].protocol", "one protocol"),
    ([{"sourcePort": 443, "protocol": "https", "serviceId": "WEB"}], {},
     "lbConfig.defaultCertificateId", "certificate"),
    ([{"sourcePort": 80, "serviceId": "WEB", "hostname": "bad host"}], {},
     "lbConfig.portRules[0].hostname", "hostname"),
    ([{"sourcePort": 80, "serviceId": "WEB", "path": "no-slash"}], {},
     "lbConfig.portRules[0].path", "path"),
    ([{"sourcePort": 80}], {}, "lbConfig.portRules[0].serviceId", "serviceId or a selector"),
    ([{"sourcePort": 80, "serviceId": "WEB"}], {"certificateIds": ["1c999999"]},
     "lbConfig.certificateIds[0]", "not a certificate"),
    ([{"sourcePort": 80, "serviceId": "WEB"}], {"stickinessPolicy": {"mode": "glue"}},
     "lbConfig.stickinessPolicy.mode", "insert"),
])
async def test_a_bad_lb_config_is_a_422_naming_the_field(
        client: TestClient, rules: list[dict[str, Any]], config: dict[str, Any], field: str,
        words: str) -> None:
    stack_id, web_id = await stack_with_web(client)
    rules = [{k: web_id if v == "WEB" else v for k, v in r.items()} for r in rules]
    status, body = await send(client, "POST", "/v2-beta/loadbalancerservices",
                              balancer(stack_id, rules, **config))
    assert status == 422, body
    assert body["fieldName"] == field
    assert words in body["message"], body["message"]


async def test_a_source_port_taken_by_another_load_balancer_is_a_422(
        client: TestClient) -> None:
    stack_id, web_id = await stack_with_web(client)
    await made(client, "loadbalancerservices",
               balancer(stack_id, [{"sourcePort": 8081, "serviceId": web_id}]))
    status, body = await send(client, "POST", "/v2-beta/loadbalancerservices", {
        **balancer(stack_id, [{"sourcePort": 9000, "serviceId": web_id},
                              {"sourcePort": 8081, "serviceId": web_id}]), "name": "lb2"})
    assert status == 422
    assert body["fieldName"] == "lbConfig.portRules[1].sourcePort"
    assert "8081" in body["message"] and "lb" in body["message"]
    # Its own port is no conflict when it is changed.
    status, listed = await send(client, "GET", "/v2-beta/loadbalancerservices?name=lb")
    first = listed["data"][0]
    status, body = await send(client, "PUT", f"/v2-beta/loadbalancerservices/{first['id']}",
                              {"lbConfig": {"portRules": [
                                  {"sourcePort": 8081, "targetPort": 8080,
                                   "serviceId": web_id}]}})
    assert status == 200, body
    assert body["lbConfig"]["portRules"][0]["targetPort"] == 8080


COMPOSE = """\
version: '2'
services:
  web:
    image: busybox
    command: httpd -f -p 80
  lb:
    image: rancher/lb-service-haproxy:v0.7.9
    ports:
      - 8081:8081
"""
RANCHER = """\
version: '2'
services:
  lb:
    scale: 2
    lb_config:
      port_rules:
        - source_port: 8081
          target_port: 80
          service: web
          hostname: shop.test
      stickiness_policy:
        cookie: shop
        mode: insert
"""


async def test_a_stack_makes_its_load_balancer_from_compose_files_and_exports_it(
        client: TestClient) -> None:
    stack = await made(client, "stacks", {"name": "front", "dockerCompose": COMPOSE,
                                          "rancherCompose": RANCHER})
    status, listed = await send(client, "GET", f"/v2-beta/services?stackId={stack['id']}")
    services = {s["name"]: s for s in listed["data"]}
    lb = services["lb"]
    assert lb["type"] == "loadBalancerService" and lb["scale"] == 2
    rule = lb["lbConfig"]["portRules"][0]
    assert (rule["sourcePort"], rule["targetPort"], rule["serviceId"], rule["hostname"]) == \
        (8081, 80, services["web"]["id"], "shop.test")
    assert lb["lbConfig"]["stickinessPolicy"]["cookie"] == "shop"
    status, config = await send(client, "POST",
                                f"/v2-beta/stacks/{stack['id']}?action=exportconfig", {})
    assert status == 200
    exported = yaml.safe_load(config["rancherComposeConfig"])["services"]["lb"]
    assert exported["lb_config"]["port_rules"] == [
        {"source_port": 8081, "target_port": 80, "service": "web", "hostname": "shop.test"}]


async def test_a_compose_rule_for_a_missing_service_is_a_422(client: TestClient) -> None:
    status, body = await send(client, "POST", "/v2-beta/stacks", {
        "name": "broken", "dockerCompose": COMPOSE,
        "rancherCompose": RANCHER.replace("service: web", "service: nowhere")})
    assert status == 422
    assert body["fieldName"] == "rancherCompose" and "nowhere" in body["message"]


async def test_a_certificate_a_load_balancer_serves_cannot_be_removed(
        client: TestClient) -> None:
    key = rsa_key()
    now = datetime.now(UTC)
    cert = make_cert(key, cn="shop.test", not_before=now - timedelta(days=1),
                     not_after=now + timedelta(days=30))
    certificate = await made(client, "certificates", {"name": "shop", "cert": cert,
                                                      "key": key_pem(key)})
    stack_id, web_id = await stack_with_web(client)
    lb = await made(client, "loadbalancerservices", balancer(
        stack_id, [{"sourcePort": 443, "protocol": "https", "targetPort": 80,
                    "serviceId": web_id}], defaultCertificateId=certificate["id"]))
    assert lb["lbConfig"]["defaultCertificateId"] == certificate["id"]
    status, body = await send(client, "DELETE", f"/v2-beta/certificates/{certificate['id']}")
    assert status == 422 and "lb" in body["message"]
    status, _ = await send(client, "PUT", f"/v2-beta/loadbalancerservices/{lb['id']}", {
        "lbConfig": {"portRules": [{"sourcePort": 80, "serviceId": web_id}]}})
    assert status == 200
    status, body = await send(client, "DELETE", f"/v2-beta/certificates/{certificate['id']}")
    assert status == 200, body


async def test_a_custom_config_haproxy_accepts_is_kept(client: TestClient) -> None:
    stack_id, web_id = await stack_with_web(client)
    custom = "defaults\n  timeout client 42s\nbackend extra\n  balance roundrobin\n"
    lb = await made(client, "loadbalancerservices", balancer(
        stack_id, [{"sourcePort": 8081, "targetPort": 80, "serviceId": web_id}],
        config=custom))
    assert lb["lbConfig"]["config"] == custom


@pytest.mark.parametrize("custom, words", [
    ("backend web\n  balance no-such-algorithm\n", "HAProxy refuses it"),
    ("frontend 8081\n  no-such-keyword here\n", "no-such-keyword"),
    ("  timeout client 5s\n", "line 1"),
])
async def test_a_custom_config_haproxy_refuses_is_a_422_with_its_message(
        client: TestClient, custom: str, words: str) -> None:
    stack_id, web_id = await stack_with_web(client)
    status, body = await send(client, "POST", "/v2-beta/loadbalancerservices", balancer(
        stack_id, [{"sourcePort": 8081, "targetPort": 80, "serviceId": web_id}],
        config=custom))
    assert status == 422, body
    assert body["fieldName"] == "lbConfig.config"
    assert words in body["message"], body["message"]
