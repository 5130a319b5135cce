"""The payloads of the agent's instructions: what each ``request.data`` and ``reply.data``
holds (docs/protocol.md has the table). Pure.

Every payload is a frozen dataclass with ``parse`` and ``dump``. ``parse`` of a request refuses
with InstructionError ``invalidData`` (what the agent must answer) and ``parse`` of a reply with
ProtocolError (a broken agent, as the server sees it), each with a sentence naming the field.
:data:`INSTRUCTIONS` says which request and reply types belong to which instruction name; it
matches the agent's handler table (``agent.handlers.HANDLERS``).

The JSON is protocol 1's, key for key: an agent and a server of different releases agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, Self

from shared.containers import ContainerSpec, ContainerState
from shared.discovery import DnsApplied, DnsApply
from shared.fields import Fields, JsonObject, Refuse, invalid_data, protocol_error
from shared.health import HealthApplied, HealthApply
from shared.lb import LbApplied, LbApply
from shared.overlay import NetworkApplied, NetworkApply


class Payload(Protocol):
    """What every payload type offers: ``parse`` a JSON object (``where`` names it in a
    refusal, ``refuse`` makes the exception) and ``dump`` one."""

    @classmethod
    def parse(cls, obj: object, where: str = ..., refuse: Refuse = ...) -> Self: ...

    def dump(self) -> JsonObject: ...


class _Request:
    """Requests parse their ``data`` object; a bad one is ``invalidData``."""

    @classmethod
    def parse(cls, obj: object, where: str = "data", refuse: Refuse = invalid_data) -> Self:
        return cls.read(Fields(obj, where, refuse))

    @classmethod
    def read(cls, f: Fields) -> Self:
        raise NotImplementedError


class _Reply:
    """Replies parse their ``data`` object; a bad one is a ProtocolError."""

    @classmethod
    def parse(cls, obj: object, where: str = "reply data",
              refuse: Refuse = protocol_error) -> Self:
        return cls.read(Fields(obj, where, refuse))

    @classmethod
    def read(cls, f: Fields) -> Self:
        raise NotImplementedError


@dataclass(frozen=True)
class NoData(_Request, _Reply):
    """``{}``: the request of ``host.*`` and the reply of removals and of the streams but exec.
    Keys it does not know are ignored, as every parse here ignores them."""

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls()

    def dump(self) -> JsonObject:
        return {}


# --- requests -----------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class RegistryAuth:
    """Docker's auth config for a pull; never printed (the password is a secret)."""

    username: str | None
    password: str | None
    serveraddress: str | None

    @classmethod
    def read(cls, f: Fields) -> RegistryAuth:
        return cls(f.opt_text("username"), f.opt_text("password"), f.opt_text("serveraddress"))

    def dump(self) -> JsonObject:
        return {"username": self.username, "password": self.password,
                "serveraddress": self.serveraddress}

    def __repr__(self) -> str:
        return f"RegistryAuth(username={self.username!r}, password='***', " \
               f"serveraddress={self.serveraddress!r})"


@dataclass(frozen=True)
class CreateRequest(_Request):
    """``instance.create``: the spec, and the credentials for its image's registry."""

    container: ContainerSpec
    registry_auth: RegistryAuth | None = None

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(container=f.nested("container", ContainerSpec.read),
                   registry_auth=f.opt_nested("registryAuth", RegistryAuth.read))

    def dump(self) -> JsonObject:
        return {"container": self.container.dump(),
                "registryAuth": None if self.registry_auth is None else self.registry_auth.dump()}


@dataclass(frozen=True)
class ContainerRef(_Request):
    """``instance.start``, ``instance.inspect``, ``instance.stats``: which container."""

    uuid: str

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(f.text("uuid"))

    def dump(self) -> JsonObject:
        return {"uuid": self.uuid}


