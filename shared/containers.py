"""Corral's container contract (docs/protocol.md, "Containers") as typed values. Pure.

* :class:`ContainerSpec` is what the server asks for (``data.container`` of
  ``instance.create``): built by ``server.resources.container_spec``, turned into Docker's terms
  by ``agent.containers.create_params``.
* :class:`ContainerState` is what a host reports about one container, in replies, events and the
  inventory; ``agent.containers.state_summary`` makes it from ``docker inspect``.
* :class:`ContainerSighting` is what an engine event alone says about a container the agent
  could no longer inspect (destroyed, or gone before it looked).

Each has ``parse`` (from the JSON object; refusing with a sentence naming the field) and
``dump`` (to the JSON object). The JSON is the wire format of protocol 1, key for key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from shared.fields import Fields, JsonObject, Refuse, invalid_data, protocol_error


class ContainerStatus(StrEnum):
    """Docker's container statuses, and ``removed`` for a container that is gone."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    RESTARTING = "restarting"
    REMOVING = "removing"
    EXITED = "exited"
    DEAD = "dead"
    REMOVED = "removed"


RUNNING_STATUSES = frozenset({ContainerStatus.RUNNING, ContainerStatus.PAUSED,
                              ContainerStatus.RESTARTING})
"""Statuses in which Docker says the container runs (``State.Running``)."""


def _status(f: Fields, key: str = "status") -> ContainerStatus | None:
    value = f.opt_text(key)
    if value is None:
        return None
    try:
        return ContainerStatus(value)
    except ValueError:
        raise f.refuse(f"{f.where}.{key} must be one of "
                       f"{', '.join(s.value for s in ContainerStatus)}") from None


@dataclass(frozen=True)
class PortBinding:
    """A published port: asked for in a spec (``host_port`` None = any), in effect in a state."""

    container_port: int
    protocol: str = "tcp"
    host_ip: str | None = None
    host_port: int | None = None

    @classmethod
    def read(cls, f: Fields) -> PortBinding:
        return cls(container_port=f.integer("containerPort"),
                   protocol=f.opt_text("protocol") or "tcp",
                   host_ip=f.opt_text("hostIp"), host_port=f.opt_integer("hostPort"))

    def dump(self) -> JsonObject:
        return {"hostIp": self.host_ip, "hostPort": self.host_port,
                "containerPort": self.container_port, "protocol": self.protocol}


@dataclass(frozen=True)
class ExposedPort:
    container_port: int
    protocol: str = "tcp"

    @classmethod
    def read(cls, f: Fields) -> ExposedPort:
        return cls(f.integer("containerPort"), f.opt_text("protocol") or "tcp")

    def dump(self) -> JsonObject:
        return {"containerPort": self.container_port, "protocol": self.protocol}


@dataclass(frozen=True)
class Bind:
    """A host path mounted into the container."""

    source: str
    destination: str
    mode: str | None = None

    @classmethod
    def read(cls, f: Fields) -> Bind:
        return cls(f.text("source"), f.text("destination"), f.opt_text("mode"))

    def dump(self) -> JsonObject:
        return {"source": self.source, "destination": self.destination, "mode": self.mode}


@dataclass(frozen=True)
class VolumeMount:
    """A volume mounted into the container; ``name`` None is an anonymous volume."""

    destination: str
    name: str | None = None
    mode: str | None = None
    driver: str | None = None

    @classmethod
    def read(cls, f: Fields) -> VolumeMount:
        return cls(destination=f.text("destination"), name=f.opt_text("name"),
                   mode=f.opt_text("mode"), driver=f.opt_text("driver"))

    def dump(self) -> JsonObject:
        return {"name": self.name, "destination": self.destination, "mode": self.mode,
                "driver": self.driver}


@dataclass(frozen=True)
class RestartPolicy:
    name: str
    maximum_retry_count: int | None = None

    @classmethod
    def read(cls, f: Fields) -> RestartPolicy:
        return cls(f.text("name"), f.opt_integer("maximumRetryCount"))

    def dump(self) -> JsonObject:
        return {"name": self.name, "maximumRetryCount": self.maximum_retry_count}


