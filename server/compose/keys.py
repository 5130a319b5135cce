"""The key-by-key tables between compose files and Corral's (Rancher's v2-beta) fields.

``LAUNCH_KEYS`` maps a docker-compose service key to its ``launchConfig`` field, with the
reader that checks it and the writer that gives it back for export. Keys read with more than
one value in mind (``environment`` with ``env_file``, ``logging``, ``links``, ``volumes_from``,
``deploy``) are handled in ``service``. ``UNSUPPORTED`` lists the compose keys Rancher or
Docker knew that Corral cannot honour, each with the reason a user is told; any other key is
unknown. The rancher-compose tables are ``Entry`` trees whose field names are the camelCase of
their keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.compose import values as v
from server.compose.errors import Report

DOCKER_PREFIX = "docker:"


def _image(value: Any, path: str, report: Report) -> str | None:
    text = v.string(value, path, report)
    if text is not None and (not text.strip() or any(c.isspace() for c in text)):
        report.problem(path, f"{text!r} is not an image name")
        return None
    return None if text is None else DOCKER_PREFIX + text


def _write_restart(policy: dict[str, Any]) -> str:
    count = policy.get("maximumRetryCount")
    return f"{policy['name']}:{count}" if count else str(policy["name"])


def _write_ulimits(limits: list[dict[str, Any]]) -> dict[str, Any]:
    return {u["name"]: u["soft"] if u.get("hard", u["soft"]) == u["soft"]
            else {"soft": u["soft"], "hard": u["hard"]} for u in limits}


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class LaunchKey:
    """A docker-compose key, its ``launchConfig`` field, and how to read and write it."""

    key: str
    field: str
    read: v.Reader
    write: Callable[[Any], Any] = _same


LAUNCH_KEYS = (
    LaunchKey("image", "imageUuid", _image, lambda uuid: str(uuid).removeprefix(DOCKER_PREFIX)),
    LaunchKey("command", "command", v.argv),
    LaunchKey("entrypoint", "entryPoint", v.argv),
    LaunchKey("labels", "labels", v.string_map),
    LaunchKey("ports", "ports", v.ports),
    LaunchKey("expose", "expose", v.string_list),
    LaunchKey("volumes", "dataVolumes", v.volumes),
    LaunchKey("volume_driver", "volumeDriver", v.string),
    LaunchKey("network_mode", "networkMode", v.string),
    LaunchKey("dns", "dns", v.string_list),
    LaunchKey("dns_search", "dnsSearch", v.string_list),
    LaunchKey("restart", "restartPolicy", v.restart, _write_restart),
    LaunchKey("cpu_shares", "cpuShares", v.integer),
    LaunchKey("cpuset", "cpuSet", v.string),
    LaunchKey("mem_limit", "memory", v.memory),
    LaunchKey("memswap_limit", "memorySwap", v.memory),
    LaunchKey("mem_reservation", "memoryReservation", v.memory),
    LaunchKey("privileged", "privileged", v.boolean),
    LaunchKey("cap_add", "capAdd", v.string_list),
    LaunchKey("cap_drop", "capDrop", v.string_list),
    LaunchKey("devices", "devices", v.string_list),
    LaunchKey("user", "user", v.string),
    LaunchKey("working_dir", "workingDir", v.string),
    LaunchKey("tty", "tty", v.boolean),
    LaunchKey("stdin_open", "stdinOpen", v.boolean),
    LaunchKey("read_only", "readOnly", v.boolean),
    LaunchKey("extra_hosts", "extraHosts", v.extra_hosts),
    LaunchKey("hostname", "hostname", v.string),
    LaunchKey("domainname", "domainName", v.string),
    LaunchKey("pid", "pidMode", v.string),
    LaunchKey("ipc", "ipcMode", v.string),
    LaunchKey("ulimits", "ulimits", v.ulimits, _write_ulimits),
)
BY_KEY = {k.key: k for k in LAUNCH_KEYS}
BY_FIELD = {k.field: k for k in LAUNCH_KEYS}
# Read by ``service`` rather than through LAUNCH_KEYS.
SPECIAL_KEYS = frozenset({"environment", "env_file", "logging", "log_driver", "log_opt", "net",
                          "links", "external_links", "volumes_from", "deploy"})
# Boolean fields whose false is Docker's default: left out when false, both ways.
FALSE_DEFAULTS = frozenset({"privileged", "tty", "stdinOpen", "readOnly"})

_NOT_OFFERED = "Corral's containers do not offer it"
UNSUPPORTED = {
    "build": "Corral does not build images; build and push the image, then give image",
    "container_name": "Rancher names a service's containers itself",
    "depends_on": "Corral starts a stack's services together; use links to reach a service",
    "networks": "a service's containers join the environment's managed network",
    "healthcheck": "Docker health checks are not run; give health_check in rancher-compose.yml",
    "extends": "write the service out in full",
    "scale": "give scale in rancher-compose.yml",
    "secrets": "Docker swarm secrets are not supported",
    "configs": "Docker swarm configs are not supported",
    **dict.fromkeys(("stop_signal", "stop_grace_period", "shm_size", "sysctls", "tmpfs",
                     "security_opt", "oom_score_adj", "oom_kill_disable", "group_add",
                     "cgroup_parent", "mac_address", "cpu_quota", "cpu_period", "cpus",
                     "cpu_count", "cpu_percent", "mem_swappiness", "init", "isolation",
                     "userns_mode", "platform", "pull_policy", "profiles", "blkio_config",
                     "storage_opt", "runtime", "links_from", "cpu_rt_runtime",
                     "cpu_rt_period"), _NOT_OFFERED),
}
DEPLOY_UNSUPPORTED = "of deploy only replicas is supported (it is the service's scale)"


@dataclass(frozen=True)
class Entry:
    """A rancher-compose key: its reader, or the entries of its mapping (``many``: a list
    of such mappings). Its field is the key in camelCase unless ``field`` says otherwise."""

    key: str
    read: v.Reader | None = None
    entries: tuple[Entry, ...] = ()
    many: bool = False
    field: str = ""

    @property
    def name(self) -> str:
        return self.field or camel(self.key)


def camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.capitalize() for part in rest)


QUORUM = (Entry("quorum", v.integer),)
HEALTH_CHECK = (
    Entry("port", v.integer), Entry("request_line", v.string), Entry("interval", v.integer),
    Entry("response_timeout", v.integer), Entry("healthy_threshold", v.integer),
    Entry("unhealthy_threshold", v.integer), Entry("initializing_timeout", v.integer),
    Entry("reinitializing_timeout", v.integer), Entry("strategy", v.string),
    Entry("recreate_on_quorum_strategy_config", entries=QUORUM),
)
UPGRADE_STRATEGY = (Entry("batch_size", v.integer), Entry("interval_millis", v.integer),
                    Entry("start_first", v.boolean))
PORT_RULE = (
    Entry("source_port", v.integer), Entry("target_port", v.integer),
    Entry("protocol", v.string), Entry("hostname", v.string), Entry("path", v.string),
    Entry("service", v.string), Entry("selector", v.string), Entry("backend_name", v.string),
    Entry("priority", v.integer),
)
STICKINESS_POLICY = (
    Entry("name", v.string), Entry("cookie", v.string), Entry("domain", v.string),
    Entry("indirect", v.boolean), Entry("nocache", v.boolean), Entry("postonly", v.boolean),
    Entry("mode", v.string),
)
LB_CONFIG = (
    Entry("port_rules", entries=PORT_RULE, many=True), Entry("certs", v.string_list),
    Entry("default_cert", v.string), Entry("stickiness_policy", entries=STICKINESS_POLICY),
    Entry("config", v.string),
)
# rancher-compose keys of a service, whatever its type.
SERVICE = (
    Entry("scale", v.integer), Entry("start_on_create", v.boolean),
    Entry("metadata", v.anything), Entry("upgrade_strategy", entries=UPGRADE_STRATEGY),
    Entry("retain_ip", v.boolean), Entry("drain_timeout_ms", v.integer),
    Entry("description", v.string),
)
# rancher-compose keys for one service type only, and that type.
TYPED = {"lb_config": "loadBalancerService", "external_ips": "externalService",
         "hostname": "externalService"}
EXTERNAL_IPS = Entry("external_ips", v.string_list, field="externalIpAddresses")
RANCHER_UNSUPPORTED = {
    "load_balancer_config": "Rancher 1.1 load balancers are not supported; use "
                            "lb_config with an image rancher/lb-service-haproxy",
}
