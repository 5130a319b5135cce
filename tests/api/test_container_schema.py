"""The container schema's field declarations as Rancher 1.6 has them, and the values served
beside them: an enum refuses other values, a field that is not nullable is never null."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from tests.api.test_links_fields import (  # noqa: F401 (agent is a fixture)
    ScriptedAgent,
    agent,
    get,
    post,
    running,
)

NOT_NULLABLE_BOOLEANS = ("privileged", "tty", "stdinOpen", "readOnly", "startOnCreate",
                         "publishAllPorts", "nativeContainer")


async def container_fields(client: TestClient, version: str) -> dict[str, dict[str, object]]:
    return dict((await get(client, f"/{version}/schemas/container"))["resourceFields"])


async def test_capabilities_and_pid_mode_are_enums(client: TestClient) -> None:
    for version in ("v1", "v2-beta"):
        fields = await container_fields(client, version)
        for name in ("capAdd", "capDrop"):
            options = fields[name]["options"]
            assert fields[name]["type"] == "array[enum]"
            assert isinstance(options, list) and options[0] == "ALL" and "NET_ADMIN" in options
        assert (fields["pidMode"]["type"], fields["pidMode"]["options"]) == ("enum", ["host"])


async def test_maps_and_booleans_a_container_always_has_are_not_nullable(
        client: TestClient) -> None:
    fields = await container_fields(client, "v1")
    for name in (*NOT_NULLABLE_BOOLEANS, "environment", "labels"):
        assert fields[name]["nullable"] is False, name
    assert fields["nativeContainer"]["type"] == "boolean"
    assert "native" not in fields


async def test_a_pid_mode_other_than_host_is_refused(client: TestClient) -> None:
    for mode in ("private", ""):
        status, body = await post(client, "/v1/containers",
                                  {"imageUuid": "docker:busybox", "pidMode": mode})
        assert (status, body["code"], body["fieldName"]) == (422, "InvalidOption", "pidMode")


async def test_a_capability_linux_lacks_is_refused(client: TestClient) -> None:
    status, body = await post(client, "/v1/containers",
                              {"imageUuid": "docker:busybox", "capAdd": ["NET_ADMIN", "FLY"]})
    assert (status, body["code"], body["fieldName"]) == (422, "InvalidOption", "capAdd")


async def test_a_container_shows_its_maps_and_flags_even_when_not_sent(
        client: TestClient, agent: ScriptedAgent) -> None:  # noqa: F811
    container = await running(client, {"privileged": None})
    assert container["environment"] == {}
    assert isinstance(container["labels"], dict)
    for name in NOT_NULLABLE_BOOLEANS:
        assert isinstance(container[name], bool), name
    assert container["nativeContainer"] is False
    assert container["privileged"] is False


async def test_container_action_inputs_with_defaults_are_not_nullable(
        client: TestClient) -> None:
    flags = {"instanceStop": ("timeout", "remove"), "containerLogs": ("follow",),
             "containerExec": ("tty", "attachStdin", "attachStdout"),
             "containerProxy": ("scheme",), "setLabelsInput": ("labels",),
             "restartPolicy": ("name", "maximumRetryCount")}
    for type_name, names in flags.items():
        fields = (await get(client, f"/v1/schemas/{type_name}"))["resourceFields"]
        for name in names:
            assert fields[name]["nullable"] is False, f"{type_name}.{name}"


async def test_a_restart_policy_reads_back_with_a_name_and_a_retry_count(
        client: TestClient, agent: ScriptedAgent) -> None:  # noqa: F811
    container = await running(client, {"restartPolicy": "always"})
    assert container["restartPolicy"] == {"name": "always", "maximumRetryCount": 0}
