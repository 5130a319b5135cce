"""The container spec: a v2-beta container's API values → the normalised spec, or Rancher's 422s.

Table-driven: each case is named for the behaviour it pins. Good inputs give exact spec
values; every malformed input gives (422, Rancher's code, the offending fieldName).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from server.api.errors import ValidationError
from server.resources.container_spec import (
    build_spec,
    parse_expose,
    parse_image,
    parse_memory,
    parse_ports,
    parse_volumes,
    volume_names,
)

ROOT = Path(__file__).parents[3]
GOLDEN = ROOT / "tests" / "data" / "container_spec" / "full.json"
IMAGE = {"imageUuid": "docker:busybox"}
UUID = "c0ffee00-0000-4000-8000-000000000001"
MIB = 1024 * 1024
DIGEST = "sha256:" + "0123456789abcdef" * 4


def spec_of(values: dict[str, Any]) -> dict[str, Any]:
    return build_spec({**IMAGE, **values}, uuid=UUID, name="web")


def port(host_ip: str | None, host_port: int | None, container_port: int,
         protocol: str = "tcp") -> dict[str, Any]:
    return {"hostIp": host_ip, "hostPort": host_port, "containerPort": container_port,
            "protocol": protocol}


def cases(table: list[tuple[Any, ...]]) -> list[Any]:
    return [pytest.param(*rest, id=name) for name, *rest in table]


# (behaviour, input values besides imageUuid, the spec keys it must produce)
GOOD: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("image_without_tag_gets_latest", {}, {"image": "busybox:latest"}),
    ("command_list_is_kept", {"command": ["sh", "-c", "echo hi"]},
     {"command": ["sh", "-c", "echo hi"]}),
    ("command_string_is_split_like_a_shell", {"command": "sh -c 'echo hi there'"},
     {"command": ["sh", "-c", "echo hi there"]}),
    ("empty_command_means_the_image_default", {"command": []}, {"command": None}),
    ("blank_command_string_means_the_image_default", {"command": "  "}, {"command": None}),
    ("entry_point_string_is_split", {"entryPoint": "/bin/sh -c"},
     {"entryPoint": ["/bin/sh", "-c"]}),
    ("entry_point_list_is_kept", {"entryPoint": ["/init"]}, {"entryPoint": ["/init"]}),
    ("environment_is_kept", {"environment": {"A": "1", "EMPTY": ""}},
     {"environment": {"A": "1", "EMPTY": ""}}),
    ("labels_are_kept", {"labels": {"io.rancher.scheduler.global": "true"}},
     {"labels": {"io.rancher.scheduler.global": "true"}}),
    ("port_with_host_port", {"ports": ["8080:80"]}, {"ports": [port(None, 8080, 80)]}),
    ("port_with_protocol", {"ports": ["8080:80/tcp"]}, {"ports": [port(None, 8080, 80)]}),
    ("port_alone_gets_a_random_host_port", {"ports": ["80/udp"]},
     {"ports": [port(None, None, 80, "udp")]}),
    ("port_with_host_ip", {"ports": ["127.0.0.1:8080:80/tcp"]},
     {"ports": [port("127.0.0.1", 8080, 80)]}),
    ("port_with_host_ip_and_random_port", {"ports": ["127.0.0.1::80"]},
     {"ports": [port("127.0.0.1", None, 80)]}),
    ("port_with_bracketed_ipv6_host_ip", {"ports": ["[::1]:8080:80"]},
     {"ports": [port("::1", 8080, 80)]}),
    ("port_protocol_is_lower_cased", {"ports": ["53:53/UDP"]},
     {"ports": [port(None, 53, 53, "udp")]}),
    ("same_host_port_on_tcp_and_udp_is_allowed", {"ports": ["53:53/tcp", "53:53/udp"]},
     {"ports": [port(None, 53, 53), port(None, 53, 53, "udp")]}),
    ("same_host_port_on_two_ips_is_allowed", {"ports": ["10.0.0.1:80:80", "10.0.0.2:80:81"]},
     {"ports": [port("10.0.0.1", 80, 80), port("10.0.0.2", 80, 81)]}),
    ("agent_ip_and_another_ip_do_not_clash", {"ports": ["80:80", "127.0.0.1:80:80"]},
     {"ports": [port(None, 80, 80), port("127.0.0.1", 80, 80)]}),
    ("random_host_ports_never_clash", {"ports": ["80", "80"]},
     {"ports": [port(None, None, 80), port(None, None, 80)]}),
    ("expose_single_port", {"expose": ["80"]}, {"expose": [{"containerPort": 80,
                                                            "protocol": "tcp"}]}),
    ("expose_udp", {"expose": ["53/udp"]}, {"expose": [{"containerPort": 53,
                                                         "protocol": "udp"}]}),
    ("expose_range_is_expanded", {"expose": ["8000-8002/tcp"]},
     {"expose": [{"containerPort": p, "protocol": "tcp"} for p in (8000, 8001, 8002)]}),
    ("expose_duplicates_collapse", {"expose": ["80", "80/tcp", "79-80"]},
     {"expose": [{"containerPort": 80, "protocol": "tcp"},
                 {"containerPort": 79, "protocol": "tcp"}]}),
    ("expose_allows_a_thousand_ports", {"expose": ["1-1000"]},
     {"expose": [{"containerPort": p, "protocol": "tcp"} for p in range(1, 1001)]}),
    ("bind_mount_defaults_to_rw", {"dataVolumes": ["/host:/ctr"]},
     {"binds": [{"source": "/host", "destination": "/ctr", "mode": "rw"}], "volumes": []}),
    ("bind_mount_read_only", {"dataVolumes": ["/host:/ctr:ro"]},
     {"binds": [{"source": "/host", "destination": "/ctr", "mode": "ro"}]}),
    ("bind_mount_mode_is_kept", {"dataVolumes": ["/host:/ctr:rw,z"]},
     {"binds": [{"source": "/host", "destination": "/ctr", "mode": "rw,z"}]}),
    ("bind_mount_propagation", {"dataVolumes": ["/host:/ctr:ro,rshared"]},
     {"binds": [{"source": "/host", "destination": "/ctr", "mode": "ro,rshared"}]}),
    ("bind_paths_are_cleaned", {"dataVolumes": ["/srv/../data/:/ctr//x/"]},
     {"binds": [{"source": "/data", "destination": "/ctr/x", "mode": "rw"}]}),
    ("named_volume_uses_the_local_driver", {"dataVolumes": ["db-data:/var/lib/db"]},
     {"binds": [], "volumes": [{"name": "db-data", "destination": "/var/lib/db",
                                "mode": "rw", "driver": "local"}]}),
    ("named_volume_uses_volume_driver", {"dataVolumes": ["db:/d:ro,nocopy"],
                                         "volumeDriver": "rexray/ebs:latest"},
     {"volumes": [{"name": "db", "destination": "/d", "mode": "ro,nocopy",
                   "driver": "rexray/ebs:latest"}]}),
    ("anonymous_volume_has_no_name", {"dataVolumes": ["/cache"]},
     {"volumes": [{"name": None, "destination": "/cache", "mode": "rw", "driver": "local"}]}),
    ("anonymous_volume_with_mode", {"dataVolumes": ["/cache:ro"]},
     {"volumes": [{"name": None, "destination": "/cache", "mode": "ro", "driver": "local"}]}),
    ("volumes_from_are_kept_as_given", {"dataVolumesFrom": ["1i5", "1i7"]},
     {"volumesFrom": ["1i5", "1i7"]}),
    ("network_defaults_to_managed", {}, {"networkMode": "managed", "ipAddress": None}),
    ("managed_network", {"networkMode": "managed"}, {"networkMode": "managed"}),
    ("docker_bridge", {"networkMode": "bridge"}, {"networkMode": "bridge"}),
    ("host_network", {"networkMode": "host"}, {"networkMode": "host"}),
    ("no_network", {"networkMode": "none"}, {"networkMode": "none"}),
    ("another_containers_network", {"networkMode": "container:1i9"},
     {"networkMode": "container:1i9"}),
    ("rancher_network_container_id_form", {"networkMode": "container",
                                           "networkContainerId": "1i9"},
     {"networkMode": "container:1i9"}),
    ("dns_servers", {"dns": ["8.8.8.8", "2001:4860:4860::8888"]},
     {"dns": ["8.8.8.8", "2001:4860:4860::8888"]}),
    ("dns_search_domains", {"dnsSearch": ["example.com", "corp.internal.", "."]},
     {"dnsSearch": ["example.com", "corp.internal.", "."]}),
    ("restart_policy_object", {"restartPolicy": {"name": "on-failure",
                                                 "maximumRetryCount": 3}},
     {"restartPolicy": {"name": "on-failure", "maximumRetryCount": 3}}),
    ("restart_policy_object_without_count", {"restartPolicy": {"name": "always"}},
     {"restartPolicy": {"name": "always", "maximumRetryCount": 0}}),
    ("restart_policy_string", {"restartPolicy": "unless-stopped"},
     {"restartPolicy": {"name": "unless-stopped", "maximumRetryCount": 0}}),
    ("restart_policy_string_with_retries", {"restartPolicy": "on-failure:3"},
     {"restartPolicy": {"name": "on-failure", "maximumRetryCount": 3}}),
    ("restart_policy_no", {"restartPolicy": {"name": "no", "maximumRetryCount": 0}},
     {"restartPolicy": {"name": "no", "maximumRetryCount": 0}}),
    ("cpu_shares", {"cpuShares": 512}, {"cpuShares": 512}),
    ("zero_cpu_shares_is_unset", {"cpuShares": 0}, {"cpuShares": None}),
    ("cpu_set", {"cpuSet": "0-2,4"}, {"cpuSet": "0-2,4"}),
    ("memory_in_bytes", {"memory": 64 * MIB}, {"memory": 64 * MIB}),
    ("memory_with_unit", {"memory": "512m"}, {"memory": 512 * MIB}),
    ("zero_memory_is_unset", {"memory": 0}, {"memory": None, "memorySwap": None}),
    ("memory_swap_unlimited", {"memory": "1g", "memorySwap": -1},
     {"memory": 1024 * MIB, "memorySwap": -1}),
    ("memory_swap_equal_to_memory_means_no_swap", {"memory": "1g", "memorySwap": "1g"},
     {"memorySwap": 1024 * MIB}),
    ("memory_swap_above_memory", {"memory": "1g", "memorySwap": "2g"},
     {"memorySwap": 2048 * MIB}),
    ("reservations_are_checked_but_not_in_the_spec",
     {"memory": "1g", "memoryReservation": "512m", "milliCpuReservation": 500},
     {"memory": 1024 * MIB}),
    ("flags_are_kept", {"privileged": True, "tty": True, "stdinOpen": True, "readOnly": True},
     {"privileged": True, "tty": True, "stdinOpen": True, "readOnly": True}),
    ("null_flags_are_false", {"privileged": None}, {"privileged": False}),
    ("capabilities_are_upper_cased_without_prefix",
     {"capAdd": ["NET_ADMIN", "cap_sys_time", "CAP_NET_ADMIN"], "capDrop": ["ALL"]},
     {"capAdd": ["NET_ADMIN", "SYS_TIME"], "capDrop": ["ALL"]}),
    ("device_alone_maps_to_itself", {"devices": ["/dev/fuse"]},
     {"devices": [{"pathOnHost": "/dev/fuse", "pathInContainer": "/dev/fuse",
                   "permissions": "rwm"}]}),
    ("device_to_another_path", {"devices": ["/dev/sda:/dev/xvda"]},
     {"devices": [{"pathOnHost": "/dev/sda", "pathInContainer": "/dev/xvda",
                   "permissions": "rwm"}]}),
    ("device_with_permissions", {"devices": ["/dev/sda:/dev/xvda:r"]},
     {"devices": [{"pathOnHost": "/dev/sda", "pathInContainer": "/dev/xvda",
                   "permissions": "r"}]}),
    ("device_with_permissions_only", {"devices": ["/dev/snd:rw"]},
     {"devices": [{"pathOnHost": "/dev/snd", "pathInContainer": "/dev/snd",
                   "permissions": "rw"}]}),
    ("user_and_group", {"user": "1000:1000"}, {"user": "1000:1000"}),
    ("empty_strings_are_unset", {"user": "", "workingDir": "", "hostname": "", "cpuSet": ""},
     {"user": None, "workingDir": None, "hostname": None, "cpuSet": None}),
    ("working_dir", {"workingDir": "/srv/app"}, {"workingDir": "/srv/app"}),
    ("hostname_and_domain", {"hostname": "web-1", "domainName": "example.com"},
     {"hostname": "web-1", "domainName": "example.com"}),
    ("extra_hosts_ipv4_ipv6_and_gateway",
     {"extraHosts": ["db:10.0.0.5", "v6:2001:db8::1", "gw:host-gateway", "b:[::1]"]},
     {"extraHosts": ["db:10.0.0.5", "v6:2001:db8::1", "gw:host-gateway", "b:::1"]}),
    ("log_config", {"logConfig": {"driver": "json-file", "config": {"max-size": "10m"}}},
     {"logConfig": {"driver": "json-file", "config": {"max-size": "10m"}}}),
    ("log_config_without_config", {"logConfig": {"driver": "syslog"}},
     {"logConfig": {"driver": "syslog", "config": {}}}),
    ("empty_log_config_is_null", {"logConfig": {"driver": "", "config": {}}},
     {"logConfig": None}),
    ("pid_mode_host", {"pidMode": "host"}, {"pidMode": "host"}),
    ("ipc_mode_shareable", {"ipcMode": "shareable"}, {"ipcMode": "shareable"}),
    ("ipc_mode_of_another_container", {"ipcMode": "container:1i5"},
     {"ipcMode": "container:1i5"}),
    ("ulimits", {"ulimits": [{"name": "nofile", "soft": 1024, "hard": 4096}]},
     {"ulimits": [{"name": "nofile", "soft": 1024, "hard": 4096}]}),
    ("ulimit_hard_defaults_to_soft", {"ulimits": [{"name": "nproc", "soft": 512}]},
     {"ulimits": [{"name": "nproc", "soft": 512, "hard": 512}]}),
    ("ulimit_unlimited", {"ulimits": [{"name": "memlock", "soft": -1, "hard": -1}]},
     {"ulimits": [{"name": "memlock", "soft": -1, "hard": -1}]}),
    ("fields_outside_the_spec_are_ignored",
     {"healthCheck": {"port": 80}, "requestedHostId": "1h1", "startOnCreate": True,
      "name": "ignored", "description": "d"}, {"name": "web"}),
]

# (behaviour, input values besides imageUuid, code, fieldName)
BAD: list[tuple[str, dict[str, Any], str, str]] = [
    ("image_missing", {"imageUuid": None}, "MissingRequired", "imageUuid"),
    ("image_not_a_string", {"imageUuid": 5}, "InvalidType", "imageUuid"),
    ("image_without_docker_prefix", {"imageUuid": "busybox"}, "InvalidFormat", "imageUuid"),
    ("image_empty", {"imageUuid": "docker:"}, "InvalidFormat", "imageUuid"),
    ("command_with_unbalanced_quote", {"command": "sh -c 'echo"}, "InvalidFormat", "command"),
    ("entry_point_not_strings", {"entryPoint": ["sh", 1]}, "InvalidType", "entryPoint"),
    ("command_not_a_list_or_string", {"command": {"a": 1}}, "InvalidType", "command"),
    ("environment_name_with_equals", {"environment": {"A=B": "1"}}, "InvalidFormat",
     "environment"),
    ("environment_empty_name", {"environment": {"": "1"}}, "InvalidFormat", "environment"),
    ("environment_value_not_a_string", {"environment": {"A": 1}}, "InvalidType",
     "environment"),
    ("label_empty_key", {"labels": {"": "x"}}, "InvalidFormat", "labels"),
    ("label_reserved_for_corral", {"labels": {"io.rancher.container.uuid": "x"}},
     "InvalidOption", "labels"),
    ("port_malformed", {"ports": ["80:80:80:80"]}, "PortWrongFormat", "ports"),
    ("port_not_a_number", {"ports": ["http"]}, "PortWrongFormat", "ports"),
    ("port_zero", {"ports": ["0:80"]}, "PortWrongFormat", "ports"),
    ("port_too_large", {"ports": ["65536:80"]}, "PortWrongFormat", "ports"),
    ("port_sctp_unsupported", {"ports": ["80/sctp"]}, "PortWrongFormat", "ports"),
    ("port_bad_host_ip", {"ports": ["300.0.0.1:80:80"]}, "PortWrongFormat", "ports"),
    ("port_range_unsupported", {"ports": ["8000-8010:8000-8010"]}, "PortWrongFormat", "ports"),
    ("port_taken_twice", {"ports": ["8080:80", "8080:81/tcp"]}, "NotUnique", "ports"),
    ("port_taken_twice_on_one_ip", {"ports": ["1.2.3.4:80:80", "1.2.3.4:80:81"]},
     "NotUnique", "ports"),
    ("port_wildcard_overlaps_an_ip", {"ports": ["0.0.0.0:80:80", "1.2.3.4:80:81"]},
     "NotUnique", "ports"),
    ("port_ipv6_wildcard_overlaps_the_agent_ip", {"ports": ["80:80", "[::]:80:81"]},
     "NotUnique", "ports"),
    ("port_container_port_zero", {"ports": ["8080:0"]}, "PortWrongFormat", "ports"),
    ("port_without_container_port", {"ports": ["8080:"]}, "PortWrongFormat", "ports"),
    ("expose_malformed", {"expose": ["80-"]}, "InvalidFormat", "expose"),
    ("expose_range_backwards", {"expose": ["90-80"]}, "InvalidFormat", "expose"),
    ("expose_port_zero", {"expose": ["0"]}, "InvalidFormat", "expose"),
    ("expose_bad_protocol", {"expose": ["80/icmp"]}, "InvalidFormat", "expose"),
    ("expose_too_many_ports", {"expose": ["1-1001"]}, "MaxLimitExceeded", "expose"),
    ("volume_relative_host_path", {"dataVolumes": ["./x:/y"]}, "InvalidFormat",
     "dataVolumes"),
    ("volume_relative_container_path", {"dataVolumes": ["/x:y"]}, "InvalidFormat",
     "dataVolumes"),
    ("volume_relative_anonymous_path", {"dataVolumes": ["cache"]}, "InvalidFormat",
     "dataVolumes"),
    ("volume_name_too_short", {"dataVolumes": ["a:/y"]}, "InvalidFormat", "dataVolumes"),
    ("volume_over_the_root", {"dataVolumes": ["/x:/"]}, "InvalidFormat", "dataVolumes"),
    ("volume_bad_mode", {"dataVolumes": ["/x:/y:rx"]}, "InvalidFormat", "dataVolumes"),
    ("volume_conflicting_modes", {"dataVolumes": ["/x:/y:ro,rw"]}, "InvalidFormat",
     "dataVolumes"),
    ("volume_propagation_on_a_named_volume", {"dataVolumes": ["data:/y:shared"]},
     "InvalidFormat", "dataVolumes"),
    ("volume_nocopy_on_a_bind", {"dataVolumes": ["/x:/y:nocopy"]}, "InvalidFormat",
     "dataVolumes"),
    ("volume_too_many_parts", {"dataVolumes": ["/x:/y:ro:z"]}, "InvalidFormat",
     "dataVolumes"),
    ("volume_destination_twice", {"dataVolumes": ["/a:/data", "vol:/data/"]}, "NotUnique",
     "dataVolumes"),
    ("volume_driver_malformed", {"volumeDriver": "no spaces"}, "InvalidFormat",
     "volumeDriver"),
    ("volumes_from_malformed", {"dataVolumesFrom": ["../x"]}, "InvalidFormat",
     "dataVolumesFrom"),
    ("network_mode_unknown_is_a_missing_network", {"networkMode": "overlay"}, "InvalidReference",
     "networkMode"),
    ("network_container_without_id", {"networkMode": "container:"}, "InvalidFormat",
     "networkMode"),
    ("network_container_form_without_container", {"networkMode": "container"},
     "MissingRequired", "networkContainerId"),
    ("dns_not_an_ip", {"dns": ["dns.google"]}, "InvalidFormat", "dns"),
    ("dns_search_not_a_domain", {"dnsSearch": ["bad domain"]}, "InvalidFormat", "dnsSearch"),
    ("restart_policy_unknown", {"restartPolicy": {"name": "sometimes"}}, "InvalidOption",
     "restartPolicy"),
    ("restart_policy_retries_without_on_failure",
     {"restartPolicy": {"name": "always", "maximumRetryCount": 3}}, "InvalidOption",
     "restartPolicy"),
    ("restart_policy_string_retries_without_on_failure", {"restartPolicy": "always:3"},
     "InvalidOption", "restartPolicy"),
    ("restart_policy_negative_retries",
     {"restartPolicy": {"name": "on-failure", "maximumRetryCount": -1}}, "InvalidFormat",
     "restartPolicy"),
    ("restart_policy_retries_not_a_number", {"restartPolicy": "on-failure:x"},
     "InvalidFormat", "restartPolicy"),
    ("restart_policy_retries_not_an_int",
     {"restartPolicy": {"name": "on-failure", "maximumRetryCount": "3"}}, "InvalidType",
     "restartPolicy"),
    ("restart_policy_not_an_object", {"restartPolicy": 3}, "InvalidType", "restartPolicy"),
    ("cpu_shares_below_docker_minimum", {"cpuShares": 1}, "MinLimitExceeded", "cpuShares"),
    ("cpu_shares_negative", {"cpuShares": -5}, "MinLimitExceeded", "cpuShares"),
    ("cpu_shares_above_kernel_maximum", {"cpuShares": 262_145}, "MaxLimitExceeded",
     "cpuShares"),
    ("cpu_set_malformed", {"cpuSet": "0-2,,4"}, "InvalidFormat", "cpuSet"),
    ("cpu_set_backwards_range", {"cpuSet": "3-1"}, "InvalidFormat", "cpuSet"),
    ("memory_unparseable", {"memory": "lots"}, "InvalidFormat", "memory"),
    ("memory_negative", {"memory": -1}, "InvalidFormat", "memory"),
    ("memory_below_docker_minimum", {"memory": "4m"}, "MinLimitExceeded", "memory"),
    ("memory_swap_below_memory", {"memory": "1g", "memorySwap": "512m"}, "MinLimitExceeded",
     "memorySwap"),
    ("memory_swap_without_memory", {"memorySwap": "1g"}, "InvalidOption", "memorySwap"),
    ("memory_swap_unparseable", {"memory": "1g", "memorySwap": "-2"}, "InvalidFormat",
     "memorySwap"),
    ("memory_reservation_above_memory", {"memory": "1g", "memoryReservation": "2g"},
     "MaxLimitExceeded", "memoryReservation"),
    ("memory_reservation_unparseable", {"memoryReservation": "1x"}, "InvalidFormat",
     "memoryReservation"),
    ("milli_cpu_reservation_negative", {"milliCpuReservation": -1}, "MinLimitExceeded",
     "milliCpuReservation"),
    ("flag_not_a_boolean", {"privileged": "yes"}, "InvalidType", "privileged"),
    ("capability_malformed", {"capAdd": ["NET ADMIN"]}, "InvalidFormat", "capAdd"),
    ("capability_unknown", {"capDrop": ["NET_FLY"]}, "InvalidOption", "capDrop"),
    ("device_relative_path", {"devices": ["dev/fuse"]}, "InvalidFormat", "devices"),
    ("device_bad_permissions", {"devices": ["/dev/sda:/dev/xvda:rwx"]}, "InvalidFormat",
     "devices"),
    ("device_repeated_permission", {"devices": ["/dev/sda:/dev/xvda:rr"]}, "InvalidFormat",
     "devices"),
    ("device_too_many_parts", {"devices": ["/dev/a:/dev/b:r:w"]}, "InvalidFormat",
     "devices"),
    ("device_container_path_twice", {"devices": ["/dev/a:/dev/x", "/dev/b:/dev/x"]},
     "NotUnique", "devices"),
    ("user_with_spaces", {"user": "my user"}, "InvalidFormat", "user"),
    ("working_dir_relative", {"workingDir": "srv"}, "InvalidFormat", "workingDir"),
    ("hostname_with_underscore", {"hostname": "web_1"}, "InvalidFormat", "hostname"),
    ("hostname_label_too_long", {"hostname": "a" * 64}, "InvalidFormat", "hostname"),
    ("hostname_too_long_for_the_kernel", {"hostname": ".".join(["a" * 30] * 3)},
     "MaxLengthExceeded", "hostname"),
    ("domain_name_trailing_dash", {"domainName": "example-.com"}, "InvalidFormat",
     "domainName"),
    ("extra_host_without_ip", {"extraHosts": ["db"]}, "InvalidFormat", "extraHosts"),
    ("extra_host_bad_ip", {"extraHosts": ["db:10.0.0"]}, "InvalidFormat", "extraHosts"),
    ("extra_host_empty_name", {"extraHosts": [":10.0.0.1"]}, "InvalidFormat", "extraHosts"),
    ("log_config_not_an_object", {"logConfig": "json-file"}, "InvalidType", "logConfig"),
    ("log_config_options_without_driver", {"logConfig": {"config": {"max-size": "1m"}}},
     "InvalidFormat", "logConfig"),
    ("log_config_option_not_a_string", {"logConfig": {"driver": "json-file",
                                                      "config": {"max-file": 3}}},
     "InvalidType", "logConfig"),
    ("pid_mode_unknown", {"pidMode": "private"}, "InvalidOption", "pidMode"),
    ("ipc_mode_unknown", {"ipcMode": "public"}, "InvalidOption", "ipcMode"),
    ("ulimit_unknown_name", {"ulimits": [{"name": "files", "soft": 1}]}, "InvalidOption",
     "ulimits"),
    ("ulimit_soft_above_hard", {"ulimits": [{"name": "nofile", "soft": 2, "hard": 1}]},
     "MaxLimitExceeded", "ulimits"),
    ("ulimit_unlimited_soft_under_finite_hard",
     {"ulimits": [{"name": "nofile", "soft": -1, "hard": 1}]}, "MaxLimitExceeded", "ulimits"),
    ("ulimit_without_soft", {"ulimits": [{"name": "nofile", "hard": 1}]}, "InvalidFormat",
     "ulimits"),
    ("ulimit_below_unlimited", {"ulimits": [{"name": "nofile", "soft": -2}]},
     "InvalidFormat", "ulimits"),
    ("ulimit_not_an_int", {"ulimits": [{"name": "nofile", "soft": "1024"}]}, "InvalidType",
     "ulimits"),
    ("ulimit_given_twice", {"ulimits": [{"name": "nofile", "soft": 1},
                                        {"name": "nofile", "soft": 2}]}, "NotUnique",
     "ulimits"),
    ("ulimits_not_a_list_of_objects", {"ulimits": ["nofile=1024"]}, "InvalidType",
     "ulimits"),
]


def rejected(values: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        spec_of(values)
    return caught.value


@pytest.mark.parametrize(("values", "expected"), cases(GOOD))
def test_build_spec_normalises(values: dict[str, Any], expected: dict[str, Any]) -> None:
    spec = spec_of(values)
    assert {key: spec[key] for key in expected} == expected


@pytest.mark.parametrize(("values", "code", "field"), cases(BAD))
def test_build_spec_rejects(values: dict[str, Any], code: str, field: str) -> None:
    error = rejected(values)
    assert (error.status, error.code, error.field_name) == (422, code, field)
    assert error.message


def test_every_key_is_present_with_empty_values_when_unset() -> None:
    assert build_spec(IMAGE, uuid=UUID, name=None) == {
        "uuid": UUID, "name": None, "image": "busybox:latest", "command": None,
        "entryPoint": None, "environment": {}, "labels": {}, "ports": [], "expose": [],
        "binds": [], "volumes": [], "volumesFrom": [], "networkMode": "managed",
        "ipAddress": None, "dns": [],
        "dnsSearch": [], "capAdd": [], "capDrop": [], "extraHosts": [],
        "restartPolicy": None, "cpuShares": None, "memory": None, "memorySwap": None,
        "cpuSet": None, "user": None, "workingDir": None, "hostname": None,
        "domainName": None, "pidMode": None, "ipcMode": None, "privileged": False,
        "tty": False, "stdinOpen": False, "readOnly": False, "devices": [],
        "logConfig": None, "ulimits": [], "publishAllPorts": False, "blkioWeight": None,
        "blkioDeviceOptions": [],
    }


def test_spec_keys_are_exactly_the_documented_contract() -> None:
    """docs/protocol.md's container table and build_spec must not drift apart."""
    doc = (ROOT / "docs" / "protocol.md").read_text()
    table = doc.split("| key | type | Docker equivalent |", 1)[1].split("\n\n", 1)[0]
    documented = {key for line in table.splitlines()[2:]
                  for key in re.findall(r"`(\w+)`", line.split("|")[1])}
    assert set(build_spec(IMAGE, uuid=UUID, name=None)) == documented