@dataclass(frozen=True)
class Device:
    path_on_host: str
    path_in_container: str | None = None
    permissions: str | None = None

    @classmethod
    def read(cls, f: Fields) -> Device:
        return cls(f.text("pathOnHost"), f.opt_text("pathInContainer"), f.opt_text("permissions"))

    def dump(self) -> JsonObject:
        return {"pathOnHost": self.path_on_host, "pathInContainer": self.path_in_container,
                "permissions": self.permissions}


@dataclass(frozen=True)
class LogConfig:
    driver: str
    config: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, f: Fields) -> LogConfig:
        return cls(f.text("driver"), f.text_map("config"))

    def dump(self) -> JsonObject:
        return {"driver": self.driver, "config": dict(self.config)}


@dataclass(frozen=True)
class Ulimit:
    name: str
    soft: int
    hard: int

    @classmethod
    def read(cls, f: Fields) -> Ulimit:
        return cls(f.text("name"), f.integer("soft"), f.integer("hard"))

    def dump(self) -> JsonObject:
        return {"name": self.name, "soft": self.soft, "hard": self.hard}


@dataclass(frozen=True)
class BlkioDeviceOption:
    """Block I/O limits on one host device: a weight and read/write rates (bytes or
    operations per second); unset ones are null."""

    path: str
    weight: int | None = None
    read_bps: int | None = None
    write_bps: int | None = None
    read_iops: int | None = None
    write_iops: int | None = None

    @classmethod
    def read(cls, f: Fields) -> BlkioDeviceOption:
        return cls(f.text("path"), f.opt_integer("weight"), f.opt_integer("readBps"),
                   f.opt_integer("writeBps"), f.opt_integer("readIops"),
                   f.opt_integer("writeIops"))

    def dump(self) -> JsonObject:
        return {"path": self.path, "weight": self.weight, "readBps": self.read_bps,
                "writeBps": self.write_bps, "readIops": self.read_iops,
                "writeIops": self.write_iops}


