"""rancher-compose.yml's service keys (server/compose/rancher.py)."""

from __future__ import annotations

from server.compose import parse_stack
from tests.unit.server.compose.helpers import compose, one, problems_of


def test_service_keys_become_camel_case_fields() -> None:
    template = one({"image": "x"}, {
        "scale": 2, "start_on_create": True, "retain_ip": True, "drain_timeout_ms": 5000,
        "description": "the web tier", "metadata": {"tier": ["a", 1, None]},
        "upgrade_strategy": {"batch_size": 2, "interval_millis": 3000, "start_first": True}})
    assert template.fields == {
        "name": "web", "launchConfig": {"imageUuid": "docker:x"}, "scale": 2,
        "startOnCreate": True, "retainIp": True, "drainTimeoutMs": 5000,
        "description": "the web tier", "metadata": {"tier": ["a", 1, None]},
        "upgradeStrategy": {"batchSize": 2, "intervalMillis": 3000, "startFirst": True}}


def test_a_health_check_goes_into_the_launch_config_in_ranchers_names() -> None:
    launch = one({"image": "x"}, {"health_check": {
        "port": 80, "request_line": "GET /ping HTTP/1.0", "interval": 2000,
        "response_timeout": 2000, "healthy_threshold": 2, "unhealthy_threshold": 3,
        "initializing_timeout": 60000, "reinitializing_timeout": 60000,
        "strategy": "recreateOnQuorum", "quorum": 2}}).fields["launchConfig"]
    assert launch["healthCheck"] == {
        "port": 80, "requestLine": "GET /ping HTTP/1.0", "interval": 2000,
        "responseTimeout": 2000, "healthyThreshold": 2, "unhealthyThreshold": 3,
        "initializingTimeout": 60000, "reinitializingTimeout": 60000,
        "strategy": "recreateOnQuorum", "recreateOnQuorumStrategyConfig": {"quorum": 2}}
    long_form = one({"image": "x"}, {"health_check": {
        "port": 80, "recreate_on_quorum_strategy_config": {"quorum": 3}}})
    assert long_form.fields["launchConfig"]["healthCheck"] == {
        "port": 80, "recreateOnQuorumStrategyConfig": {"quorum": 3}}


def test_lb_config_is_camel_cased_recursively() -> None:
    stack = parse_stack(
        compose({"lb": {"image": "rancher/lb-service-haproxy:v0.9", "ports": ["80:80"]},
                 "web": {"image": "nginx"}}),
        compose({"lb": {"lb_config": {
            "port_rules": [{"source_port": 80, "target_port": 8080, "protocol": "http",
                            "hostname": "a.example.com", "path": "/api", "service": "web",
                            "priority": 1, "backend_name": "api"},
                           {"source_port": 81, "target_port": 80, "selector": "tier=web"},
                           {"source_port": 82, "target_port": 80, "service": "other/web"}],
            "certs": ["c1"], "default_cert": "c0", "config": "global\n  maxconn 100",
            "stickiness_policy": {"name": "s", "cookie": "id", "indirect": True,
                                  "nocache": False, "mode": "insert"}}}}))
    assert stack.services[0].fields["lbConfig"] == {
        "portRules": [{"sourcePort": 80, "targetPort": 8080, "protocol": "http",
                       "hostname": "a.example.com", "path": "/api", "service": "web",
                       "priority": 1, "backendName": "api"},
                      {"sourcePort": 81, "targetPort": 80, "selector": "tier=web"},
                      {"sourcePort": 82, "targetPort": 80, "service": "other/web"}],
        "certs": ["c1"], "defaultCert": "c0", "config": "global\n  maxconn 100",
        "stickinessPolicy": {"name": "s", "cookie": "id", "indirect": True, "nocache": False,
                             "mode": "insert"}}


def test_unknown_keys_at_every_level_are_all_listed() -> None:
    found = problems_of(
        compose({"lb": {"image": "rancher/lb-service-haproxy"}}),
        compose({"lb": {"colour": 1, "health_check": {"port": 1, "pong": 2},
                        "upgrade_strategy": {"batch": 1},
                        "lb_config": {"port_rules": [{"source_port": 1, "to": 2}],
                                      "stickiness_policy": {"sticky": True}}}}))
    assert [(p.path, p.message) for p in found] == [
        ("services.lb.colour", "unknown key colour"),
        ("services.lb.health_check.pong", "unknown key pong"),
        ("services.lb.upgrade_strategy.batch", "unknown key batch"),
        ("services.lb.lb_config.port_rules[0].to", "unknown key to"),
        ("services.lb.lb_config.stickiness_policy.sticky", "unknown key sticky")]
    assert all(p.file == "rancherCompose" and p.line for p in found)


def test_type_specific_keys_on_another_type_are_problems() -> None:
    found = problems_of(compose({"web": {"image": "x"}, "dns": {"image": "rancher/dns-service"}}),
                        compose({"web": {"lb_config": {}, "external_ips": ["1.2.3.4"]},
                                 "dns": {"health_check": {"port": 1}}}))
    assert [p.path for p in found] == ["services.web.lb_config", "services.web.external_ips",
                                       "services.dns.health_check"]


def test_a_port_rule_for_a_service_not_in_the_stack_is_a_problem() -> None:
    (problem,) = problems_of(compose({"lb": {"image": "rancher/lb-service-haproxy"}}),
                             compose({"lb": {"lb_config": {"port_rules": [
                                 {"source_port": 80, "target_port": 80, "service": "ghost"}]}}}))
    assert problem.message == "no service ghost in this stack"


def test_a_rancher_compose_service_missing_from_docker_compose_is_a_problem() -> None:
    (problem,) = problems_of(compose({"web": {"image": "x"}}), compose({"db": {"scale": 1}}))
    assert (problem.path, problem.message) == ("services.db", "no service db in docker-compose.yml")


def test_the_v1_layout_and_a_catalog_section_are_read() -> None:
    stack = parse_stack("web:\n  image: x\n", ".catalog:\n  name: app\nweb:\n  scale: 2\n")
    assert stack.services[0].fields["scale"] == 2
    assert parse_stack("web:\n  image: x\n", "").services[0].fields == \
        {"name": "web", "launchConfig": {"imageUuid": "docker:x"}}


def test_unsupported_rancher_keys_say_what_to_use() -> None:
    (problem,) = problems_of(compose({"web": {"image": "x"}}),
                             compose({"web": {"load_balancer_config": {}}}))
    assert "use lb_config" in problem.message
