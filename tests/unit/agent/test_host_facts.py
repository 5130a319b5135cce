"""Host facts: label parsing, change detection, and the shape of the facts from this machine."""

from __future__ import annotations

import copy
import json
import os
import platform
from collections import namedtuple
from typing import Any

import pytest

from agent.host_facts import (
    ARCH_LABEL,
    DOCKER_VERSION_LABEL,
    KERNEL_VERSION_LABEL,
    OS_LABEL,
    changed_sections,
    gather_facts,
    parse_labels,
)
from tests.unit.agent.fakes import DOCKER_INFO, DOCKER_VERSION, FakeRuntime

Partition = namedtuple("Partition", "device mountpoint fstype opts")
DISK_PARTITIONS = "agent.host_facts.psutil.disk_partitions"


def facts_from_fake(labels: dict[str, str] | None = None) -> dict[str, Any]:
    runtime = FakeRuntime()
    return gather_facts(runtime.version(), runtime.info(), labels or {})


# parse_labels


def test_parse_labels_splits_pairs_on_ampersand() -> None:
    assert parse_labels("zone=eu-1&disk=ssd") == {"zone": "eu-1", "disk": "ssd"}


def test_parse_labels_url_decodes_keys_and_values() -> None:
    assert parse_labels("owner=Jane%20Doe&q=a%26b%3Dc&io.x%2Fy=1") == {
        "owner": "Jane Doe",
        "q": "a&b=c",
        "io.x/y": "1",
    }


def test_parse_labels_keeps_empty_values_and_equals_signs_in_values() -> None:
    assert parse_labels("a=&b=x=y") == {"a": "", "b": "x=y"}


@pytest.mark.parametrize("text", ["", "  ", "&", "a=1&", "&a=1&&"])
def test_parse_labels_skips_empty_parts(text: str) -> None:
    assert parse_labels(text) == ({"a": "1"} if "a" in text else {})


def test_parse_labels_repeated_key_keeps_last_value() -> None:
    assert parse_labels("a=1&a=2") == {"a": "2"}