@dataclass(frozen=True)
class ContainerSpec:
    """The container the server asks a host to make, normalised: every key is sent, unset
    ones as null, [] or {}. Container references (``volumes_from``, ``network_mode``
    ``container:<x>``) are docker ids by the time the spec reaches an agent."""

    uuid: str
    image: str
    name: str | None = None
    command: tuple[str, ...] | None = None
    entry_point: tuple[str, ...] | None = None
    environment: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    ports: tuple[PortBinding, ...] = ()
    expose: tuple[ExposedPort, ...] = ()
    binds: tuple[Bind, ...] = ()
    volumes: tuple[VolumeMount, ...] = ()
    volumes_from: tuple[str, ...] = ()
    # ``managed``: the host's overlay network, at ``ip_address`` (leased by the server).
    network_mode: str | None = None
    ip_address: str | None = None
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    # Docker takes ``host:ip`` strings or a map; the server sends strings.
    extra_hosts: tuple[str, ...] | dict[str, str] = ()
    restart_policy: RestartPolicy | None = None
    cpu_shares: int | None = None
    memory: int | None = None
    memory_swap: int | None = None
    cpu_set: str | None = None
    user: str | None = None
    working_dir: str | None = None
    hostname: str | None = None
    domain_name: str | None = None
    pid_mode: str | None = None
    ipc_mode: str | None = None
    privileged: bool = False
    tty: bool = False
    stdin_open: bool = False
    read_only: bool = False
    devices: tuple[Device, ...] = ()
    log_config: LogConfig | None = None
    ulimits: tuple[Ulimit, ...] = ()
    publish_all_ports: bool = False
    blkio_weight: int | None = None
    blkio_device_options: tuple[BlkioDeviceOption, ...] = ()

    @classmethod
    def parse(cls, obj: object, where: str = "container",
              refuse: Refuse = invalid_data) -> ContainerSpec:
        """The spec in ``obj``; by default a bad one is ``invalidData`` (the agent's view)."""
        return cls.read(Fields(obj, where, refuse))

    @classmethod
    def read(cls, f: Fields) -> ContainerSpec:
        extra_hosts: tuple[str, ...] | dict[str, str] = (
            f.text_map("extraHosts") if isinstance(f.obj.get("extraHosts"), dict)
            else f.texts("extraHosts"))
        return cls(
            uuid=f.text("uuid"), image=f.text("image"), name=f.opt_text("name"),
            command=f.opt_texts("command"), entry_point=f.opt_texts("entryPoint"),
            environment=f.text_map("environment"), labels=f.text_map("labels"),
            ports=f.nested_list("ports", PortBinding.read),
            expose=f.nested_list("expose", ExposedPort.read),
            binds=f.nested_list("binds", Bind.read),
            volumes=f.nested_list("volumes", VolumeMount.read),
            volumes_from=f.texts("volumesFrom"), network_mode=f.opt_text("networkMode"),
            ip_address=f.opt_text("ipAddress"), dns=f.texts("dns"), dns_search=f.texts("dnsSearch"),
            cap_add=f.texts("capAdd"), cap_drop=f.texts("capDrop"),
            extra_hosts=extra_hosts,
            restart_policy=f.opt_nested("restartPolicy", RestartPolicy.read),
            cpu_shares=f.opt_integer("cpuShares"), memory=f.opt_integer("memory"),
            memory_swap=f.opt_integer("memorySwap"), cpu_set=f.opt_text("cpuSet"),
            user=f.opt_text("user"), working_dir=f.opt_text("workingDir"),
            hostname=f.opt_text("hostname"), domain_name=f.opt_text("domainName"),
            pid_mode=f.opt_text("pidMode"), ipc_mode=f.opt_text("ipcMode"),
            privileged=f.flag("privileged"), tty=f.flag("tty"),
            stdin_open=f.flag("stdinOpen"), read_only=f.flag("readOnly"),
            devices=f.nested_list("devices", Device.read),
            log_config=f.opt_nested("logConfig", LogConfig.read),
            ulimits=f.nested_list("ulimits", Ulimit.read),
            publish_all_ports=f.flag("publishAllPorts"),
            blkio_weight=f.opt_integer("blkioWeight"),
            blkio_device_options=f.nested_list("blkioDeviceOptions", BlkioDeviceOption.read),
        )

    def dump(self) -> JsonObject:
        return {
            "uuid": self.uuid, "name": self.name, "image": self.image,
            "command": _list_or_none(self.command),
            "entryPoint": _list_or_none(self.entry_point),
            "environment": dict(self.environment), "labels": dict(self.labels),
            "ports": [p.dump() for p in self.ports], "expose": [p.dump() for p in self.expose],
            "binds": [b.dump() for b in self.binds], "volumes": [v.dump() for v in self.volumes],
            "volumesFrom": list(self.volumes_from), "networkMode": self.network_mode,
            "ipAddress": self.ip_address,
            "dns": list(self.dns), "dnsSearch": list(self.dns_search),
            "capAdd": list(self.cap_add), "capDrop": list(self.cap_drop),
            "extraHosts": (dict(self.extra_hosts) if isinstance(self.extra_hosts, dict)
                           else list(self.extra_hosts)),
            "restartPolicy": None if self.restart_policy is None else self.restart_policy.dump(),
            "cpuShares": self.cpu_shares, "memory": self.memory, "memorySwap": self.memory_swap,
            "cpuSet": self.cpu_set, "user": self.user, "workingDir": self.working_dir,
            "hostname": self.hostname, "domainName": self.domain_name,
            "pidMode": self.pid_mode, "ipcMode": self.ipc_mode,
            "privileged": self.privileged, "tty": self.tty, "stdinOpen": self.stdin_open,
            "readOnly": self.read_only, "devices": [d.dump() for d in self.devices],
            "logConfig": None if self.log_config is None else self.log_config.dump(),
            "ulimits": [u.dump() for u in self.ulimits],
            "publishAllPorts": self.publish_all_ports, "blkioWeight": self.blkio_weight,
            "blkioDeviceOptions": [o.dump() for o in self.blkio_device_options],
        }


