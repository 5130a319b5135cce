"""Container instructions, spec translation, state summaries, pull progress, events and inventory,
on the recording FakeRuntime (the real engine is in tests/e2e/test_agent_containers.py)."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import docker.types
import pytest

from agent import events
from agent.containers import MANAGED_LABEL, UUID_LABEL, PullProgress, create_params, state_summary
from agent.dispatcher import Dispatcher
from agent.facts import FactsSource
from agent.handlers import HANDLERS, STREAMING
from agent.network.config import NETWORK
from agent.runtime import RuntimeUnavailable
from shared import protocol
from shared.containers import ContainerSpec, ContainerState
from shared.errors import ErrorCode, InstructionError
from shared.instructions import INSTRUCTIONS, parse_reply
from tests.unit.agent.fakes import FakeRuntime, blank_spec

DATA = Path(__file__).resolve().parents[2] / "data" / "docker"
UUID = "0b7c5f3e-1d2a-4c6b-9e8f-a1b2c3d4e5f6"
IMAGE = "corral-test/busybox:latest"
WAIT = 5.0  # reached only when something is broken


def spec(**overrides: Any) -> dict[str, Any]:
    """A normalised spec as the server sends it: every key present."""
    return blank_spec(**{"uuid": UUID, "image": IMAGE, **overrides})


class Outbox:
    def __init__(self) -> None:
        self.sent: list[protocol.AgentMessage] = []

    async def __call__(self, message: protocol.AgentMessage) -> None:
        self.sent.append(message)

    def progress(self) -> list[protocol.Progress]:
        return [m for m in self.sent if isinstance(m, protocol.Progress)]

    def reply(self) -> protocol.Reply:
        replies = [m for m in self.sent if isinstance(m, protocol.Reply)]
        assert len(replies) == 1
        return replies[0]


class Agent:
    """The real handler table and dispatcher on a FakeRuntime."""

    def __init__(self, runtime: FakeRuntime | None = None) -> None:
        self.runtime = runtime or FakeRuntime()
        self.dispatcher = Dispatcher(HANDLERS, self.runtime, FactsSource(self.runtime, {}, None))
        self.count = 0

    async def call(self, name: str, **data: Any) -> tuple[protocol.Reply, Outbox]:
        self.count += 1
        outbox = Outbox()
        await self.dispatcher.handle(protocol.Request(
            id=f"r-{self.count}", name=name, resource_type="container", resource_id="1i7",
            data=data, timeout_ms=int(WAIT * 1000)), outbox)
        return outbox.reply(), outbox

    async def ok(self, name: str, **data: Any) -> dict[str, Any]:
        reply, _ = await self.call(name, **data)
        assert reply.error is None, reply.error
        protocol.parse(protocol.dump(reply))  # fits the wire
        return reply.data

    async def error(self, name: str, **data: Any) -> protocol.ReplyError:
        reply, _ = await self.call(name, **data)
        assert reply.error is not None, reply.data
        return reply.error


@pytest.fixture
def agent() -> Agent:
    return Agent()


# create_params


def params_of(spec: dict[str, Any], host_ip: str | None) -> dict[str, Any]:
    """create_params of a spec as the agent gets it: JSON, parsed first."""
    return create_params(ContainerSpec.parse(spec), host_ip)


FULL_SPEC = spec(
    name="web-1", command=["httpd", "-f"], entryPoint=["/bin/sh", "-c"],
    environment={"GREETING": "hello", "EMPTY": ""},
    labels={"tier": "web", UUID_LABEL: "forged", MANAGED_LABEL: "no"},
    ports=[{"hostIp": None, "hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
           {"hostIp": "127.0.0.1", "hostPort": None, "containerPort": 53, "protocol": "udp"},
           {"hostIp": None, "hostPort": None, "containerPort": 80, "protocol": "tcp"}],
    expose=[{"containerPort": 9000, "protocol": "tcp"}],
    binds=[{"source": "/srv/www", "destination": "/www", "mode": "ro"},
           {"source": "/srv/logs", "destination": "/logs", "mode": None}],
    volumes=[{"name": "data", "destination": "/data", "mode": "rw", "driver": "local"},
             {"name": None, "destination": "/cache", "mode": None, "driver": None}],
    volumesFrom=["4f2a"], networkMode="bridge", dns=["10.0.0.2"], dnsSearch=["corp.local"],
    capAdd=["NET_ADMIN"], capDrop=["MKNOD"], extraHosts=["db:10.0.0.5"],
    restartPolicy={"name": "on-failure", "maximumRetryCount": 3}, cpuShares=512,
    memory=268435456, memorySwap=536870912, cpuSet="0,1", user="www-data", workingDir="/www",
    hostname="web", domainName="example.com", pidMode="host", ipcMode="shareable",
    privileged=True, tty=True, stdinOpen=True, readOnly=True,
    devices=[{"pathOnHost": "/dev/fuse", "pathInContainer": None, "permissions": None},
             {"pathOnHost": "/dev/sda", "pathInContainer": "/dev/xvda", "permissions": "r"}],
    logConfig={"driver": "json-file", "config": {"max-size": "10m"}},
    ulimits=[{"name": "nofile", "soft": 1024, "hard": 4096}],
    publishAllPorts=True, blkioWeight=300,
    blkioDeviceOptions=[{"path": "/dev/sda", "weight": 200, "readBps": 1048576,
                         "writeBps": None, "readIops": None, "writeIops": 50}],
)


def test_create_params_puts_every_field_of_a_full_spec_in_its_docker_kwarg() -> None:
    assert params_of(FULL_SPEC, "10.0.0.9") == {
        "image": IMAGE,
        "command": ["httpd", "-f"],
        "entrypoint": ["/bin/sh", "-c"],
        "environment": ["GREETING=hello", "EMPTY="],
        "labels": {"tier": "web", UUID_LABEL: UUID, MANAGED_LABEL: "true"},
        "ports": {"80/tcp": {}, "53/udp": {}, "9000/tcp": {}},
        "volumes": ["/cache"],
        "name": "web-1",
        "hostname": "web",
        "domainname": "example.com",
        "user": "www-data",
        "working_dir": "/www",
        "tty": True,
        "stdin_open": True,
        "host_config": {
            "binds": ["/srv/www:/www:ro", "/srv/logs:/logs:rw", "data:/data:rw"],
            "port_bindings": {
                "80/tcp": [{"HostIp": "10.0.0.9", "HostPort": "8080"},
                           {"HostIp": "10.0.0.9", "HostPort": ""}],
                "53/udp": [{"HostIp": "127.0.0.1", "HostPort": ""}],
            },
            "volumes_from": ["4f2a"],
            "network_mode": "bridge",
            "dns": ["10.0.0.2"],
            "dns_search": ["corp.local"],
            "restart_policy": {"Name": "on-failure", "MaximumRetryCount": 3},
            "cpu_shares": 512,
            "cpuset_cpus": "0,1",
            "mem_limit": 268435456,
            "memswap_limit": 536870912,
            "privileged": True,
            "cap_add": ["NET_ADMIN"],
            "cap_drop": ["MKNOD"],
            "devices": ["/dev/fuse:/dev/fuse:rwm", "/dev/sda:/dev/xvda:r"],
            "extra_hosts": ["db:10.0.0.5"],
            "read_only": True,
            "pid_mode": "host",
            "ipc_mode": "shareable",
            "log_config": {"Type": "json-file", "Config": {"max-size": "10m"}},
            "ulimits": [{"Name": "nofile", "Soft": 1024, "Hard": 4096}],
            "volume_driver": "local",
            "publish_all_ports": True,
            "blkio_weight": 300,
            "blkio_weight_device": [{"Path": "/dev/sda", "Weight": 200}],
            "device_read_bps": [{"Path": "/dev/sda", "Rate": 1048576}],
            "device_write_bps": None,
            "device_read_iops": None,
            "device_write_iops": [{"Path": "/dev/sda", "Rate": 50}],
        },
        "networking_config": None,
    }


def test_the_servers_golden_spec_becomes_arguments_docker_py_accepts() -> None:
    """The server's normalised spec (its golden file) turns into a valid docker-py request."""
    golden = json.loads((DATA.parent / "container_spec" / "full.json").read_text())
    params = params_of(golden, None)
    host_config = docker.types.HostConfig("1.41", **params.pop("host_config"))
    params.pop("name")  # create_container sends it in the URL, not in the config
    config = docker.types.ContainerConfig("1.41", host_config=host_config, **params)
    assert config["Labels"][UUID_LABEL] == golden["uuid"]
    assert host_config["PortBindings"]["9100/tcp"] == [{"HostIp": "10.0.0.5", "HostPort": "9100"}]
    assert host_config["Binds"] == ["/srv/shop/static:/app/static:ro",
                                    "shop-media:/app/media:rw,z"]
    assert config["Volumes"] == {"/tmp/cache": {}}
    assert [u["Name"] for u in host_config["Ulimits"]] == ["nofile", "nproc"]