@dataclass(frozen=True)
class StopRequest(_Request):
    """``instance.stop`` and ``instance.restart``: SIGTERM, SIGKILL after ``timeout`` seconds
    (None: the agent's default, 10 s)."""

    uuid: str
    timeout: float | None = None

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(f.text("uuid"), f.opt_number("timeout", minimum=0))

    def dump(self) -> JsonObject:
        timeout = self.timeout  # whole seconds go as an integer, as they always have
        return {"uuid": self.uuid,
                "timeout": int(timeout) if timeout is not None and float(timeout).is_integer()
                else timeout}


@dataclass(frozen=True)
class RemoveRequest(_Request):
    """``instance.remove``; ``remove_volumes`` also removes its anonymous volumes."""

    uuid: str
    remove_volumes: bool = False

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(f.text("uuid"), f.flag("removeVolumes"))

    def dump(self) -> JsonObject:
        return {"uuid": self.uuid, "removeVolumes": self.remove_volumes}


@dataclass(frozen=True)
class VolumeRef(_Request):
    """``volume.remove``: the volume's name on the host."""

    name: str

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(f.text("name"))

    def dump(self) -> JsonObject:
        return {"name": self.name}


@dataclass(frozen=True)
class LogsRequest(_Request):
    """``instance.logs``: the last ``tail`` lines (None: all), then new ones while
    ``follow``."""

    uuid: str
    follow: bool = True
    tail: int | None = None
    timestamps: bool = False

    @classmethod
    def read(cls, f: Fields) -> Self:
        tail = f.opt_integer("tail")
        return cls(f.text("uuid"), f.flag("follow", True),
                   tail if tail is not None and tail >= 0 else None, f.flag("timestamps"))

    def dump(self) -> JsonObject:
        return {"uuid": self.uuid, "follow": self.follow, "tail": self.tail,
                "timestamps": self.timestamps}


@dataclass(frozen=True)
class ExecRequest(_Request):
    """``instance.exec``: a command (argv) to run in the container, attached."""

    uuid: str
    command: tuple[str, ...]
    tty: bool = True
    attach_stdin: bool = True

    @classmethod
    def read(cls, f: Fields) -> Self:
        command = f.texts("command")
        if not command:
            raise f.refuse(f"{f.where}.command must be a non-empty list of strings")
        return cls(f.text("uuid"), command, f.flag("tty", True), f.flag("attachStdin", True))

    def dump(self) -> JsonObject:
        return {"uuid": self.uuid, "command": list(self.command), "tty": self.tty,
                "attachStdin": self.attach_stdin}


@dataclass(frozen=True)
class ProxyRequest(_Request):
    """``instance.proxy``: a connection to one of the container's ports (``scheme`` https:
    TLS, unverified, as a container's own certificate rarely is), relayed as stream data
    both ways until either side closes."""

    uuid: str
    port: int
    scheme: str = "http"

    @classmethod
    def read(cls, f: Fields) -> Self:
        port = f.integer("port")
        if not 0 < port < 65536:
            raise f.refuse(f"{f.where}.port must be a port number, 1 to 65535")
        scheme = f.opt_text("scheme") or "http"
        if scheme not in ("http", "https"):
            raise f.refuse(f"{f.where}.scheme must be http or https")
        return cls(f.text("uuid"), port, scheme)

    def dump(self) -> JsonObject:
        return {"uuid": self.uuid, "port": self.port, "scheme": self.scheme}


# --- replies ------------------------------------------------------------------------------


STAT_KEYS = ("cpuPercent", "memoryUsage", "memoryLimit", "networkRxBytes", "networkTxBytes",
             "blockReadBytes", "blockWriteBytes")


@dataclass(frozen=True)
class StatsSample(_Reply):
    """``instance.stats``: one sample; CPU in % of one core, memory without page cache."""

    cpu_percent: float = 0.0
    memory_usage: int = 0
    memory_limit: int = 0
    network_rx_bytes: int = 0
    network_tx_bytes: int = 0
    block_read_bytes: int = 0
    block_write_bytes: int = 0

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(f.opt_number("cpuPercent") or 0.0,
                   *(f.opt_integer(key) or 0 for key in STAT_KEYS[1:]))

    def dump(self) -> JsonObject:
        return {"cpuPercent": self.cpu_percent, "memoryUsage": self.memory_usage,
                "memoryLimit": self.memory_limit, "networkRxBytes": self.network_rx_bytes,
                "networkTxBytes": self.network_tx_bytes,
                "blockReadBytes": self.block_read_bytes,
                "blockWriteBytes": self.block_write_bytes}