@dataclass(frozen=True)
class Mount:
    """A volume or bind in effect, as Docker reports it; ``anonymous`` for a volume Docker
    named by a 64-hex id."""

    type: str | None
    destination: str | None
    name: str | None = None
    source: str | None = None
    driver: str | None = None
    mode: str | None = None
    anonymous: bool = False

    @classmethod
    def read(cls, f: Fields) -> Mount:
        return cls(type=f.opt_text("type"), destination=f.opt_text("destination"),
                   name=f.opt_text("name"), source=f.opt_text("source"),
                   driver=f.opt_text("driver"), mode=f.opt_text("mode"),
                   anonymous=f.flag("anonymous"))

    def dump(self) -> JsonObject:
        return {"type": self.type, "name": self.name, "source": self.source,
                "destination": self.destination, "driver": self.driver, "mode": self.mode,
                "anonymous": self.anonymous}


@dataclass(frozen=True)
class ContainerState:
    """A container as its host sees it. ``ports`` are the bindings in effect (none unless it
    runs); ``started_at``/``finished_at`` are Docker's timestamps, None for never.

    ``parse`` takes what any agent of protocol 1 sends, also the sightings of events
    (:class:`ContainerSighting`), whose missing keys read as unknown.
    """

    docker_id: str
    uuid: str | None = None
    name: str | None = None
    image: str | None = None
    status: ContainerStatus | None = None
    exit_code: int | None = None
    ip_address: str | None = None
    ports: tuple[PortBinding, ...] = ()
    started_at: str | None = None
    finished_at: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()

    @property
    def running(self) -> bool:
        return self.status in RUNNING_STATUSES

    @classmethod
    def parse(cls, obj: object, where: str = "the container state",
              refuse: Refuse = protocol_error) -> ContainerState:
        """The state in ``obj``; by default a bad one is a ProtocolError (the server's view)."""
        return cls.read(Fields(obj, where, refuse))

    @classmethod
    def read(cls, f: Fields) -> ContainerState:
        return cls(
            docker_id=f.text("dockerId"), uuid=f.opt_text("uuid"), name=f.opt_text("name"),
            image=f.opt_text("image"), status=_status(f), exit_code=f.opt_integer("exitCode"),
            ip_address=f.opt_text("ipAddress"), ports=f.nested_list("ports", PortBinding.read),
            started_at=f.opt_text("startedAt"), finished_at=f.opt_text("finishedAt"),
            labels=f.text_map("labels"), mounts=f.nested_list("mounts", Mount.read))

    def dump(self) -> JsonObject:
        return {
            "uuid": self.uuid, "dockerId": self.docker_id, "name": self.name,
            "image": self.image, "status": None if self.status is None else str(self.status),
            "exitCode": self.exit_code, "ipAddress": self.ip_address,
            "ports": [p.dump() for p in self.ports], "startedAt": self.started_at,
            "finishedAt": self.finished_at, "labels": dict(self.labels),
            "mounts": [m.dump() for m in self.mounts],
        }


@dataclass(frozen=True)
class ContainerSighting:
    """What an engine event says about a container that could not be inspected: its uuid
    label, the status the action implies (None when it implies none) and, unless it was
    destroyed, the name, image and (for ``die``) exit code the event carries. ``dump`` sends
    only what is known, as agents always have; the server reads it as a ContainerState."""

    docker_id: str
    uuid: str | None
    status: ContainerStatus | None
    name: str | None = None
    image: str | None = None
    exit_code: int | None = None
    destroyed: bool = False

    def dump(self) -> JsonObject:
        out: dict[str, Any] = {"uuid": self.uuid, "dockerId": self.docker_id,
                               "status": None if self.status is None else str(self.status)}
        if not self.destroyed:
            out.update(name=self.name, image=self.image)
        if self.exit_code is not None:
            out["exitCode"] = self.exit_code
        return out


ContainerReport = ContainerState | ContainerSighting
"""What an agent reports about a container in a ``containerEvent``."""


def _list_or_none(value: tuple[str, ...] | None) -> list[str] | None:
    return None if value is None else list(value)