def test_create_params_of_a_minimal_spec_leave_docker_its_defaults() -> None:
    params = params_of(spec(), None)
    assert params["labels"] == {UUID_LABEL: UUID, MANAGED_LABEL: "true"}
    assert [k for k, v in params.items() if v not in (None, False)] == [
        "image", "labels", "host_config"]
    assert [k for k, v in params["host_config"].items() if v not in (None, False)] == []


def test_ports_bind_to_their_own_ip_else_the_agent_ip_else_every_interface() -> None:
    ports = [{"hostIp": "127.0.0.1", "hostPort": 81, "containerPort": 81, "protocol": "tcp"},
             {"hostIp": None, "hostPort": 82, "containerPort": 82, "protocol": None}]
    assert params_of(spec(ports=ports), "10.0.0.9")["host_config"]["port_bindings"] == {
        "81/tcp": [{"HostIp": "127.0.0.1", "HostPort": "81"}],
        "82/tcp": [{"HostIp": "10.0.0.9", "HostPort": "82"}]}
    assert params_of(spec(ports=ports), None)["host_config"]["port_bindings"][
        "82/tcp"] == [{"HostIp": "", "HostPort": "82"}]


def test_host_networking_drops_published_ports_like_docker_run() -> None:
    ports = [{"hostIp": None, "hostPort": 80, "containerPort": 80, "protocol": "tcp"}]
    params = params_of(spec(ports=ports, networkMode="host"), None)
    assert params["host_config"]["port_bindings"] is None
    assert params["ports"] == {"80/tcp": {}}


