"""Containers end to end with the ``cattle`` client, on this machine's Docker engine."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.request

import cattle
import gdapi
import pytest

from tests.e2e.cluster import HTTPD, IMAGE, SLEEPER, Cluster, docker, docker_state
from tests.support.processes import free_port
from tests.support.timing import seconds, wait_for


def test_container_lifecycle_is_reflected_in_docker_and_the_api(cluster: Cluster) -> None:
    api = cluster.client()
    created = api.create_container(imageUuid=f"docker:{IMAGE}", name="sleeper",
                                   command=SLEEPER, labels=cluster.labels())
    assert created.state == "requested" and created.transitioning == "yes"
    container = api.wait_success(created)
    assert container.state == "running" and container.transitioning == "no"
    assert set(container.actions.__dict__) >= {"stop", "restart", "logs", "execute"}
    assert docker_state(container.uuid)["State"]["Running"] is True
    assert container.externalId == docker_state(container.uuid)["Id"]
    assert container.hostId == cluster.server.hosts()[0]["id"]

    container = api.wait_success(container.stop(timeout=1))
    assert container.state == "stopped"
    assert docker_state(container.uuid)["State"]["Running"] is False

    container = api.wait_success(container.start())
    assert container.state == "running"
    started = docker_state(container.uuid)["State"]["StartedAt"]
    container = api.wait_success(container.restart())
    assert container.state == "running"
    assert docker_state(container.uuid)["State"]["StartedAt"] != started

    container = api.wait_success(api.delete(container))
    assert container.state == "removed" and docker_state(container.uuid) is None
    container = api.wait_success(container.purge())
    assert container.state == "purged"


def test_published_port_of_an_httpd_container_answers_from_the_host(cluster: Cluster) -> None:
    api = cluster.client()
    port = free_port()
    container = api.wait_success(api.create_container(
        imageUuid=f"docker:{IMAGE}", command=HTTPD, ports=[f"{port}:80/tcp"],
        labels=cluster.labels()))
    assert container.state == "running"
    # Published on the host's address (its agentIpAddress), where other machines reach it.
    address = container.publicEndpoints[0].ipAddress

    def fetch() -> str | None:
        try:
            with urllib.request.urlopen(f"http://{address}:{port}/", timeout=2) as r:
                return str(r.read().decode().strip())
        except OSError:
            return None

    assert wait_for(fetch, 10, "httpd to answer") == "hello"
    assert container.publicEndpoints[0].port == port


def test_docker_kill_shows_in_the_api_within_two_seconds(cluster: Cluster) -> None:
    api = cluster.client()
    container = api.wait_success(api.create_container(
        imageUuid=f"docker:{IMAGE}", command=SLEEPER, labels=cluster.labels()))
    docker("kill", container.externalId)
    killed = time.monotonic()
    wait_for(lambda: api.reload(container).state == "stopped", 2, "the API to show stopped")
    assert time.monotonic() - killed <= seconds(2)
    assert api.reload(container).exitCode == 137
    docker("start", container.externalId)
    wait_for(lambda: api.reload(container).state == "running", 2, "the API to show running")
    docker("rm", "-f", container.externalId)
    wait_for(lambda: api.reload(container).state == "removed", 2, "the API to show removed")


def test_unknown_image_ends_in_error_with_dockers_message(cluster: Cluster) -> None:
    api = cluster.client()
    created = api.create_container(imageUuid="docker:corral-test/does-not-exist:1",
                                   labels=cluster.labels())
    with pytest.raises(gdapi.ClientApiError) as error:
        api.wait_success(created)
    message = str(error.value)
    assert "corral-test/does-not-exist" in message
    failed = api.reload(created)
    assert failed.state == "error" and failed.transitioning == "error"
    assert failed.transitioningMessage == message


@pytest.mark.parametrize(("field", "value"), [
    ("ports", ["80:http"]), ("ports", ["99999:80"]), ("dataVolumes", ["relative:path"]),
    ("memory", "lots"), ("memory", "-5m"), ("imageUuid", "busybox"),
])
def test_malformed_fields_get_422_naming_the_field(cluster: Cluster, field: str,
                                                   value: object) -> None:
    api = cluster.client()
    values = {"imageUuid": f"docker:{IMAGE}", field: value}
    with pytest.raises(gdapi.ApiError) as error:
        api.create_container(**values)
    assert error.value.error.status == 422
    assert error.value.error.fieldName == field


def test_container_for_a_disconnected_host_is_refused_clearly(cluster: Cluster) -> None:
    api = cluster.client()
    host = cluster.server.hosts()[0]
    cluster.kill_agent()
    wait_for(lambda: cluster.server.get_host(host["id"])["state"] != "active", 5,
             "the host to lose its agent")
    with pytest.raises(gdapi.ApiError) as error:
        api.create_container(imageUuid=f"docker:{IMAGE}", requestedHostId=host["id"])
    assert error.value.error.status == 422
    assert "not active" in error.value.error.message
    assert host["id"] in error.value.error.message


def test_agent_restart_reconciles_what_changed_meanwhile(cluster: Cluster) -> None:
    api = cluster.client()
    keep, stop_me, remove_me = (api.wait_success(api.create_container(
        imageUuid=f"docker:{IMAGE}", command=SLEEPER, labels=cluster.labels()))
        for _ in range(3))
    cluster.kill_agent()
    docker("stop", "-t", "0", stop_me.externalId)
    docker("rm", "-f", remove_me.externalId)
    native = docker("run", "-d", "--label", f"corral.test={cluster.run_label}", "--name",
                    f"native-{cluster.run_label}", IMAGE, "sleep", "3600")
    cluster.start_agent()
    wait_for(lambda: api.reload(stop_me).state == "stopped", 10, "the stopped container")
    wait_for(lambda: api.reload(remove_me).state == "removed", 10, "the removed container")
    assert api.reload(keep).state == "running"

    def imported() -> list[object]:
        return [c for c in api.list_container(externalId=native)]

    found = wait_for(imported, 10, "the native container to be imported")
    assert len(found) == 1 and found[0].nativeContainer is True and found[0].state == "running"
    cluster.kill_agent()
    cluster.start_agent()
    cluster.active_hosts(1)
    time.sleep(1)
    assert len(imported()) == 1  # nothing duplicated on a second reconnect
    assert len([c for c in api.list_container(removed_null=True)
                if c.uuid in (keep.uuid, stop_me.uuid)]) == 2


def test_server_killed_while_creating_ends_with_each_container_running_once(
        cluster: Cluster) -> None:
    api = cluster.client()
    created = [api.create_container(imageUuid=f"docker:{IMAGE}", command=SLEEPER,
                                    labels=cluster.labels()) for _ in range(8)]
    assert cluster.server.proc is not None
    cluster.server.proc.send_signal(signal.SIGKILL)
    cluster.server.proc.wait()
    cluster.server.start()
    api = cluster.client()
    for container in created:
        done = api.wait_success(api.by_id_container(container.id), timeout=60)
        assert done.state == "running"
    for container in created:
        state = docker_state(container.uuid)  # asserts exactly one docker container
        assert state is not None and state["State"]["Running"] is True


def test_cattle_sees_container_schema_and_actions_per_state(cluster: Cluster) -> None:
    api: cattle.Client = cluster.client()
    schema = api.schema.types["container"]
    assert schema.resourceFields.startOnCreate.default is True
    assert "POST" in schema.collectionMethods
    container = api.wait_success(api.create_container(
        imageUuid=f"docker:{IMAGE}", command=SLEEPER, labels=cluster.labels()))
    assert set(container.actions.__dict__) == {
        "migrate", "restart", "stop", "update", "execute", "logs", "proxy", "addlabel",
        "removelabel", "setlabels"}
    stopped = api.wait_success(container.stop(timeout=0))
    assert set(stopped.actions.__dict__) == {"start", "remove", "update", "setlabels",
                                             "addlabel", "removelabel", "logs"}
    subprocess.run(["true"], check=True)


def test_named_volumes_outlive_their_containers_and_are_deleted_with_their_record(
        cluster: Cluster) -> None:
    api = cluster.client()
    name = f"vol-{cluster.run_label}"
    container = api.wait_success(api.create_container(
        imageUuid=f"docker:{IMAGE}", command=SLEEPER, dataVolumes=[f"{name}:/data", "/scratch"],
        labels=cluster.labels()))
    volumes = {v.name: v for v in api.list_volume(removed_null=True)}
    named = volumes[name]
    assert named.state == "active" and named.hostId == container.hostId
    assert [m.instanceId for m in named.mounts] == [container.id]
    anonymous = [v for v in volumes.values() if v.anonymous]
    assert len(anonymous) == 1 and anonymous[0].mounts[0].path == "/scratch"
    pools = list(api.list_storage_pool())
    assert named.storagePoolId == pools[0].id and pools[0].hostIds == [container.hostId]

    with pytest.raises(gdapi.ApiError) as busy:
        api.delete(named)
    assert busy.value.error.status == 422 and container.id in busy.value.error.message

    api.wait_success(api.delete(container))
    assert api.reload(named).state == "active" and api.reload(named).mounts == []
    assert docker("volume", "ls", "-q", "--filter", f"name=^{name}$") == name
    assert api.reload(anonymous[0]).state == "removed"

    again = api.wait_success(api.create_container(
        imageUuid=f"docker:{IMAGE}", command=["sh", "-c", "ls /data; sleep 3600"],
        dataVolumes=[f"{name}:/data"], labels=cluster.labels()))
    assert again.hostId == container.hostId
    api.wait_success(api.delete(again))

    removed = api.wait_success(api.delete(named))
    assert removed.state == "removed"
    assert docker("volume", "ls", "-q", "--filter", f"name=^{name}$") == ""
    assert api.wait_success(removed.purge()).state == "purged"


def test_container_removed_while_its_host_is_away_goes_when_the_host_returns(
        cluster: Cluster) -> None:
    api = cluster.client()
    container = api.wait_success(api.create_container(
        imageUuid=f"docker:{IMAGE}", command=SLEEPER, labels=cluster.labels()))
    host = container.hostId
    cluster.kill_agent()
    wait_for(lambda: cluster.server.get_host(host)["state"] != "active", 5, "the host to go")
    with pytest.raises(gdapi.ApiError) as refused:
        container.stop()
    assert refused.value.error.status == 503 and host in refused.value.error.message
    removed = api.delete(container)
    assert removed.state == "removed"
    assert docker_state(container.uuid) is not None  # still there: its host is away
    cluster.start_agent()
    wait_for(lambda: docker_state(container.uuid) is None, 10,
             "the host to remove the container when it returns")