@pytest.mark.parametrize(
    ("text", "bad_part", "problem"),
    [
        ("zone=eu&ssd", "'ssd'", "no '='"),
        ("=value", "'=value'", "empty key"),
        ("a=1&%20=2", "' '", "whitespace"),
        ("my zone=eu", "'my zone'", "whitespace"),
        ("zone=eu& disk=ssd", "' disk'", "whitespace"),
    ],
)
def test_parse_labels_rejects_malformed_part_naming_it(
    text: str, bad_part: str, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        parse_labels(text)
    message = str(caught.value)
    assert bad_part in message
    assert "\n" not in message


# changed_sections

FACTS: dict[str, Any] = {
    "hostname": "node-1",
    "labels": {"zone": "a"},
    "info": {
        "osInfo": {"kernelVersion": "6.1.0"},
        "memoryInfo": {"memTotal": 100, "memAvailable": 50, "swapTotal": 0},
        "dockerInfo": {"containers": 1},
    },
}


def with_changes(**changes: Any) -> dict[str, Any]:
    facts = copy.deepcopy(FACTS)
    for key, value in changes.items():
        if key in facts["info"]:
            facts["info"][key] = value
        else:
            facts[key] = value
    return facts


def test_changed_sections_is_empty_when_nothing_changed() -> None:
    assert changed_sections(FACTS, with_changes()) == {}


def test_changed_sections_reports_whole_top_level_values() -> None:
    current = with_changes(hostname="node-2", labels={"zone": "a", "disk": "ssd"})
    assert changed_sections(FACTS, current) == {
        "hostname": "node-2",
        "labels": {"zone": "a", "disk": "ssd"},
    }


def test_changed_sections_reports_only_changed_info_sections_whole() -> None:
    memory = {"memTotal": 100, "memAvailable": 42, "swapTotal": 0}
    assert changed_sections(FACTS, with_changes(memoryInfo=memory)) == {
        "info": {"memoryInfo": memory}
    }


def test_changed_sections_reports_new_info_sections() -> None:
    current = with_changes()
    current["info"]["cpuInfo"] = {"count": 4}
    assert changed_sections(FACTS, current) == {"info": {"cpuInfo": {"count": 4}}}


def test_changed_sections_from_nothing_is_everything() -> None:
    assert changed_sections({}, FACTS) == FACTS


def test_changed_sections_does_not_report_removed_keys() -> None:
    current = with_changes()
    del current["labels"]
    assert changed_sections(FACTS, current) == {}


# gather_facts


def test_gather_facts_has_the_documented_shape_and_is_json() -> None:
    facts = facts_from_fake()
    assert set(facts) == {"hostname", "labels", "info"}
    assert set(facts["info"]) == {"osInfo", "cpuInfo", "memoryInfo", "diskInfo", "dockerInfo"}
    assert set(facts["info"]["osInfo"]) == {
        "operatingSystem",
        "distribution",
        "version",
        "kernelVersion",
        "dockerVersion",
        "arch",
    }
    assert set(facts["info"]["cpuInfo"]) == {"count", "mhz", "modelName", "loadAvg"}
    assert set(facts["info"]["memoryInfo"]) == {"memTotal", "memAvailable", "swapTotal"}
    assert set(facts["info"]["diskInfo"]) == {"mountPoints", "dockerStorageDriver"}
    assert json.loads(json.dumps(facts)) == facts
    assert facts["hostname"]


def test_gather_facts_adds_automatic_labels_from_the_engine() -> None:
    labels = facts_from_fake({"zone": "a"})["labels"]
    assert labels == {
        "zone": "a",
        KERNEL_VERSION_LABEL: "6.1",
        DOCKER_VERSION_LABEL: "20.10",
        OS_LABEL: "linux",
        ARCH_LABEL: "amd64",
    }


def test_automatic_labels_win_over_user_labels_with_the_same_key() -> None:
    labels = facts_from_fake({DOCKER_VERSION_LABEL: "99.9", OS_LABEL: "plan9"})["labels"]
    assert labels[DOCKER_VERSION_LABEL] == "20.10"
    assert labels[OS_LABEL] == "linux"


@pytest.mark.parametrize(
    ("engine_version", "label"),
    [("20.10.24+dfsg1", "20.10"), ("28.2.2", "28.2"), ("v1.13.1", "1.13"), ("dev", None)],
)
def test_docker_version_label_is_major_dot_minor(engine_version: str, label: str | None) -> None:
    version = {**DOCKER_VERSION, "Version": engine_version}
    labels = gather_facts(version, DOCKER_INFO, {})["labels"]
    assert labels.get(DOCKER_VERSION_LABEL) == label


def test_gather_facts_copies_engine_details() -> None:
    info = facts_from_fake()["info"]
    assert info["osInfo"]["operatingSystem"] == "Debian GNU/Linux 12 (bookworm)"
    assert info["osInfo"]["kernelVersion"] == "6.1.0-18-amd64"
    assert info["osInfo"]["dockerVersion"] == "20.10.24+dfsg1"
    assert info["osInfo"]["arch"] == "amd64"
    assert info["diskInfo"]["dockerStorageDriver"] == "overlay2"
    assert info["dockerInfo"] == {
        "version": "20.10.24+dfsg1",
        "apiVersion": "1.41",
        "containers": 3,
        "containersRunning": 2,
        "images": 5,
        "rootDir": "/var/lib/docker",
    }


def test_gather_facts_measures_this_machine_in_whole_mebibytes() -> None:
    info = facts_from_fake()["info"]
    assert info["cpuInfo"]["count"] == os.cpu_count()
    assert isinstance(info["cpuInfo"]["mhz"], float)
    assert isinstance(info["cpuInfo"]["modelName"], str)
    assert len(info["cpuInfo"]["loadAvg"]) == 3
    memory = info["memoryInfo"]
    assert all(isinstance(value, int) for value in memory.values())
    assert 0 < memory["memAvailable"] <= memory["memTotal"]
    mount_points = info["diskInfo"]["mountPoints"]
    assert mount_points, "this machine has at least one local filesystem"
    assert not any(point.startswith(("/proc", "/sys", "/dev/")) for point in mount_points)
    for usage in mount_points.values():
        assert isinstance(usage["total"], int)
        assert 0 <= usage["used"] <= usage["total"]
        assert isinstance(usage["percentage"], float)


def test_gather_facts_without_an_engine_still_describes_the_host() -> None:
    facts = gather_facts({}, {}, {"zone": "a"})
    assert DOCKER_VERSION_LABEL not in facts["labels"]
    expected_kernel = ".".join(platform.release().split(".")[:2])
    assert facts["labels"][KERNEL_VERSION_LABEL] == expected_kernel
    assert facts["labels"]["zone"] == "a"
    assert facts["info"]["dockerInfo"]["containers"] == 0
    assert facts["info"]["diskInfo"]["dockerStorageDriver"] == ""


def test_mount_points_keep_one_entry_per_device_and_skip_image_filesystems(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    partitions = [
        Partition("/dev/vda", "/var/lib/docker", "ext4", "rw"),
        Partition("/dev/vda", "/", "ext4", "rw"),
        Partition("/dev/loop3", "/", "squashfs", "ro"),
    ]
    monkeypatch.setattr(DISK_PARTITIONS, lambda all=False: partitions)
    mount_points = facts_from_fake()["info"]["diskInfo"]["mountPoints"]
    assert list(mount_points) == ["/"]


def test_mount_points_add_docker_root_dir_on_an_unlisted_filesystem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not os.path.isdir("/dev/shm"):
        pytest.skip("needs /dev/shm, a tmpfs distinct from /")
    partitions = [Partition("/dev/vda", "/", "ext4", "rw")]
    monkeypatch.setattr(DISK_PARTITIONS, lambda all=False: partitions)
    info = {**DOCKER_INFO, "DockerRootDir": "/dev/shm"}
    mount_points = gather_facts(DOCKER_VERSION, info, {})["info"]["diskInfo"]["mountPoints"]
    assert list(mount_points) == ["/", "/dev/shm"]


def test_consecutive_facts_differ_only_in_measurements() -> None:
    first, second = facts_from_fake(), facts_from_fake()
    changes = changed_sections(first, second)
    assert set(changes) <= {"info"}
    assert set(changes.get("info", {})) <= {"cpuInfo", "memoryInfo", "diskInfo"}