def test_null_values_count_as_unset() -> None:
    keys = ["command", "entryPoint", "environment", "labels", "ports", "expose",
            "dataVolumes", "volumeDriver", "dataVolumesFrom", "networkMode", "dns",
            "dnsSearch", "restartPolicy", "cpuShares", "cpuSet", "memory", "memorySwap",
            "memoryReservation", "milliCpuReservation", "privileged", "tty", "stdinOpen",
            "readOnly", "capAdd", "capDrop", "devices", "user", "workingDir", "hostname",
            "domainName", "extraHosts", "logConfig", "pidMode", "ipcMode", "ulimits"]
    values = {**IMAGE, **dict.fromkeys(keys)}
    assert build_spec(values, uuid=UUID, name=None) == build_spec(IMAGE, uuid=UUID, name=None)


def test_the_input_is_not_changed_nor_shared_with_the_spec() -> None:
    values = {**FULL_INPUT}
    before = copy.deepcopy(values)
    spec = build_spec(values, uuid=UUID, name="web")
    spec["command"].append("more")
    spec["environment"]["NEW"] = "1"
    spec["labels"]["new"] = "1"
    spec["dns"].append("1.1.1.1")
    spec["logConfig"]["config"]["new"] = "1"
    assert values == before


def test_error_message_names_the_offending_entry() -> None:
    error = rejected({"ports": ["8080:80", "99999:80"]})
    assert "99999:80" in str(error.message)