def test_a_managed_container_joins_the_overlay_network_at_its_fixed_address() -> None:
    ports = [{"hostIp": None, "hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
    params = params_of(spec(networkMode="managed", ipAddress="10.42.3.9", ports=ports), None)
    assert params["host_config"]["network_mode"] == NETWORK
    assert params["networking_config"] == {
        "EndpointsConfig": {NETWORK: {"IPAMConfig": {"IPv4Address": "10.42.3.9"}}}}
    # A user-defined bridge publishes ports like the default one.
    assert params["host_config"]["port_bindings"] == {
        "80/tcp": [{"HostIp": "", "HostPort": "8080"}]}


def test_the_networking_config_is_what_docker_py_would_build() -> None:
    params = params_of(spec(networkMode="managed", ipAddress="10.42.3.9"), None)
    api = docker.APIClient(version="1.41")
    assert params["networking_config"] == api.create_networking_config(
        {NETWORK: api.create_endpoint_config(ipv4_address="10.42.3.9")})
    config = docker.types.ContainerConfig(
        "1.41", params["image"], None, networking_config=params["networking_config"])
    assert config["NetworkingConfig"] == params["networking_config"]


def test_a_managed_container_without_an_address_lets_docker_pick_one() -> None:
    params = params_of(spec(networkMode="managed"), None)
    assert params["host_config"]["network_mode"] == NETWORK
    assert params["networking_config"] is None


@pytest.mark.parametrize(("overrides", "words"), [
    ({"networkMode": "bridge", "ipAddress": "10.42.3.9"},
     "network mode bridge; a fixed address is only possible on the managed network"),
    ({"networkMode": None, "ipAddress": "10.42.3.9"}, "network mode bridge"),
    ({"networkMode": "managed", "ipAddress": "10.42.3.300"}, "is not an IPv4 address"),
    ({"networkMode": "managed", "ipAddress": "fd00::9"}, "is not an IPv4 address"),
])
def test_a_fixed_address_off_the_managed_network_is_invalid_data(
        overrides: dict[str, Any], words: str) -> None:
    with pytest.raises(InstructionError, match=words) as caught:
        params_of(spec(**overrides), None)
    assert caught.value.code is ErrorCode.INVALID_DATA


def test_extra_hosts_may_be_a_map() -> None:
    params = params_of(spec(extraHosts={"db": "10.0.0.5"}), None)
    assert params["host_config"]["extra_hosts"] == {"db": "10.0.0.5"}


@pytest.mark.parametrize(("overrides", "words"), [
    ({"uuid": None}, "^container.uuid must be a non-empty string$"),
    ({"image": ""}, "^container.image must be a non-empty string$"),
    ({"labels": ["a=b"]}, "^container.labels must be a map of strings to strings$"),
    ({"ports": {"80": 80}}, "^container.ports must be a list$"),
    ({"binds": [{"destination": "/x"}]}, r"^container.binds\[0\].source must be a non-empty "),
    ({"ports": [{"containerPort": "http"}]},
     r"^container.ports\[0\].containerPort must be an integer$"),
    ({"privileged": "yes"}, "^container.privileged must be true or false$"),
    ({"volumes": [{"name": "a", "destination": "/a", "driver": "local"},
                  {"name": "b", "destination": "/b", "driver": "rexray"}]}, "several drivers"),
])
def test_a_spec_docker_cannot_take_is_invalid_data(overrides: dict[str, Any], words: str) -> None:
    with pytest.raises(InstructionError, match=words) as caught:
        params_of(spec(**overrides), None)
    assert caught.value.code is ErrorCode.INVALID_DATA


# state_summary


def inspect_running() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / "inspect_running.json").read_text())
    return data


