"""Rancher 1.6's container states and actions end to end, with the ``cattle`` client, this
machine's agent and Docker: the HTTP proxy through the agent, migrate, update, the label
actions, and a running container stopped before it is removed."""

from __future__ import annotations

import requests

from tests.e2e.cluster import HTTPD, IMAGE, SLEEPER, Cluster, docker_state
from tests.e2e.test_placement import two_hosts
from tests.support.timing import seconds

__all__ = ["two_hosts"]  # the fixture of two hosts, for migrate


def test_proxy_carries_http_requests_to_the_containers_port_through_the_agent(
        cluster: Cluster) -> None:
    api = cluster.client()
    # No port published: the only way in is the agent's connection to the container.
    container = api.wait_success(api.create_container(
        imageUuid=f"docker:{IMAGE}", command=HTTPD, labels=cluster.labels()))
    assert container.state == "running" and "proxy" in container.actions.__dict__

    access = container.proxy(port=80, scheme="http")

    assert access.type == "hostAccess" and access.url.startswith("http://") and access.token
    assert access.url.endswith(f"/{access.token}/")
    page = requests.get(access.url + "index.html", timeout=seconds(10))
    assert (page.status_code, page.text.strip()) == (200, "hello")
    # The token serves the requests of a page, not one only; the container's own errors pass.
    missing = requests.get(access.url + "no-such-page", timeout=seconds(10))
    assert missing.status_code == 404 and "hello" not in missing.text


def test_a_proxy_to_a_closed_port_or_with_a_forged_token_is_an_error_body(
        cluster: Cluster) -> None:
    api = cluster.client()
    container = api.wait_success(api.create_container(
        imageUuid=f"docker:{IMAGE}", command=SLEEPER, labels=cluster.labels()))

    closed = requests.get(container.proxy(port=81).url, timeout=seconds(20))
    assert closed.status_code == 502 and closed.json()["type"] == "error"
    assert "could not connect" in closed.json()["message"]
    forged = requests.get(f"{cluster.server.origin}/v1/container-proxy/forged/",
                          timeout=seconds(5))
    assert forged.status_code == 404 and forged.json()["type"] == "error"


def test_a_new_container_is_requested_and_a_running_one_offers_rancher_s_actions(
        cluster: Cluster) -> None:
    api = cluster.client()
    created = api.create_container(imageUuid=f"docker:{IMAGE}", command=SLEEPER,
                                   labels=cluster.labels())
    assert (created.state, created.transitioning) == ("requested", "yes")

    container = api.wait_success(created)

    assert container.state == "running"
    assert set(container.actions.__dict__) == {
        "migrate", "restart", "stop", "update", "execute", "logs", "proxy", "addlabel",
        "removelabel", "setlabels"}


def test_migrate_on_one_host_makes_the_container_anew_and_keeps_its_record(
        cluster: Cluster) -> None:
    api = cluster.client()
    container = api.wait_success(api.create_container(
        imageUuid=f"docker:{IMAGE}", command=SLEEPER, labels=cluster.labels()))
    before = docker_state(container.uuid)["Id"]

    asked = container.migrate()
    assert (asked.state, asked.transitioning) == ("migrating", "yes")
    migrated = api.wait_success(asked)

    assert (migrated.state, migrated.id, migrated.hostId) == (
        "running", container.id, container.hostId)
    now = docker_state(migrated.uuid)
    assert now["Id"] != before and now["State"]["Running"] is True
    assert migrated.externalId == now["Id"]


def test_migrate_moves_a_running_container_to_the_other_host(
        two_hosts: tuple[Cluster, dict[str, str]]) -> None:
    cluster, hosts = two_hosts
    api = cluster.client()
    container = api.wait_success(api.create_container(
        imageUuid=f"docker:{IMAGE}", command=SLEEPER, labels=cluster.labels()), timeout=60)
    docker_of = {hosts["a"]: None, hosts["b"]: hosts["b_docker"]}
    other = hosts["b"] if container.hostId == hosts["a"] else hosts["a"]

    migrated = api.wait_success(container.migrate(), timeout=60)

    assert (migrated.state, migrated.id, migrated.hostId) == ("running", container.id, other)
    assert docker_state(container.uuid, docker_of[container.hostId]) is None
    now = docker_state(container.uuid, docker_of[other])
    assert now["State"]["Running"] is True and migrated.externalId == now["Id"]


def test_update_passes_updating_running_and_labels_change_one_at_a_time(
        cluster: Cluster) -> None:
    api = cluster.client()
    container = api.wait_success(api.create_container(
        imageUuid=f"docker:{IMAGE}", command=SLEEPER, labels=cluster.labels()))

    asked = api.action(container, "update")  # container.update is the client's PUT
    assert asked.state == "updating-running"
    assert api.wait_success(asked).state == "running"

    labelled = container.addlabel(key="tier", value="web")
    assert labelled.labels.tier == "web"
    unlabelled = api.reload(labelled).removelabel(key="tier")
    assert "tier" not in unlabelled.labels.__dict__


def test_deleting_a_running_container_stops_it_then_removes_it(cluster: Cluster) -> None:
    api = cluster.client()
    container = api.wait_success(api.create_container(
        imageUuid=f"docker:{IMAGE}", command=SLEEPER, labels=cluster.labels()))

    asked = api.delete(container)
    assert (asked.state, asked.transitioning) == ("stopping", "yes")
    removed = api.wait_success(asked)

    assert removed.state == "removed" and docker_state(removed.uuid) is None
