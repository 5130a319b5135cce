"""Container fields and validation as Rancher 1.6 had them, without sockets: the schema's
lenient lists, the spec's new fields and Rancher's error codes, and the pure builders of
what a container's links show."""

from __future__ import annotations

from typing import Any

import pytest

from server.api.errors import ValidationError
from server.api.schema import Field
from server.api.validation import check_value, validate_create
from server.resources import build_types
from server.resources.container_links import docker_inspect, mounts, nics, ports
from server.resources.container_refs import placement_hosts
from server.resources.container_spec import (
    ENVIRONMENT_UUID_LABEL,
    build_spec,
    with_environment_label,
)
from server.resources.containers import CONTAINER, ContainerType
from server.store import Record

UUID = "c0ffee00-0000-4000-8000-000000000001"
IMAGE = {"imageUuid": "docker:busybox"}


def spec_of(values: dict[str, Any]) -> dict[str, Any]:
    return build_spec({**IMAGE, **values}, uuid=UUID, name="web")


def rejected(values: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as error:
        spec_of(values)
    return error.value


def record(data: dict[str, Any], **columns: Any) -> Record:
    values: dict[str, Any] = {
        "id": 5, "type": "container", "kind": "container", "uuid": UUID, "name": "web",
        "description": None, "state": "running", "project_id": 2, "account_id": None,
        "created": 0, "removed": None, "transitioning": "no", "transitioning_message": None,
        "transitioning_progress": None, "version": 1, "lookup_key": None, "data": data,
        **columns}
    return Record(**values)


# the schema's lenient lists


def test_a_lenient_list_takes_one_value_and_integers_as_rancher_did() -> None:
    lenient = Field(type="array[string]", lenient=True)
    assert check_value("ports", lenient, [80, "8081:81"]) == ["80", "8081:81"]
    assert check_value("devices", lenient, "/dev/fuse") == ["/dev/fuse"]
    assert check_value("ports", lenient, 80) == ["80"]


def test_a_strict_list_still_refuses_a_lone_value_and_numbers() -> None:
    strict = Field(type="array[string]")
    for value in ("/dev/fuse", [80]):
        with pytest.raises(ValidationError) as error:
            check_value("tags", strict, value)
        assert error.value.code == "InvalidType"


def test_lenient_lists_do_not_turn_booleans_into_strings() -> None:
    with pytest.raises(ValidationError) as error:
        check_value("ports", Field(type="array[string]", lenient=True), [True])
    assert error.value.code == "InvalidType"


def test_container_ports_given_as_integers_and_devices_as_a_string_make_a_spec() -> None:
    values = validate_create(CONTAINER, {**IMAGE, "ports": [80, "8081:81"],
                                         "devices": "/dev/fuse"})
    spec = build_spec(values, uuid=UUID, name=None)
    assert [(p["hostPort"], p["containerPort"]) for p in spec["ports"]] == [(None, 80),
                                                                             (8081, 81)]
    assert [d["pathOnHost"] for d in spec["devices"]] == ["/dev/fuse"]


def test_the_spec_reads_integer_ports_and_a_lone_device_without_the_schema_too() -> None:
    spec = spec_of({"ports": [80], "devices": "/dev/fuse"})
    assert spec["ports"][0]["containerPort"] == 80
    assert spec["devices"][0]["pathInContainer"] == "/dev/fuse"


# Rancher's wording


@pytest.mark.parametrize("entry", ["80:80:80:80", "http", "0:80", "65536:80", "80/sctp",
                                   "300.0.0.1:80:80"])
def test_a_malformed_port_is_port_wrong_format(entry: str) -> None:
    error = rejected({"ports": [entry]})
    assert (error.code, error.field_name) == ("PortWrongFormat", "ports")


def test_an_unknown_network_mode_is_a_network_that_cannot_be_found() -> None:
    error = rejected({"networkMode": "foo"})
    assert (error.code, error.field_name) == ("InvalidReference", "networkMode")
    assert "'foo'" in str(error.message)


def test_a_build_is_refused_rather_than_ignored() -> None:
    error = rejected({"build": {"context": "https://example.com/app.git"}})
    assert (error.code, error.field_name) == ("InvalidOption", "build")
    assert spec_of({"build": None})["image"] == "busybox:latest"


# the new fields


def test_publish_all_ports_and_blkio_reach_the_spec() -> None:
    spec = spec_of({"publishAllPorts": True, "blkioWeight": 300, "blkioDeviceOptions": {
        "/dev/sdb": {"writeIops": 10}, "/dev/sda": {"weight": 200, "readBps": 0}}})
    assert (spec["publishAllPorts"], spec["blkioWeight"]) == (True, 300)
    assert spec["blkioDeviceOptions"] == [
        {"path": "/dev/sda", "weight": 200, "readBps": None, "writeBps": None,
         "readIops": None, "writeIops": None},
        {"path": "/dev/sdb", "weight": None, "readBps": None, "writeBps": None,
         "readIops": None, "writeIops": 10}]


def test_a_zero_blkio_weight_means_the_default() -> None:
    assert spec_of({"blkioWeight": 0})["blkioWeight"] is None


@pytest.mark.parametrize(("values", "code"), [
    ({"blkioWeight": 5}, "MinLimitExceeded"),
    ({"blkioWeight": 1001}, "MaxLimitExceeded"),
    ({"blkioWeight": "heavy"}, "InvalidType"),
    ({"blkioDeviceOptions": {"/dev/sda": {"weight": 2000}}}, "MaxLimitExceeded"),
    ({"blkioDeviceOptions": {"/dev/sda": {"readBps": -1}}}, "MinLimitExceeded"),
    ({"blkioDeviceOptions": {"/dev/sda": {"speed": 1}}}, "InvalidOption"),
    ({"blkioDeviceOptions": {"sda": {"weight": 100}}}, "InvalidFormat"),
    ({"blkioDeviceOptions": ["/dev/sda"]}, "InvalidType"),
])
def test_bad_blkio_values_are_refused_naming_their_field(values: dict[str, Any],
                                                         code: str) -> None:
    error = rejected(values)
    assert (error.code, error.field_name) == (code, next(iter(values)))


def test_the_environment_label_is_set_whatever_was_sent() -> None:
    values = with_environment_label({"labels": {ENVIRONMENT_UUID_LABEL: "forged", "a": "b"}},
                                    "env-uuid")
    assert values["labels"] == {ENVIRONMENT_UUID_LABEL: "env-uuid", "a": "b"}
    assert with_environment_label({}, "env-uuid")["labels"] == {
        ENVIRONMENT_UUID_LABEL: "env-uuid"}


def test_valid_host_ids_narrow_the_hosts_of_named_volumes() -> None:
    assert placement_hosts(None, None) is None
    assert placement_hosts(frozenset({"1h1"}), None) == {"1h1"}
    assert placement_hosts(None, frozenset({"1h2"})) == {"1h2"}
    assert placement_hosts(frozenset({"1h1", "1h2"}), frozenset({"1h2", "1h3"})) == {"1h2"}
    assert placement_hosts(frozenset({"1h1"}), frozenset({"1h2"})) == frozenset()


def test_every_type_a_field_or_link_names_has_a_schema() -> None:
    registry = build_types()
    for name in ("restartPolicy", "logConfig", "dockerBuild", "blkioDeviceOption", "port",
                 "nic", "mount", "label", "instanceHostMap", "agent", "physicalHost",
                 "ipAddress", "hostStats"):
        assert registry.schema(name) is not None, name


# what the links show


SPEC = {"ports": [{"hostIp": None, "hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
        "networkMode": "bridge", "binds": [{"source": "/srv", "destination": "/srv",
                                            "mode": "ro"}],
        "volumes": [{"name": "data", "destination": "/data", "mode": "rw", "driver": "local"}],
        "image": "busybox:latest", "labels": {}}


def test_ports_show_what_docker_bound_once_it_has() -> None:
    asked = ports(record({"spec": SPEC}))
    assert [(p["publicPort"], p["state"]) for p in asked] == [(8080, "inactive")]
    bound = ports(record({"spec": SPEC, "dockerPorts": [
        {"hostIp": "0.0.0.0", "hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}))
    assert [(p["bindAddress"], p["state"]) for p in bound] == [("0.0.0.0", "active")]


def test_a_container_without_a_network_has_no_nic() -> None:
    assert nics(record({"spec": {**SPEC, "networkMode": "none"}})) == []
    nic = nics(record({"spec": SPEC, "primaryIpAddress": "10.42.0.9"}))
    assert [(n["ipAddress"], n["instanceId"]) for n in nic] == [("10.42.0.9", "1i5")]


def test_mounts_name_the_volume_records_that_hold_them() -> None:
    volume = record({"mounts": [{"instanceId": 5, "path": "/data"}]}, id=9, type="volume",
                    name="data")
    shown = {m["path"]: m for m in mounts(record({"spec": SPEC}), [volume])}
    assert shown["/data"]["volumeId"] == "1v9"
    assert (shown["/srv"]["kind"], shown["/srv"]["source"]) == ("bind", "/srv")


def test_docker_inspect_is_null_until_the_container_exists() -> None:
    assert docker_inspect(record({"spec": SPEC})) is None
    inspect = docker_inspect(record({"spec": SPEC, "externalId": "abc", "dockerPorts": [
        {"hostIp": "0.0.0.0", "hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}))
    assert inspect is not None and inspect["Id"] == "abc"
    assert inspect["NetworkSettings"]["Ports"] == {
        "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}


def test_a_removed_container_shows_when_it_was_removed_and_is_no_longer_allocated() -> None:
    rtype = ContainerType(CONTAINER)
    placed = rtype.computed(None, record({"spec": SPEC, "hostId": 3}))  # type: ignore[arg-type]
    assert (placed["allocationState"], placed["removeTime"]) == ("active", None)
    removed = rtype.computed(None, record({"spec": SPEC, "hostId": 3},  # type: ignore[arg-type]
                                          removed=1_700_000_000_123))
    assert removed["allocationState"] == "inactive"
    assert (removed["removeTime"], removed["removeTimeTS"]) == \
        ("2023-11-14T22:13:20.123Z", 1_700_000_000_123)