ANONYMOUS = "4c2ff3daa25f697dd0d3820590a3aa489c1ce5309ed952ce91d4b093949411ae"


def test_state_summary_of_a_real_running_container() -> None:
    assert state_summary(inspect_running()).dump() == {
        "uuid": "c0ffee00-0000-4000-8000-000000000001",
        "dockerId": "fed5c6a443453b000a2a321b9d824933e1feab54453cc6ca327a3d01fca016e9",
        "name": "corral-capture",
        "image": IMAGE,
        "status": "running",
        "exitCode": 0,
        "ipAddress": "172.17.0.2",
        "ports": [
            {"hostIp": "0.0.0.0", "hostPort": 32768, "containerPort": 80, "protocol": "tcp"},
            {"hostIp": "::", "hostPort": 32768, "containerPort": 80, "protocol": "tcp"},
            {"hostIp": "127.0.0.1", "hostPort": 18081, "containerPort": 81, "protocol": "tcp"},
        ],
        "startedAt": "2026-11-27T12:31:19.501952818Z",
        "finishedAt": None,
        "labels": {MANAGED_LABEL: "true", UUID_LABEL: "c0ffee00-0000-4000-8000-000000000001",
                   "tier": "web"},
        "mounts": [{"type": "volume", "name": ANONYMOUS, "source":
                    f"/var/lib/docker/volumes/{ANONYMOUS}/_data", "destination": "/data",
                    "driver": "local", "mode": "", "anonymous": True}],
    }


def test_state_summary_tells_named_and_anonymous_volumes_and_binds_apart() -> None:
    inspect = inspect_running()
    inspect["Mounts"] = [
        {"Type": "volume", "Name": "data", "Source": "/var/lib/docker/volumes/data/_data",
         "Destination": "/data", "Driver": "local", "Mode": "z", "RW": True},
        {"Type": "volume", "Name": "9" * 64, "Source": "/var/lib/docker/volumes/x/_data",
         "Destination": "/cache", "Driver": "local", "Mode": "", "RW": True},
        {"Type": "bind", "Source": "/srv", "Destination": "/srv", "Mode": "ro", "RW": False},
    ]
    mounts = state_summary(inspect).dump()["mounts"]
    assert [(m["type"], m["name"], m["destination"], m["anonymous"]) for m in mounts] == [
        ("volume", "data", "/data", False), ("volume", "9" * 64, "/cache", True),
        ("bind", None, "/srv", False)]


def test_state_summary_of_a_stopped_container_on_a_user_network() -> None:
    inspect = inspect_running()
    inspect["State"].update(Status="exited", Running=False, ExitCode=137,
                            FinishedAt="2026-11-27T12:31:21.041673227Z")
    inspect["NetworkSettings"].update(IPAddress="", Ports={"80/tcp": None})
    inspect["NetworkSettings"]["Networks"] = {"front": {"IPAddress": "10.1.0.4"}}
    inspect["Config"]["Labels"] = None
    summary = state_summary(inspect).dump()
    assert (summary["status"], summary["exitCode"]) == ("exited", 137)
    assert summary["ipAddress"] == "10.1.0.4"
    assert summary["ports"] == []
    assert summary["finishedAt"] == "2026-11-27T12:31:21.041673227Z"
    assert (summary["uuid"], summary["labels"]) == (None, {})