@dataclass(frozen=True)
class HostStats(_Reply):
    """``host.stats``: the samples of the running containers, summed (no memory limit)."""

    containers: int
    total: StatsSample

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(f.integer("containers"), StatsSample.read(f))

    def dump(self) -> JsonObject:
        totals = self.total.dump()
        del totals["memoryLimit"]
        return {"containers": self.containers, **totals}


@dataclass(frozen=True)
class EngineSummary:
    """What the container engine says about itself (``docker version`` and ``docker info``)."""

    version: str | None = None
    api_version: str | None = None
    containers: int | None = None
    containers_running: int | None = None
    images: int | None = None
    driver: str | None = None
    name: str | None = None

    @classmethod
    def read(cls, f: Fields) -> EngineSummary:
        return cls(f.opt_text("version"), f.opt_text("apiVersion"),
                   f.opt_integer("containers"), f.opt_integer("containersRunning"),
                   f.opt_integer("images"), f.opt_text("driver"), f.opt_text("name"))

    def dump(self) -> JsonObject:
        return {"version": self.version, "apiVersion": self.api_version,
                "containers": self.containers, "containersRunning": self.containers_running,
                "images": self.images, "driver": self.driver, "name": self.name}


@dataclass(frozen=True)
class HostInspection(_Reply):
    """``host.inspect``: fresh host facts (free-form, as in ``hello``), the engine, and how
    long it took."""

    facts: JsonObject
    docker: EngineSummary
    duration_ms: int | None = None

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(f.json("facts"), f.opt_nested("docker", EngineSummary.read) or EngineSummary(),
                   f.opt_integer("durationMs"))

    def dump(self) -> JsonObject:
        return {"facts": self.facts, "docker": self.docker.dump(),
                "durationMs": self.duration_ms}


@dataclass(frozen=True)
class ExecResult(_Reply):
    """``instance.exec``'s reply, when the command ended (None: Docker did not say)."""

    exit_code: int | None

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(f.opt_integer("exitCode"))

    def dump(self) -> JsonObject:
        return {"exitCode": self.exit_code}


# --- the table ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    """The payload types of one instruction."""

    request: type[Payload]
    reply: type[Payload]
    streaming: bool = False


INSTRUCTIONS: Mapping[str, Instruction] = {
    "host.inspect": Instruction(NoData, HostInspection),
    "host.stats": Instruction(NoData, HostStats),
    "host.dockersocket": Instruction(NoData, NoData, streaming=True),
    "instance.create": Instruction(CreateRequest, ContainerState),
    "instance.start": Instruction(ContainerRef, ContainerState),
    "instance.stop": Instruction(StopRequest, ContainerState),
    "instance.restart": Instruction(StopRequest, ContainerState),
    "instance.remove": Instruction(RemoveRequest, NoData),
    "instance.inspect": Instruction(ContainerRef, ContainerState),
    "instance.stats": Instruction(ContainerRef, StatsSample),
    "volume.remove": Instruction(VolumeRef, NoData),
    "instance.logs": Instruction(LogsRequest, NoData, streaming=True),
    "instance.exec": Instruction(ExecRequest, ExecResult, streaming=True),
    "instance.proxy": Instruction(ProxyRequest, NoData, streaming=True),
    "network.apply": Instruction(NetworkApply, NetworkApplied),
    "dns.apply": Instruction(DnsApply, DnsApplied),
    "health.apply": Instruction(HealthApply, HealthApplied),
    "lb.apply": Instruction(LbApply, LbApplied),
}


def parse_reply(name: str, data: Mapping[str, Any]) -> Payload | None:
    """The typed reply of instruction ``name``, or None for an instruction not in the table
    (ProtocolError when it is malformed)."""
    instruction = INSTRUCTIONS.get(name)
    if instruction is None:
        return None
    return instruction.reply.parse(data, f"the reply data of {name}", protocol_error)