# golden: one realistic container, every field given

FULL_INPUT: dict[str, Any] = {
    "name": "shop-web",
    "description": "the storefront",
    "imageUuid": "docker:localhost:5000/shop/web:2.4.1",
    "command": ["gunicorn", "--bind", "0.0.0.0:8000", "shop.wsgi"],
    "entryPoint": "/usr/local/bin/docker-entrypoint.sh --wait-for 'db:5432'",
    "environment": {"DJANGO_SETTINGS_MODULE": "shop.settings", "WORKERS": "4"},
    "labels": {"io.rancher.scheduler.affinity:host_label": "tier=web", "team": "shop"},
    "ports": ["8000:8000/tcp", "10.0.0.5:9100:9100", "5353/udp"],
    "expose": ["8000", "9000-9002/tcp"],
    "dataVolumes": ["/srv/shop/static:/app/static:ro", "shop-media:/app/media:rw,z",
                    "/tmp/cache"],
    "volumeDriver": "local",
    "dataVolumesFrom": ["1i12"],
    "networkMode": "managed",
    "dns": ["10.0.0.2", "8.8.8.8"],
    "dnsSearch": ["shop.internal"],
    "restartPolicy": {"name": "on-failure", "maximumRetryCount": 5},
    "cpuShares": 1024,
    "cpuSet": "0-1",
    "memory": "1g",
    "memorySwap": "2g",
    "memoryReservation": "256m",
    "milliCpuReservation": 500,
    "privileged": False,
    "tty": True,
    "stdinOpen": True,
    "readOnly": True,
    "capAdd": ["NET_BIND_SERVICE"],
    "capDrop": ["CAP_MKNOD", "sys_chroot"],
    "devices": ["/dev/fuse", "/dev/sdb:/dev/xvdb:r"],
    "user": "www-data:www-data",
    "workingDir": "/app",
    "hostname": "shop-web-1",
    "domainName": "shop.internal",
    "extraHosts": ["db:10.0.0.7", "cache:fd00::7"],
    "logConfig": {"driver": "json-file", "config": {"max-size": "10m", "max-file": "3"}},
    "pidMode": "host",
    "ipcMode": "private",
    "ulimits": [{"name": "nofile", "soft": 4096, "hard": 65536}, {"name": "nproc", "soft": 512}],
    "healthCheck": {"port": 8000, "requestLine": "GET /healthz HTTP/1.0", "interval": 2000},
    "requestedHostId": "1h3",
    "startOnCreate": True,
    "publishAllPorts": True,
    "blkioWeight": 300,
    "blkioDeviceOptions": {"/dev/sda": {"weight": 200, "readBps": 1048576},
                           "/dev/sdb": {"writeIops": 100}},
}


