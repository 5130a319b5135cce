"""Placement over two hosts: this machine and a second Docker daemon in its own namespace."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import HTTPD, IMAGE, SLEEPER, Cluster, docker_state
from tests.e2e.conftest import ExtraHost
from tests.support.processes import ServerProcess, free_port

AFFINITY = "io.rancher.scheduler.affinity:"


@pytest.fixture
def two_hosts(second_host: ExtraHost, tmp_path: Path) -> Iterator[tuple[Cluster, dict[str, str]]]:
    """A cluster of two hosts labelled zone=a (this machine) and zone=b (the namespace)."""
    server = ServerProcess(data_dir=tmp_path / "data", port=free_port(), host="0.0.0.0")
    server.start()
    cluster = Cluster(server=server, tmp=tmp_path)
    url = server.registration_url().replace("0.0.0.0", second_host.gateway)
    try:
        cluster.start_agent("a", url)
        cluster.start_agent("b", url, env={"DOCKER_HOST": second_host.docker_host},
                            prefix=second_host.nsenter())
        hosts = cluster.active_hosts(2)
        ids = {("b" if h["agentIpAddress"] == second_host.ip else "a"): h["id"] for h in hosts}
        for zone, host_id in ids.items():
            server.api("PUT", f"/hosts/{host_id}", json={"labels": {"zone": zone}})
        yield cluster, {**ids, "b_docker": second_host.docker_host}
    finally:
        cluster.close(docker_hosts=(None, second_host.docker_host))
        server.stop()


def test_placement_spreads_and_honours_requests_affinity_and_ports(
        two_hosts: tuple[Cluster, dict[str, str]]) -> None:
    cluster, hosts = two_hosts
    api = cluster.client()

    # Containers already on the hosts (imported ones too) count towards the spread.
    before = Counter(c.hostId for c in api.list_container(removed_null=True, limit=1000))
    created = [api.create_container(imageUuid=f"docker:{IMAGE}", command=SLEEPER,
                                    labels=cluster.labels()) for _ in range(10)]
    running = [api.wait_success(c, timeout=60) for c in created]
    assert all(c.state == "running" for c in running)
    after = before + Counter(c.hostId for c in running)
    if abs(before[hosts["a"]] - before[hosts["b"]]) <= 10:
        assert abs(after[hosts["a"]] - after[hosts["b"]]) <= 1, (before, after)
    else:  # one host is far busier: every new container goes to the other
        lesser = min(("a", "b"), key=lambda h: before[hosts[h]])
        assert {c.hostId for c in running} == {hosts[lesser]}
    for c in running:  # each runs on the daemon of the host it was placed on
        docker_host = hosts["b_docker"] if c.hostId == hosts["b"] else None
        assert docker_state(c.uuid, docker_host)["State"]["Running"] is True

    pinned = api.wait_success(api.create_container(
        imageUuid=f"docker:{IMAGE}", command=SLEEPER, requestedHostId=hosts["a"],
        labels=cluster.labels()))
    assert pinned.hostId == hosts["a"]

    to_b = api.wait_success(api.create_container(
        imageUuid=f"docker:{IMAGE}", command=SLEEPER,
        labels=cluster.labels({f"{AFFINITY}host_label": "zone=b"})))
    assert to_b.hostId == hosts["b"]
    not_b = api.wait_success(api.create_container(
        imageUuid=f"docker:{IMAGE}", command=SLEEPER,
        labels=cluster.labels({f"{AFFINITY}host_label_ne": "zone=b"})))
    assert not_b.hostId == hosts["a"]

    port = free_port()
    first = api.wait_success(api.create_container(
        imageUuid=f"docker:{IMAGE}", command=HTTPD, ports=[f"{port}:80"],
        labels=cluster.labels()))
    second = api.wait_success(api.create_container(
        imageUuid=f"docker:{IMAGE}", command=HTTPD, ports=[f"{port}:80"],
        labels=cluster.labels()))
    assert {first.hostId, second.hostId} == {hosts["a"], hosts["b"]}
    with pytest.raises(Exception) as error:
        api.create_container(imageUuid=f"docker:{IMAGE}", command=HTTPD, ports=[f"{port}:80"])
    assert "port" in str(error.value)


def test_container_using_a_host_local_volume_lands_on_that_volumes_host(
        two_hosts: tuple[Cluster, dict[str, str]]) -> None:
    cluster, hosts = two_hosts
    api = cluster.client()
    volume = f"data-{cluster.run_label}"
    first = api.wait_success(api.create_container(
        imageUuid=f"docker:{IMAGE}", command=SLEEPER, requestedHostId=hosts["b"],
        dataVolumes=[f"{volume}:/data"], labels=cluster.labels()))
    assert first.hostId == hosts["b"]
    for _ in range(3):  # spreading alone would send some of these to the other host
        follower = api.wait_success(api.create_container(
            imageUuid=f"docker:{IMAGE}", command=SLEEPER, dataVolumes=[f"{volume}:/data"],
            labels=cluster.labels()))
        assert follower.hostId == hosts["b"]
    with pytest.raises(Exception) as error:
        api.create_container(imageUuid=f"docker:{IMAGE}", requestedHostId=hosts["a"],
                             dataVolumes=[f"{volume}:/data"])
    assert hosts["a"] in str(error.value)