def test_state_summary_reports_the_managed_networks_address_first() -> None:
    inspect = inspect_running()
    inspect["NetworkSettings"]["IPAddress"] = ""
    inspect["NetworkSettings"]["Networks"] = {"front": {"IPAddress": "10.1.0.4"},
                                              NETWORK: {"IPAddress": "10.42.3.9"}}
    assert state_summary(inspect).ip_address == "10.42.3.9"
    # Also when the container is on the default bridge too, which fills the top level.
    inspect["NetworkSettings"]["IPAddress"] = "172.17.0.2"
    assert state_summary(inspect).ip_address == "10.42.3.9"
    # A managed container not running has an entry without an address.
    inspect["NetworkSettings"].update(IPAddress="", Networks={NETWORK: {"IPAddress": ""}})
    assert state_summary(inspect).ip_address is None


# pull progress


def test_pull_progress_aggregates_layers_into_a_rising_percentage() -> None:
    reports: list[tuple[str, int | None]] = []
    progress = PullProgress(lambda phase, pct: reports.append((phase, pct)), interval=0.0)
    for event in FakeRuntime().pull_events:
        progress.feed(event)
    progress.finish()
    assert reports == [("downloading", 0), ("downloading", 25), ("extracting", 50),
                       ("complete", 100)]


def test_a_pull_of_layers_all_present_reports_only_its_completion() -> None:
    reports: list[tuple[str, int | None]] = []
    progress = PullProgress(lambda phase, pct: reports.append((phase, pct)), interval=0.0)
    progress.feed({"status": "Already exists", "progressDetail": {}, "id": "l1"})
    progress.finish()
    assert reports == [("complete", 100)]


def test_pull_progress_reports_at_most_every_interval_unless_the_phase_changes() -> None:
    now = [0.0]
    reports: list[tuple[str, int | None]] = []
    progress = PullProgress(lambda phase, pct: reports.append((phase, pct)), interval=0.5,
                            clock=lambda: now[0])
    progress.feed({"status": "Pulling fs layer", "progressDetail": {}, "id": "l1"})
    for current in range(1, 10):
        now[0] += 0.1
        progress.feed({"status": "Downloading", "id": "l1",
                       "progressDetail": {"current": current, "total": 10}})
    progress.feed({"status": "Download complete", "progressDetail": {}, "id": "l1"})
    assert reports == [("downloading", 0), ("downloading", 25), ("extracting", 50)]


def test_pull_progress_ignores_events_that_are_not_about_layers() -> None:
    reports: list[tuple[str, int | None]] = []
    progress = PullProgress(lambda phase, pct: reports.append((phase, pct)), interval=0.0)
    progress.feed({"status": "Pulling from library/busybox", "id": "latest"})
    progress.feed({"status": "Digest: sha256:abc"})
    progress.feed({"progressDetail": {}})
    assert reports == []


# instance.create


async def test_create_makes_one_created_container_with_the_uuid_label(agent: Agent) -> None:
    state = await agent.ok("instance.create", container=spec(name="web-1"), registryAuth=None)
    assert (state["uuid"], state["status"], state["name"]) == (UUID, "created", "web-1")
    assert state["labels"][MANAGED_LABEL] == "true"
    assert list(agent.runtime.containers) == [state["dockerId"]]
    assert "pull" not in agent.runtime.calls


async def test_create_twice_reuses_the_first_container(agent: Agent) -> None:
    first = await agent.ok("instance.create", container=spec())
    second = await agent.ok("instance.create", container=spec())
    assert first == second
    assert len(agent.runtime.containers) == 1
    assert agent.runtime.calls.count("create_container") == 1


async def test_a_create_resent_while_the_first_runs_makes_no_second_container(
        agent: Agent) -> None:
    agent.runtime.images.clear()
    agent.runtime.pullable.add(IMAGE)
    replies = await asyncio.gather(*(agent.call("instance.create", container=spec())
                                     for _ in range(3)))
    assert [r.error for r, _ in replies] == [None, None, None]
    assert len({r.data["dockerId"] for r, _ in replies}) == 1
    assert len(agent.runtime.containers) == 1
    assert agent.runtime.calls.count("pull") == 1


async def test_create_pulls_a_missing_image_with_progress_and_the_registry_auth(
        agent: Agent) -> None:
    image = "localhost:5000/team/app:1"
    agent.runtime.pullable.add(image)
    auth = {"username": "bob", "password": "s3cret", "serveraddress": "localhost:5000"}
    reply, outbox = await agent.call("instance.create", container=spec(image=image),
                                     registryAuth=auth)
    assert reply.error is None
    assert ("pull", (image, auth)) in agent.runtime.call_args
    assert [(p.message, p.progress) for p in outbox.progress()] == [
        (f"pulling {image}", 0),
        (f"pulling {image}: 0%", 0),
        (f"pulling {image}: 25%", 22),
        (f"pulling {image}: 50%", 45),
        (f"pulling {image}: 100%", 90),
        (f"creating container from {image}", 90),
    ]
    assert outbox.sent[-1] is reply  # every progress message before the reply