def test_full_container_matches_the_golden_spec() -> None:
    spec = build_spec(FULL_INPUT, uuid=UUID, name="shop-web")
    assert json.loads(json.dumps(spec)) == spec  # plain JSON, as it travels to the agent
    assert spec == json.loads(GOLDEN.read_text())


def test_volume_names_of_the_full_container() -> None:
    assert volume_names(build_spec(FULL_INPUT, uuid=UUID, name="shop-web")) == ["shop-media"]


# the parsers on their own


@pytest.mark.parametrize(("image_uuid", "image"), [
    ("docker:busybox", "busybox:latest"),
    ("docker:ubuntu:22.04", "ubuntu:22.04"),
    ("docker:library/nginx", "library/nginx:latest"),
    ("docker:localhost:5000/team/app:1", "localhost:5000/team/app:1"),
    ("docker:localhost:5000/team/app", "localhost:5000/team/app:latest"),
    ("docker:quay.io/coreos/etcd:v3.5.0", "quay.io/coreos/etcd:v3.5.0"),
    (f"docker:repo@{DIGEST}", f"repo@{DIGEST}"),
    (f"docker:repo:1.0@{DIGEST}", f"repo:1.0@{DIGEST}"),
    ("docker:my_org/app__x:Tag_1.0-rc", "my_org/app__x:Tag_1.0-rc"),
])
def test_parse_image(image_uuid: str, image: str) -> None:
    assert parse_image(image_uuid) == image


