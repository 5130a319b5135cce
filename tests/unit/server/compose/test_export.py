"""Compose files from a stack's services, and the round trip (server/compose/export.py)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from server.compose import export_stack, parse_stack
from server.compose.interpolate import escape
from tests.unit.server.compose.helpers import compose, services_from

RICH = compose({
    "web": {"image": "nginx:1.25", "command": 'nginx -g "daemon off;"',
            "entrypoint": ["/init"], "ports": ["8080:80", 443, "127.0.0.1:53:53/udp"],
            "expose": [9000], "environment": ["A=1", "B"], "env_file": "web.env",
            "labels": {"io.rancher.sidekicks": "logger, data", "tier": "front"},
            "links": ["db", "db:database"], "external_links": ["other/cache", "other/mq:queue"],
            "mem_limit": "1.5g", "memswap_limit": "2g", "mem_reservation": "256m",
            "restart": "on-failure:3", "logging": {"driver": "syslog", "options": {"tag": "web"}},
            "ulimits": {"nofile": {"soft": 100, "hard": 200}, "nproc": 50},
            "privileged": True, "tty": True, "stdin_open": True, "read_only": True,
            "cap_add": ["NET_ADMIN"], "cap_drop": ["MKNOD"], "devices": ["/dev/fuse"],
            "dns": ["8.8.8.8"], "dns_search": ["local"], "extra_hosts": {"h": "1.2.3.4"},
            "user": "www", "working_dir": "/srv", "hostname": "w", "domainname": "example.com",
            "pid": "host", "ipc": "host", "cpu_shares": 512, "cpuset": "0", "volumes":
                ["data:/data", "/etc/a:/a:ro"], "volume_driver": "local",
            "network_mode": "bridge", "volumes_from": ["data"]},
    "logger": {"image": "busybox", "links": ["db"], "volumes_from": ["web"]},
    "data": {"image": "busybox", "volumes": ["/srv"], "command": ["true"]},
    "db": {"image": "postgres", "environment": {"PASSWORD": "$${not_a_var}", "EMPTY": ""}},
    "lb": {"image": "rancher/lb-service-haproxy:v0.9", "ports": ["80:80"]},
    "dns": {"image": "rancher/dns-service", "links": ["web", "db:pg"],
            "external_links": ["other/cache"]},
    "ext": {"image": "rancher/external-service"},
})
RICH_RANCHER = compose({
    "web": {"scale": 3, "start_on_create": False, "retain_ip": True, "drain_timeout_ms": 100,
            "description": "front end", "metadata": {"a": [1, {"b": "$$c"}]},
            "health_check": {"port": 80, "request_line": "GET / HTTP/1.0", "interval": 2000,
                             "strategy": "recreateOnQuorum", "quorum": 2},
            "upgrade_strategy": {"batch_size": 2, "interval_millis": 500, "start_first": True}},
    "logger": {"health_check": {"port": 81}},
    "lb": {"scale": 2, "lb_config": {
        "port_rules": [{"source_port": 80, "target_port": 8080, "service": "web",
                        "hostname": "a.example.com", "path": "/", "priority": 1},
                       {"source_port": 81, "target_port": 80, "service": "other/web"}],
        "certs": ["c1"], "default_cert": "c0", "config": "defaults\n  timeout 5s",
        "stickiness_policy": {"name": "s", "cookie": "id", "nocache": True}}},
    "ext": {"external_ips": ["1.2.3.4"], "health_check": {"port": 22}},
})
V1 = "web:\n  image: app\n  net: host\n  log_driver: gelf\n  log_opt: {gelf-address: udp://x}\n" \
     "  links: [db]\ndb:\n  image: mysql\n  restart: always\n"
V3 = compose({"web": {"image": "app", "deploy": {"replicas": 4}, "ports": [
    {"target": 80, "published": 8080, "protocol": "udp"}], "volumes": [
    {"type": "bind", "source": "/a", "target": "/b", "read_only": True}]}}, version="3.4")
EXTERNAL = compose({"ext": {"image": "rancher/external-service"}})
EXTERNAL_RANCHER = compose({"ext": {"hostname": "db.example.com"}})
ENV_FILES = {"web.env": "A=0\nC=3\n"}


def round_trip(dc: str, rc: str | None) -> None:
    original = parse_stack(dc, rc, environment={"B": "bee"}, env_files=ENV_FILES)
    exported = export_stack(services_from(original.services))
    again = parse_stack(*exported)
    assert again.services == original.services
    assert again.version == "2"


@pytest.mark.parametrize(("dc", "rc"), [(RICH, RICH_RANCHER), (V1, None), (V3, None),
                                        (EXTERNAL, EXTERNAL_RANCHER)])
def test_parse_of_export_gives_the_same_templates(dc: str, rc: str | None) -> None:
    round_trip(dc, rc)


def test_export_writes_version_2_files_with_sidekicks_links_and_special_images() -> None:
    dc, rc = export_stack([
        {"name": "web", "type": "service", "scale": 2, "startOnCreate": True,
         "launchConfig": {"imageUuid": "docker:nginx", "ports": ["80:80"], "privileged": False,
                          "requestedHostId": 7, "environment": {}, "memory": 1024},
         "secondaryLaunchConfigs": [{"name": "side", "imageUuid": "docker:busybox"}],
         "serviceLinks": [{"service": "db", "name": "db"}, {"service": "db", "name": "pg"},
                          {"service": "other/cache", "name": "cache"}]},
        {"name": "db", "type": "dnsService", "launchConfig": None, "serviceLinks": []},
        {"name": "ext", "type": "externalService", "externalIpAddresses": ["1.1.1.1"],
         "hostname": None, "healthCheck": {"port": 5}},
    ])
    assert yaml.safe_load(dc) == {"version": "2", "services": {
        "web": {"image": "nginx", "labels": {"io.rancher.sidekicks": "side"},
                "ports": ["80:80"], "mem_limit": 1024, "links": ["db", "db:pg"],
                "external_links": ["other/cache"]},
        "side": {"image": "busybox"},
        "db": {"image": "rancher/dns-service"},
        "ext": {"image": "rancher/external-service"}}}
    assert yaml.safe_load(rc) == {"version": "2", "services": {
        "web": {"scale": 2, "start_on_create": True},
        "ext": {"external_ips": ["1.1.1.1"], "health_check": {"port": 5}}}}
    assert list(yaml.safe_load(dc)["services"]) == ["web", "side", "db", "ext"]


def test_an_empty_stack_exports_empty_service_maps() -> None:
    assert [yaml.safe_load(text) for text in export_stack([])] == \
        [{"version": "2", "services": {}}] * 2


def test_dollars_are_escaped_so_interpolation_gives_them_back() -> None:
    dc, _ = export_stack([{"name": "web", "launchConfig": {
        "imageUuid": "docker:x", "environment": {"P": "a$b"}}}])
    assert "a$$b" in dc
    assert parse_stack(dc).services[0].fields["launchConfig"]["environment"] == {"P": "a$b"}


_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=12)
_NAME = st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True)
_VAR = st.from_regex(r"[A-Z_][A-Z0-9_]{0,6}", fullmatch=True)
_IMAGE = st.sampled_from(["nginx", "app:1", "r.io/a/b"])
_SERVICE = st.fixed_dictionaries({"image": _IMAGE}, optional={
    "command": st.lists(_TEXT.map(escape), max_size=3),
    "environment": st.dictionaries(_VAR, _TEXT.map(escape), max_size=3),
    "labels": st.dictionaries(_NAME, _TEXT.map(escape), max_size=3),
    "ports": st.lists(st.sampled_from(["80", "8080:80", "1.2.3.4:53:53/udp"]), max_size=3),
    "mem_limit": st.integers(0, 2**40),
    "cpu_shares": st.integers(2, 1024),
    "privileged": st.booleans(),
    "restart": st.sampled_from(["always", "no", "on-failure", "on-failure:2"]),
    "ulimits": st.dictionaries(st.sampled_from(["nofile", "nproc"]), st.integers(0, 99)),
})


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(_NAME, _SERVICE, min_size=1, max_size=4),
       st.dictionaries(st.sampled_from(["scale", "retain_ip"]), st.integers(0, 5)))
def test_any_generated_stack_survives_the_round_trip(
        services: dict[str, dict[str, Any]], rancher: dict[str, int]) -> None:
    first = next(iter(services))
    extra = {first: {k: bool(v) if k == "retain_ip" else v for k, v in rancher.items()}}
    round_trip(compose(services), compose(extra) if rancher else None)