async def test_create_with_an_image_that_cannot_be_pulled_fails_with_dockers_words(
        agent: Agent) -> None:
    error = await agent.error("instance.create", container=spec(image="nobody/nothing:1"))
    assert error.code is ErrorCode.RUNTIME_ERROR
    assert "pull access denied for nobody/nothing" in error.message
    assert agent.runtime.containers == {}


async def test_create_with_bad_registry_auth_is_invalid_data(agent: Agent) -> None:
    agent.runtime.images.clear()
    error = await agent.error("instance.create", container=spec(), registryAuth="bob:pw")
    assert error.code is ErrorCode.INVALID_DATA


async def test_create_without_a_spec_is_invalid_data(agent: Agent) -> None:
    assert (await agent.error("instance.create")).code is ErrorCode.INVALID_DATA


async def test_create_with_a_name_taken_by_another_container_is_a_conflict(agent: Agent) -> None:
    agent.runtime.add_container(None, name="web-1")
    error = await agent.error("instance.create", container=spec(name="web-1"))
    assert error.code is ErrorCode.CONFLICT


# instance.start, stop, restart


async def test_start_runs_the_container_and_a_second_start_does_nothing(agent: Agent) -> None:
    docker_id = agent.runtime.add_container(UUID)
    state = await agent.ok("instance.start", uuid=UUID)
    assert (state["status"], state["dockerId"]) == ("running", docker_id)
    assert state["ipAddress"] and state["startedAt"]
    again = await agent.ok("instance.start", uuid=UUID)
    assert again["status"] == "running"
    assert agent.runtime.calls.count("start") == 1


async def test_start_of_a_container_that_exits_at_once_still_answers_its_state(
        agent: Agent) -> None:
    agent.runtime.add_container(UUID)
    agent.runtime.exit_on_start.add(UUID)
    state = await agent.ok("instance.start", uuid=UUID)
    assert (state["status"], state["exitCode"]) == ("exited", 1)


async def test_start_of_a_paused_container_unpauses_it(agent: Agent) -> None:
    agent.runtime.add_container(UUID, "paused")
    assert (await agent.ok("instance.start", uuid=UUID))["status"] == "running"
    assert "unpause" in agent.runtime.calls and "start" not in agent.runtime.calls


@pytest.mark.parametrize("name", ["instance.start", "instance.stop", "instance.restart",
                                  "instance.inspect"])
async def test_a_missing_container_is_not_found(agent: Agent, name: str) -> None:
    agent.runtime.add_container("someone-else", "running")
    error = await agent.error(name, uuid=UUID)
    assert error == protocol.ReplyError(ErrorCode.NOT_FOUND,
                                        f"container {UUID} does not exist on this host")


@pytest.mark.parametrize("name", ["instance.start", "instance.stop", "instance.remove"])
async def test_an_instruction_without_uuid_is_invalid_data(agent: Agent, name: str) -> None:
    assert (await agent.error(name)).code is ErrorCode.INVALID_DATA


async def test_stop_stops_with_the_timeout_and_a_second_stop_does_nothing(agent: Agent) -> None:
    docker_id = agent.runtime.add_container(UUID, "running")
    state = await agent.ok("instance.stop", uuid=UUID, timeout=3)
    assert (state["status"], state["ports"], state["ipAddress"]) == ("exited", [], None)
    assert ("stop", (docker_id, 3.0)) in agent.runtime.call_args
    assert (await agent.ok("instance.stop", uuid=UUID))["status"] == "exited"
    assert agent.runtime.calls.count("stop") == 1


async def test_stop_without_a_timeout_waits_ten_seconds(agent: Agent) -> None:
    docker_id = agent.runtime.add_container(UUID, "running")
    await agent.ok("instance.stop", uuid=UUID)
    assert ("stop", (docker_id, 10)) in agent.runtime.call_args


async def test_stop_with_a_bad_timeout_is_invalid_data(agent: Agent) -> None:
    agent.runtime.add_container(UUID, "running")
    assert (await agent.error("instance.stop", uuid=UUID, timeout="soon")).code \
        is ErrorCode.INVALID_DATA


async def test_stop_of_a_never_started_container_leaves_it_created(agent: Agent) -> None:
    agent.runtime.add_container(UUID)
    assert (await agent.ok("instance.stop", uuid=UUID))["status"] == "created"
    assert "stop" not in agent.runtime.calls


