"""Stacks from docker-compose.yml and rancher-compose.yml (server/compose/parse.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from server.compose import ComposeError, ServiceLink, parse_stack
from tests.unit.server.compose.helpers import compose, one, problems_of


@pytest.mark.parametrize(("text", "version"), [
    ("web:\n  image: nginx\n", "1"),
    ("version: '2'\nservices:\n  web:\n    image: nginx\n", "2"),
    ("version: '2.1'\nservices:\n  web:\n    image: nginx\n", "2.1"),
    ("version: 3\nservices:\n  web:\n    image: nginx\n", "3"),
    ("version: '3.4'\nx-common: &c {image: nginx}\nservices:\n  web: *c\n", "3.4"),
    ("services:\n  web:\n    image: nginx\n", "3"),
])
def test_each_compose_layout_gives_the_same_service(text: str, version: str) -> None:
    stack = parse_stack(text)
    assert stack.version == version
    assert [(s.name, s.type, s.fields) for s in stack.services] == \
        [("web", "service", {"name": "web", "launchConfig": {"imageUuid": "docker:nginx"}})]


def test_top_level_volumes_and_networks_are_accepted_and_ignored() -> None:
    text = "version: '2'\nservices:\n  web: {image: x}\nvolumes:\n  data: {}\n" \
           "networks:\n  front: {driver: bridge}\n"
    assert [s.name for s in parse_stack(text).services] == ["web"]


def test_unknown_or_unsupported_top_level_keys_and_versions_are_problems() -> None:
    text = "version: '4'\nservices:\n  web: {image: x}\nsecrets: {}\nextra: 1\n"
    assert [(p.path, p.message.split(":")[0]) for p in problems_of(text)] == [
        ("version", "version 4 is not one Corral reads"),
        ("secrets", "secrets is not supported"), ("extra", "unknown key extra")]


@pytest.mark.parametrize("text", ["", "version: '2'\nservices: {}\n", "{}\n"])
def test_a_file_with_no_services_is_a_problem(text: str) -> None:
    (problem,) = problems_of(text)
    assert problem.message == "the file has no services"


def test_v3_long_syntax_ports_and_volumes_become_short_strings() -> None:
    launch = one({"image": "x", "ports": [
        {"target": 80, "published": 8080, "protocol": "tcp", "mode": "host"}, {"target": 53}],
        "volumes": [{"type": "volume", "source": "data", "target": "/data"},
                    {"type": "bind", "source": "/etc/a", "target": "/a", "read_only": True},
                    {"target": "/scratch"}]}).fields["launchConfig"]
    assert launch["ports"] == ["8080:80/tcp", "53"]
    assert launch["dataVolumes"] == ["data:/data", "/etc/a:/a:ro", "/scratch"]


def test_v3_long_syntax_problems_name_the_item_key() -> None:
    found = problems_of(compose({"web": {"image": "x", "ports": [
        {"target": "eighty", "mode": "ingress", "name": "p"}],
        "volumes": [{"type": "tmpfs", "target": "/t"}]}}, version="3.2"))
    assert [p.path for p in found] == [
        "services.web.ports[0].name", "services.web.ports[0].mode",
        "services.web.ports[0].target", "services.web.volumes[0].type"]


def test_v3_deploy_replicas_is_the_scale_and_other_deploy_keys_are_problems() -> None:
    assert one({"image": "x", "deploy": {"replicas": 3, "mode": "replicated"}}) \
        .fields["scale"] == 3
    (problem,) = problems_of(compose({"web": {"image": "x", "deploy": {
        "replicas": 2, "resources": {}}}}, version="3"))
    assert problem.path == "services.web.deploy.resources"
    assert "only replicas is supported" in problem.message


def test_rancher_compose_scale_must_agree_with_deploy_replicas() -> None:
    (problem,) = problems_of(compose({"web": {"image": "x", "deploy": {"replicas": 2}}}),
                             compose({"web": {"scale": 3}}))
    assert "differ" in problem.message


def test_interpolation_applies_to_both_files_from_the_environment() -> None:
    template = one({"image": "nginx:${TAG:-latest}", "environment": {"PORT": "$PORT"}},
                   {"scale": "${SCALE}"}, environment={"PORT": "80", "SCALE": "4"})
    assert template.fields == {"name": "web", "scale": 4, "launchConfig": {
        "imageUuid": "docker:nginx:latest", "environment": {"PORT": "80"}}}


def test_a_bare_environment_name_takes_the_stacks_value_or_is_empty() -> None:
    launch = one({"image": "x", "environment": ["HOME", "MISSING", "SET=1"]},
                 environment={"HOME": "/root"}).fields["launchConfig"]
    assert launch["environment"] == {"HOME": "/root", "MISSING": "", "SET": "1"}
    launch = one({"image": "x", "environment": {"HOME": None}},
                 environment={"HOME": "/root"}).fields["launchConfig"]
    assert launch["environment"] == {"HOME": "/root"}


def test_env_files_are_merged_under_the_explicit_environment() -> None:
    files = {"a.env": "# settings\nA=1\n\nB=from a\n", "b.env": "B=from b\nC=3=4\n"}
    launch = one({"image": "x", "env_file": ["a.env", "b.env"], "environment": {"C": "mine"}},
                 env_files=files).fields["launchConfig"]
    assert launch["environment"] == {"A": "1", "B": "from b", "C": "mine"}


def test_an_env_file_whose_contents_were_not_given_is_a_problem() -> None:
    found = problems_of(compose({"web": {"image": "x", "env_file": "secret.env"}}),
                        env_files={"bad.env": "not a pair\n"})
    assert [(p.path, p.message) for p in found] == [
        ("services.web.env_file", "env_file secret.env: its contents were not given")]
    (problem,) = problems_of(compose({"web": {"image": "x", "env_file": "bad.env"}}),
                             env_files={"bad.env": "ok=1\nnot a pair\n"})
    assert problem.message == "env_file bad.env line 2: 'not a pair' is not KEY=VALUE"


def test_links_and_external_links_become_service_links_with_default_aliases() -> None:
    stack = parse_stack(compose({
        "web": {"image": "x", "links": ["db", "db:database"],
                "external_links": ["shared/cache", "shared/queue:mq"]},
        "db": {"image": "postgres"}}))
    assert stack.services[0].links == (
        ServiceLink("db", "db"), ServiceLink("db", "database"),
        ServiceLink("shared/cache", "cache"), ServiceLink("shared/queue", "mq"))
    assert "links" not in stack.services[0].fields["launchConfig"]


def test_a_link_to_a_service_not_in_the_stack_names_it() -> None:
    (problem,) = problems_of(compose({"web": {"image": "x", "links": ["db"]}}))
    assert (problem.path, problem.message) == ("services.web.links", "no service db in this stack")


def test_an_external_link_must_name_a_stack() -> None:
    (problem,) = problems_of(compose({"web": {"image": "x", "external_links": ["legacy"]}}))
    assert problem.path == "services.web.external_links[0]"


def test_sidekicks_fold_into_the_primary_with_their_links_and_health_checks() -> None:
    stack = parse_stack(compose({
        "web": {"image": "nginx", "labels": {"io.rancher.sidekicks": "data, log"},
                "volumes_from": ["data"]},
        "data": {"image": "busybox", "volumes": ["/srv"]},
        "log": {"image": "fluentd", "links": ["db"], "volumes_from": ["service:web:rw"]},
        "db": {"image": "postgres"}}),
        compose({"log": {"health_check": {"port": 24224}}}))
    web, db = stack.services
    assert db.name == "db" and web.links == (ServiceLink("db", "db"),)
    assert web.fields["launchConfig"]["dataVolumesFromLaunchConfigs"] == ["data"]
    assert web.fields["secondaryLaunchConfigs"] == [
        {"name": "data", "imageUuid": "docker:busybox", "dataVolumes": ["/srv"]},
        {"name": "log", "imageUuid": "docker:fluentd", "dataVolumesFromLaunchConfigs": ["web"],
         "healthCheck": {"port": 24224}}]


def test_sidekick_problems_are_each_named() -> None:
    found = problems_of(compose({
        "a": {"image": "x", "labels": {"io.rancher.sidekicks": "a,ghost,c"}},
        "b": {"image": "x", "labels": {"io.rancher.sidekicks": "c"}},
        "c": {"image": "x"}}), compose({"c": {"scale": 2}}))
    assert [p.message for p in found] == [
        "the service a cannot be its own sidekick",
        "the sidekick ghost is not a service of this file",
        "c is a sidekick of both a and b; give it to one",
        "scale belongs to the primary service: a sidekick takes only health_check"]


def test_volumes_from_outside_the_service_or_a_container_is_a_problem() -> None:
    found = problems_of(compose({"web": {"image": "x", "volumes_from": [
        "db", "container:legacy", "web2:ro"]}, "db": {"image": "x"},
        "web2": {"image": "x"}}))
    assert [p.path for p in found] == ["services.web.volumes_from[1]",
                                       "services.web.volumes_from[2]",
                                       "services.web.volumes_from[0]",
                                       "services.web.volumes_from[2]"]


@pytest.mark.parametrize(("image", "kind"), [
    ("rancher/dns-service", "dnsService"), ("rancher/dns-service:v1", "dnsService"),
    ("rancher/external-service", "externalService"),
    ("rancher/lb-service-haproxy:v0.9.14", "loadBalancerService"),
    ("rancher/dns-service-fork", "service"), ("nginx", "service"),
])
def test_the_image_decides_the_service_type(image: str, kind: str) -> None:
    assert one({"image": image}).type == kind


def test_a_dns_service_keeps_only_its_image_and_links_to_its_targets() -> None:
    stack = parse_stack(compose({"alias": {"image": "rancher/dns-service", "links": ["web"]},
                                 "web": {"image": "x"}}))
    assert stack.services[0].fields == {
        "name": "alias", "launchConfig": {"imageUuid": "docker:rancher/dns-service"}}
    assert stack.services[0].links == (ServiceLink("web", "web"),)
    (problem,) = problems_of(compose({"alias": {"image": "rancher/dns-service", "ports": [1]}}))
    assert problem.path == "services.alias.ports" and "takes only" in problem.message


def test_an_external_service_takes_its_ips_hostname_and_health_check_from_rancher_compose(
        ) -> None:
    template = one({"image": "rancher/external-service"}, {
        "external_ips": ["10.0.0.1", "10.0.0.2"], "health_check": {"port": 80}})
    assert template.fields == {
        "name": "web", "launchConfig": {"imageUuid": "docker:rancher/external-service"},
        "externalIpAddresses": ["10.0.0.1", "10.0.0.2"], "healthCheck": {"port": 80}}
    assert one({"image": "rancher/external-service"}, {"hostname": "db.example.com"}) \
        .fields["hostname"] == "db.example.com"


def test_problems_of_both_files_are_reported_together() -> None:
    with pytest.raises(ComposeError) as caught:
        parse_stack("web:\n  image: x\n  colour: red\n", "web:\n  scale: [1]\nghost: {}\n")
    assert [(p.file, p.path) for p in caught.value.problems] == [
        ("dockerCompose", "web.colour"), ("rancherCompose", "web.scale"),
        ("rancherCompose", "ghost")]
    assert str(caught.value).startswith("The compose files have 3 problems: ")


def test_syntax_errors_in_both_files_are_both_reported() -> None:
    found = problems_of("web: [\n", "web: {\n")
    assert [p.file for p in found] == ["dockerCompose", "rancherCompose"]


def test_the_error_summary_is_one_sentence_that_counts_what_it_leaves_out() -> None:
    text = "web:\n  image: x\n" + "".join(f"  k{i}: 1\n" for i in range(7))
    with pytest.raises(ComposeError) as caught:
        parse_stack(text)
    message = str(caught.value)
    assert message.startswith("The compose files have 7 problems: docker-compose.yml web.k0 "
                              "(line 3, column 3): unknown key k0; ")
    assert message.endswith("; and 2 more.") and len(caught.value.problems) == 7


def test_the_package_imports_nothing_beyond_the_standard_library_and_yaml() -> None:
    code = ("import json, sys, server.compose; print(json.dumps([m for m in sys.modules if "
            "m.startswith(('aiohttp', 'asyncio', 'sqlalchemy', 'docker', 'websockets', "
            "'shared', 'server.'))]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert all(name.startswith("server.compose") for name in json.loads(out))