@pytest.mark.parametrize("image_uuid", [
    "", "busybox", "sim:busybox", "docker:", "docker:Busybox", "docker:busy box",
    "docker:app:", "docker:app:-tag", "docker:repo@sha256:short", "docker:/app",
    "docker:app//x", "docker:" + "a" * 256,
])
def test_parse_image_rejects(image_uuid: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_image(image_uuid)
    assert (caught.value.code, caught.value.field_name) == ("InvalidFormat", "imageUuid")


@pytest.mark.parametrize(("value", "size"), [
    (4096, 4096), ("2048", 2048), ("100b", 100), ("1024k", MIB), ("512m", 512 * MIB),
    ("512M", 512 * MIB), ("1g", 1024 * MIB), ("1GB", 1024 * MIB), ("1gib", 1024 * MIB),
    ("1.5g", 1536 * MIB), ("2t", 2 * 1024**4),
])
def test_parse_memory(value: int | str, size: int) -> None:
    assert parse_memory(value) == size


@pytest.mark.parametrize(("value", "code"), [
    (0, "InvalidFormat"), (-1, "InvalidFormat"), ("0", "InvalidFormat"),
    ("-1m", "InvalidFormat"), ("", "InvalidFormat"), ("m", "InvalidFormat"),
    ("12x", "InvalidFormat"), ("1.g", "InvalidFormat"), ("0.1b", "InvalidFormat"),
    (True, "InvalidType"), (1.5, "InvalidType"), (2**63, "MaxLimitExceeded"),
])
def test_parse_memory_rejects(value: Any, code: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_memory(value, "memorySwap")
    assert (caught.value.code, caught.value.field_name) == (code, "memorySwap")


def test_parse_ports_expose_and_volumes_alone() -> None:
    assert parse_ports(["127.0.0.1::80"]) == [port("127.0.0.1", None, 80)]
    assert parse_expose(["80/udp"]) == [{"containerPort": 80, "protocol": "udp"}]
    assert parse_volumes(["/h:/c", "v1:/v"], driver="convoy") == (
        [{"source": "/h", "destination": "/c", "mode": "rw"}],
        [{"name": "v1", "destination": "/v", "mode": "rw", "driver": "convoy"}])


def test_volume_names_lists_each_named_volume_once() -> None:
    spec = spec_of({"dataVolumes": ["a1:/a", "/anon", "/h:/h", "b2:/b", "a1:/c"]})
    assert volume_names(spec) == ["a1", "b2"]