async def test_restart_restarts_a_running_or_stopped_container(agent: Agent) -> None:
    docker_id = agent.runtime.add_container(UUID, "exited")
    assert (await agent.ok("instance.restart", uuid=UUID, timeout=2))["status"] == "running"
    assert ("restart", (docker_id, 2.0)) in agent.runtime.call_args


# instance.remove, inspect


async def test_remove_removes_a_running_container_and_answers_empty(agent: Agent) -> None:
    docker_id = agent.runtime.add_container(UUID, "running")
    assert await agent.ok("instance.remove", uuid=UUID, removeVolumes=True) == {}
    assert agent.runtime.containers == {}
    assert ("remove_container", (docker_id, True, True)) in agent.runtime.call_args


async def test_remove_keeps_anonymous_volumes_unless_asked(agent: Agent) -> None:
    docker_id = agent.runtime.add_container(UUID, "exited")
    assert await agent.ok("instance.remove", uuid=UUID) == {}
    assert ("remove_container", (docker_id, False, True)) in agent.runtime.call_args


async def test_remove_of_a_missing_container_answers_empty(agent: Agent) -> None:
    assert await agent.ok("instance.remove", uuid=UUID) == {}
    assert "remove_container" not in agent.runtime.calls


async def test_remove_of_a_container_removed_meanwhile_answers_empty(agent: Agent) -> None:
    agent.runtime.add_container(UUID, "running")
    agent.runtime.fail_once["remove_container"] = InstructionError("No such container",
                                                                   ErrorCode.NOT_FOUND)
    agent.runtime.containers.clear()
    assert await agent.ok("instance.remove", uuid=UUID) == {}


async def test_inspect_answers_the_state(agent: Agent) -> None:
    docker_id = agent.runtime.add_container(UUID, "running")
    state = await agent.ok("instance.inspect", uuid=UUID)
    assert (state["dockerId"], state["status"], state["uuid"]) == (docker_id, "running", UUID)


async def test_an_unreachable_engine_is_runtime_unavailable(agent: Agent) -> None:
    agent.runtime.error = RuntimeUnavailable("Docker engine at unix:///x is not reachable.")
    error = await agent.error("instance.start", uuid=UUID)
    assert error.code is ErrorCode.RUNTIME_UNAVAILABLE


# events and inventory


def engine_event(action: str, docker_id: str, **attributes: str) -> dict[str, Any]:
    """The shape of a decoded Docker 20.10 container event."""
    return {"status": action, "id": docker_id, "from": IMAGE, "Type": "container",
            "Action": action, "Actor": {"ID": docker_id, "Attributes": {
                "image": IMAGE, "name": "web-1", **attributes}},
            "scope": "local", "time": 1795782669, "timeNano": 1795782669248303156}


class Watch:
    """A running watcher whose messages arrive in a queue."""

    def __init__(self, runtime: FakeRuntime, retry_delay: float = 0.01) -> None:
        self.runtime = runtime
        self.messages: asyncio.Queue[protocol.ContainerEvent] = asyncio.Queue()
        self.task = asyncio.create_task(events.watch_container_events(
            runtime, self._send, since=100.0, retry_delay=retry_delay))

    async def _send(self, message: protocol.ContainerEvent) -> None:
        await self.messages.put(message)

    async def next(self) -> protocol.ContainerEvent:
        return await asyncio.wait_for(self.messages.get(), WAIT)

    async def streams_opened(self, count: int) -> None:
        # The fake opens streams in a worker thread: poll rather than wait on an asyncio.Event.
        async with asyncio.timeout(WAIT):
            while True:
                if len(self.runtime.streams) >= count:
                    return
                await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(self.task, WAIT)


async def test_events_carry_the_container_state_after_the_event() -> None:
    runtime = FakeRuntime()
    docker_id = runtime.add_container(UUID, "exited")
    watch = Watch(runtime)
    await watch.streams_opened(1)
    runtime.emit(engine_event("exec_start: sh", docker_id))  # not forwarded
    runtime.emit(engine_event("die", docker_id, exitCode="0"))
    message = await watch.next()
    assert (message.event, message.time) == ("die", 1795782669.248303156)
    assert message.container == state_summary(runtime.containers[docker_id]).dump()
    assert runtime.call_args[-2] == ("events", (100.0,))
    await watch.stop()
    assert runtime.streams[0].closed  # cancelling closed the stream, ending the read


