"""Instruction payloads: golden JSON round trips, and every way a payload is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shared.containers import (
    ContainerSighting,
    ContainerSpec,
    ContainerState,
    ContainerStatus,
    PortBinding,
)
from shared.discovery import DnsApplied, DnsApply
from shared.errors import ErrorCode, InstructionError, ProtocolError
from shared.health import HealthApplied, HealthApply
from shared.instructions import (
    INSTRUCTIONS,
    ContainerRef,
    CreateRequest,
    ExecRequest,
    ExecResult,
    HostInspection,
    HostStats,
    LogsRequest,
    NoData,
    Payload,
    ProxyRequest,
    RegistryAuth,
    RemoveRequest,
    StatsSample,
    StopRequest,
    VolumeRef,
    parse_reply,
)
from shared.lb import LbApplied, LbApply
from shared.overlay import NetworkApplied, NetworkApply

DATA = Path(__file__).parents[2] / "data"
GOLDEN_DIR = DATA / "instructions"
UUID = "c0ffee00-0000-4000-8000-000000000001"

# One payload type per golden file in tests/data/instructions.
GOLDEN: dict[str, type[Payload]] = {
    "create_request": CreateRequest,
    "container_ref": ContainerRef,
    "stop_request": StopRequest,
    "remove_request": RemoveRequest,
    "volume_ref": VolumeRef,
    "logs_request": LogsRequest,
    "exec_request": ExecRequest,
    "proxy_request": ProxyRequest,
    "no_data": NoData,
    "container_state": ContainerState,
    "stats_sample": StatsSample,
    "host_stats": HostStats,
    "host_inspection": HostInspection,
    "exec_result": ExecResult,
    "network_apply": NetworkApply,
    "network_applied": NetworkApplied,
    "dns_apply": DnsApply,
    "dns_applied": DnsApplied,
    "health_apply": HealthApply,
    "health_applied": HealthApplied,
    "lb_apply": LbApply,
    "lb_applied": LbApplied,
}


def golden(name: str) -> Any:
    return json.loads((GOLDEN_DIR / f"{name}.json").read_text())


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_parse_of_a_golden_payload_dumps_back_to_it(name: str) -> None:
    assert GOLDEN[name].parse(golden(name)).dump() == golden(name)


def test_every_golden_file_is_tested() -> None:
    files = {p.stem for p in GOLDEN_DIR.glob("*.json")}
    assert files == {*GOLDEN, "container_sighting"}


def test_every_type_of_the_table_has_a_golden_file() -> None:
    kinds = {t for i in INSTRUCTIONS.values() for t in (i.request, i.reply)}
    assert kinds <= set(GOLDEN.values())


def test_the_servers_golden_spec_round_trips_key_for_key() -> None:
    spec = json.loads((DATA / "container_spec" / "full.json").read_text())
    parsed = ContainerSpec.parse(spec)
    assert parsed.dump() == spec
    assert (parsed.ports[2], parsed.volumes[1].name) == (
        PortBinding(container_port=5353, protocol="udp"), None)


def test_the_golden_create_request_is_typed_to_the_leaves() -> None:
    request = CreateRequest.parse(golden("create_request"))
    assert request.container.restart_policy is not None
    assert request.container.restart_policy.maximum_retry_count == 5
    assert request.container.ulimits[0].hard == 65536
    assert request.registry_auth == RegistryAuth("shop-ci", "s3cret-token", "localhost:5000")


def test_registry_credentials_never_print() -> None:
    auth = RegistryAuth("shop-ci", "s3cret-token", "localhost:5000")
    assert "s3cret" not in repr(auth)
    assert "s3cret" not in repr(CreateRequest(ContainerSpec(uuid=UUID, image="a:1"), auth))


def test_a_sighting_sends_only_what_the_event_said_and_reads_as_a_state() -> None:
    sighting = ContainerSighting(docker_id="4f2a", uuid=UUID, status=ContainerStatus.EXITED,
                                 name="shop-web", image="localhost:5000/shop/web:2.4.1",
                                 exit_code=137)
    assert sighting.dump() == golden("container_sighting")
    destroyed = ContainerSighting(docker_id="4f2a", uuid=UUID, status=ContainerStatus.REMOVED,
                                  name="x", destroyed=True)
    assert destroyed.dump() == {"uuid": UUID, "dockerId": "4f2a", "status": "removed"}
    state = ContainerState.parse(golden("container_sighting"))
    assert (state.status, state.exit_code, state.ports, state.labels) == (
        ContainerStatus.EXITED, 137, (), {})


def test_defaults_of_an_older_peer_read_as_unset() -> None:
    """Keys an older server or agent leaves out read as null, [] or {}."""
    spec = ContainerSpec.parse({"uuid": UUID, "image": "busybox:latest"})
    assert spec == ContainerSpec(uuid=UUID, image="busybox:latest")
    assert set(spec.dump()) == set(golden("create_request")["container"])
    assert StopRequest.parse({"uuid": UUID}).timeout is None
    assert LogsRequest.parse({"uuid": UUID, "tail": -1}) == LogsRequest(UUID)
    assert HostInspection.parse({"facts": {}}).duration_ms is None


def test_a_timeout_in_whole_seconds_goes_as_an_integer() -> None:
    assert StopRequest(UUID, 10.0).dump() == {"uuid": UUID, "timeout": 10}
    assert StopRequest(UUID, 2.5).dump() == {"uuid": UUID, "timeout": 2.5}


# refusals: requests are invalidData for the agent, replies are protocol errors


@pytest.mark.parametrize(("kind", "data", "message"), [
    (ContainerRef, {}, "data.uuid must be a non-empty string"),
    (ContainerRef, [], "data must be a JSON object"),
    (StopRequest, {"uuid": UUID, "timeout": -1}, "data.timeout must be a number of at least 0"),
    (StopRequest, {"uuid": UUID, "timeout": "10"}, "data.timeout must be a number of at least 0"),
    (StopRequest, {"uuid": UUID, "timeout": True}, "data.timeout must be a number of at least 0"),
    (RemoveRequest, {"uuid": UUID, "removeVolumes": "yes"},
     "data.removeVolumes must be true or false"),
    (VolumeRef, {"name": ""}, "data.name must be a non-empty string"),
    (ExecRequest, {"uuid": UUID, "command": []},
     "data.command must be a non-empty list of strings"),
    (ExecRequest, {"uuid": UUID, "command": "ls"}, "data.command must be a list of strings"),
    (LogsRequest, {"uuid": UUID, "tail": "all"}, "data.tail must be an integer"),
    (CreateRequest, {}, "data.container must be a JSON object"),
    (CreateRequest, {"container": {"uuid": UUID, "image": "a:1"}, "registryAuth": "bob:pw"},
     "data.registryAuth must be a JSON object"),
    (CreateRequest, {"container": {"uuid": UUID, "image": "a:1", "ports": [{}]}},
     "data.container.ports[0].containerPort must be an integer"),
    (CreateRequest, {"container": {"uuid": UUID, "image": "a:1", "environment": {"A": 1}}},
     "data.container.environment must be a map of strings to strings"),
    (CreateRequest, {"container": {"uuid": UUID, "image": "a:1",
                                   "restartPolicy": {"maximumRetryCount": 3}}},
     "data.container.restartPolicy.name must be a non-empty string"),
    (CreateRequest, {"container": {"uuid": UUID, "image": "a:1", "command": "ls -l"}},
     "data.container.command must be a list of strings"),
])
def test_a_malformed_request_is_invalid_data_naming_the_field(
        kind: type[Payload], data: Any, message: str) -> None:
    with pytest.raises(InstructionError) as caught:
        kind.parse(data)
    assert (caught.value.code, str(caught.value)) == (ErrorCode.INVALID_DATA, message)


@pytest.mark.parametrize(("name", "data", "message"), [
    ("instance.start", {"status": "running"},
     "the reply data of instance.start.dockerId must be a non-empty string"),
    ("instance.inspect", {"dockerId": "4f2a", "status": "sleeping"},
     "the reply data of instance.inspect.status must be one of created, running, paused, "
     "restarting, removing, exited, dead, removed"),
    ("instance.create", {"dockerId": "4f2a", "ports": [{"containerPort": 80, "hostPort": "80"}]},
     "the reply data of instance.create.ports[0].hostPort must be an integer"),
    ("instance.stats", {"memoryUsage": 1.5},
     "the reply data of instance.stats.memoryUsage must be an integer"),
    ("host.stats", {}, "the reply data of host.stats.containers must be an integer"),
    ("instance.exec", {"exitCode": "0"}, "the reply data of instance.exec.exitCode must be an "
     "integer"),
])
def test_a_malformed_reply_is_a_protocol_error_naming_the_field(
        name: str, data: Any, message: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_reply(name, data)
    assert str(caught.value) == message


def test_an_instruction_outside_the_table_has_no_reply_type() -> None:
    assert parse_reply("instance.migrate", {"anything": 1}) is None


def test_unknown_keys_are_ignored_so_newer_peers_may_add_some() -> None:
    assert ContainerRef.parse({"uuid": UUID, "future": True}) == ContainerRef(UUID)
    assert ExecResult.parse({"exitCode": 0, "signal": None}) == ExecResult(0)
