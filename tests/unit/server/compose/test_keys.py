"""Each docker-compose key and its launchConfig field (server/compose/keys.py, values.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.server.compose.helpers import compose, one, problems_of

GIB = 1024**3


@pytest.mark.parametrize(("key", "value", "field", "expected"), [
    ("command", "sh -c 'echo hi there'", "command", ["sh", "-c", "echo hi there"]),
    ("command", ["sleep", 3600], "command", ["sleep", "3600"]),
    ("entrypoint", "/bin/tini --", "entryPoint", ["/bin/tini", "--"]),
    ("labels", ["a=1", "b"], "labels", {"a": "1", "b": ""}),
    ("labels", {"a": 1, "b": None}, "labels", {"a": "1", "b": ""}),
    ("ports", ["8080:80", 443, "127.0.0.1:53:53/udp"], "ports",
     ["8080:80", "443", "127.0.0.1:53:53/udp"]),
    ("expose", [80, "9000/udp"], "expose", ["80", "9000/udp"]),
    ("volumes", ["/data", "logs:/var/log:ro"], "dataVolumes", ["/data", "logs:/var/log:ro"]),
    ("volume_driver", "local", "volumeDriver", "local"),
    ("network_mode", "host", "networkMode", "host"),
    ("network_mode", "container:other", "networkMode", "container:other"),
    ("net", "none", "networkMode", "none"),
    ("dns", "8.8.8.8", "dns", ["8.8.8.8"]),
    ("dns_search", ["a.local", "b.local"], "dnsSearch", ["a.local", "b.local"]),
    ("restart", "always", "restartPolicy", {"name": "always"}),
    ("restart", "unless-stopped", "restartPolicy", {"name": "unless-stopped"}),
    ("restart", False, "restartPolicy", {"name": "no"}),
    ("restart", "on-failure:5", "restartPolicy", {"name": "on-failure", "maximumRetryCount": 5}),
    ("cpu_shares", 512, "cpuShares", 512),
    ("cpuset", "0,1", "cpuSet", "0,1"),
    ("mem_limit", "512m", "memory", 512 * 1024**2),
    ("mem_limit", "1G", "memory", GIB),
    ("mem_limit", "1.5g", "memory", GIB * 3 // 2),
    ("mem_limit", 100000, "memory", 100000),
    ("mem_limit", "2048b", "memory", 2048),
    ("mem_limit", "64k", "memory", 65536),
    ("memswap_limit", -1, "memorySwap", -1),
    ("mem_reservation", "256M", "memoryReservation", 256 * 1024**2),
    ("privileged", True, "privileged", True),
    ("cap_add", ["NET_ADMIN"], "capAdd", ["NET_ADMIN"]),
    ("cap_drop", "ALL", "capDrop", ["ALL"]),
    ("devices", ["/dev/fuse:/dev/fuse"], "devices", ["/dev/fuse:/dev/fuse"]),
    ("user", 1000, "user", "1000"),
    ("working_dir", "/app", "workingDir", "/app"),
    ("tty", True, "tty", True),
    ("stdin_open", True, "stdinOpen", True),
    ("read_only", True, "readOnly", True),
    ("extra_hosts", ["db:10.0.0.2"], "extraHosts", ["db:10.0.0.2"]),
    ("extra_hosts", {"db": "10.0.0.2"}, "extraHosts", ["db:10.0.0.2"]),
    ("hostname", "web1", "hostname", "web1"),
    ("domainname", "example.com", "domainName", "example.com"),
    ("pid", "host", "pidMode", "host"),
    ("ipc", "host", "ipcMode", "host"),
    ("ulimits", {"nproc": 65535, "nofile": {"soft": 20000, "hard": 40000}}, "ulimits",
     [{"name": "nproc", "soft": 65535, "hard": 65535},
      {"name": "nofile", "soft": 20000, "hard": 40000}]),
    ("logging", {"driver": "syslog", "options": {"tag": "web", "n": 3}}, "logConfig",
     {"driver": "syslog", "config": {"tag": "web", "n": "3"}}),
    ("logging", {"driver": "json-file"}, "logConfig", {"driver": "json-file", "config": {}}),
    ("log_driver", "gelf", "logConfig", {"driver": "gelf", "config": {}}),
    ("environment", ["A=1", "B=x=y"], "environment", {"A": "1", "B": "x=y"}),
    ("environment", {"A": 1, "B": 2.5}, "environment", {"A": "1", "B": "2.5"}),
])
def test_each_compose_key_becomes_its_launch_config_field(
        key: str, value: Any, field: str, expected: Any) -> None:
    launch = one({"image": "busybox", key: value}).fields["launchConfig"]
    assert launch == {"imageUuid": "docker:busybox", field: expected}


def test_the_image_becomes_a_docker_image_uuid() -> None:
    assert one({"image": "registry:5000/team/app:1.2"}).fields == {
        "name": "web", "launchConfig": {"imageUuid": "docker:registry:5000/team/app:1.2"}}


def test_v1_log_driver_and_log_opt_together_make_one_log_config() -> None:
    launch = one({"image": "x", "log_driver": "syslog", "log_opt": {"tag": "a"}}) \
        .fields["launchConfig"]
    assert launch["logConfig"] == {"driver": "syslog", "config": {"tag": "a"}}


@pytest.mark.parametrize(("key", "value"), [
    ("privileged", False), ("tty", False), ("ports", []), ("labels", {}), ("environment", []),
])
def test_false_switches_and_empty_collections_are_left_out(key: str, value: Any) -> None:
    assert one({"image": "x", key: value}).fields["launchConfig"] == {"imageUuid": "docker:x"}


@pytest.mark.parametrize(("key", "value", "path", "message"), [
    ("cpu_shares", "many", "services.web.cpu_shares", "must be an integer, not a string"),
    ("cpu_shares", True, "services.web.cpu_shares", "not a boolean (quote it"),
    ("privileged", "sure", "services.web.privileged", "must be true or false"),
    ("mem_limit", "lots", "services.web.mem_limit", "must be a size such as 512m"),
    ("ports", ["80:80:80:80"], "services.web.ports[0]", "is not [[hostIp:]hostPort:]"),
    ("command", "echo 'unclosed", "services.web.command", "cannot be split"),
    ("command", {"a": 1}, "services.web.command", "a string or a list of strings"),
    ("restart", "sometimes", "services.web.restart", "is not one of no, always"),
    ("restart", "always:3", "services.web.restart", "is not one of no, always"),
    ("ulimits", ["nofile"], "services.web.ulimits", "a mapping of limit names"),
    ("labels", "a=1", "services.web.labels", "a mapping or a list of key=value"),
    ("dns", [["8.8.8.8"]], "services.web.dns[0]", "must be a string, not a list"),
    ("logging", {"options": {"a": "b"}}, "services.web.logging.driver", "a log driver is needed"),
    ("image", "bad image", "services.web.image", "is not an image name"),
])
def test_a_value_of_the_wrong_type_is_a_problem_at_its_path(
        key: str, value: Any, path: str, message: str) -> None:
    (problem,) = problems_of(compose({"web": {"image": "x", key: value}}))
    assert problem.path == path and message in problem.message
    assert problem.line is not None and problem.column is not None


@pytest.mark.parametrize(("key", "reason"), [
    ("build", "Corral does not build images"),
    ("container_name", "Rancher names a service's containers itself"),
    ("depends_on", "use links"),
    ("networks", "managed network"),
    ("healthcheck", "health_check in rancher-compose.yml"),
    ("shm_size", "Corral's containers do not offer it"),
])
def test_keys_corral_cannot_honour_say_so(key: str, reason: str) -> None:
    (problem,) = problems_of(compose({"web": {"image": "x", key: "y"}}))
    assert problem.path == f"services.web.{key}"
    assert problem.message.startswith(f"{key} is not supported: ") and reason in problem.message


def test_every_unknown_key_is_listed_together_with_its_line_and_column() -> None:
    text = "version: '2'\nservices:\n  web:\n    image: x\n    colour: red\n    size: 3\n" \
           "    logging:\n      driver: syslog\n      level: debug\n"
    assert [(p.path, p.message, p.line, p.column) for p in problems_of(text)] == [
        ("services.web.colour", "unknown key colour", 5, 5),
        ("services.web.size", "unknown key size", 6, 5),
        ("services.web.logging.level", "unknown key level", 9, 7),
    ]


def test_extension_keys_are_ignored() -> None:
    assert one({"image": "x", "x-note": "hi"}).fields["launchConfig"] == \
        {"imageUuid": "docker:x"}


def test_a_service_without_an_image_is_a_problem() -> None:
    (problem,) = problems_of(compose({"web": {"command": "true"}}))
    assert problem.message == "the service web needs an image"