async def test_a_destroy_event_says_removed_with_the_uuid_from_the_labels() -> None:
    runtime = FakeRuntime()
    watch = Watch(runtime)
    await watch.streams_opened(1)
    runtime.emit(engine_event("destroy", "4f2a", **{UUID_LABEL: UUID}))
    message = await watch.next()
    assert (message.event, message.container) == (
        "destroy", {"uuid": UUID, "dockerId": "4f2a", "status": "removed"})
    await watch.stop()


async def test_an_event_about_a_container_gone_meanwhile_says_what_the_event_says() -> None:
    runtime = FakeRuntime()
    watch = Watch(runtime)
    await watch.streams_opened(1)
    runtime.emit(engine_event("die", "4f2a", exitCode="137", **{UUID_LABEL: UUID}))
    message = await watch.next()
    assert message.container == {"uuid": UUID, "dockerId": "4f2a", "status": "exited",
                                 "name": "web-1", "image": IMAGE, "exitCode": 137}
    await watch.stop()


async def test_the_watcher_reopens_a_failed_stream_from_the_last_event() -> None:
    runtime = FakeRuntime()
    docker_id = runtime.add_container(UUID, "running")
    watch = Watch(runtime)
    await watch.streams_opened(1)
    runtime.emit(engine_event("start", docker_id))
    await watch.next()
    runtime.emit(RuntimeUnavailable("Docker engine at unix:///x is not reachable."))
    await watch.streams_opened(2)
    assert runtime.streams[0].closed
    assert runtime.call_args[-1] == ("events", (1795782669.248303156,))
    runtime.emit(engine_event("kill", docker_id, signal="9"))
    assert (await watch.next()).event == "kill"
    await watch.stop()


async def test_the_watcher_waits_for_an_engine_that_is_down() -> None:
    runtime = FakeRuntime()
    runtime.fail_once["events"] = RuntimeUnavailable("Docker engine is not reachable.")
    watch = Watch(runtime)
    await watch.streams_opened(1)
    assert runtime.calls.count("events") == 2
    await watch.stop()


async def test_inventory_lists_every_container_managed_or_not() -> None:
    runtime = FakeRuntime()
    ours = runtime.add_container(UUID, "running")
    theirs = runtime.add_container(None, "exited")
    message = await events.inventory(runtime)
    assert [(c["dockerId"], c["uuid"], c["status"]) for c in message.containers] == [
        (ours, UUID, "running"), (theirs, None, "exited")]
    assert protocol.parse(protocol.dump(message)) == message


def test_every_instance_instruction_is_in_the_handler_table() -> None:
    assert {name for name in HANDLERS if name.startswith("instance.")} == {
        "instance.create", "instance.start", "instance.stop", "instance.restart",
        "instance.remove", "instance.inspect", "instance.logs", "instance.exec",
        "instance.proxy", "instance.stats"}


def test_the_fake_keeps_inspect_shapes_like_the_real_engine() -> None:
    runtime = FakeRuntime()
    docker_id = runtime.add_container(UUID, "running")
    real, fake = inspect_running(), copy.deepcopy(runtime.containers[docker_id])
    for section in ("State", "Config", "NetworkSettings"):
        assert set(fake[section]) <= set(real[section]), section


def test_the_handler_table_and_the_payload_table_name_the_same_instructions() -> None:
    assert set(HANDLERS) == set(INSTRUCTIONS)
    assert {name for name, i in INSTRUCTIONS.items() if i.streaming} == STREAMING


def test_the_state_of_the_recorded_inspect_is_the_golden_container_state() -> None:
    """Docker's recorded inspect answer becomes, key for key, the state the server reads."""
    golden = json.loads((DATA.parent / "instructions" / "container_state.json").read_text())
    assert state_summary(inspect_running()).dump() == golden
    assert ContainerState.parse(golden) == state_summary(inspect_running())


def test_a_status_docker_adds_later_reads_as_unknown() -> None:
    inspect = inspect_running()
    inspect["State"]["Status"] = "hibernating"
    assert state_summary(inspect).status is None


@pytest.mark.parametrize("name", ["instance.create", "instance.start", "instance.stop",
                                  "instance.restart", "instance.inspect"])
async def test_every_container_reply_parses_as_the_servers_state(agent: Agent,
                                                                  name: str) -> None:
    agent.runtime.add_container(UUID, "running")
    data = await agent.ok(name, **({"container": spec()} if name == "instance.create"
                                   else {"uuid": UUID}))
    assert isinstance(parse_reply(name, data), ContainerState)
