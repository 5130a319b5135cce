"""Translation between Corral's container contract (docs/protocol.md, "Containers") and the
shapes Docker uses. Pure: no docker import, no I/O.

* :func:`create_params` turns a container spec (``shared.containers.ContainerSpec``) into
  docker-py's low-level ``create_container`` keyword arguments, with the ``host_config`` as
  the keyword arguments of ``create_host_config`` (that call needs the engine's API version,
  so the runtime makes it). A container on the ``managed`` network joins the Docker network
  the overlay made (``agent.network.config.NETWORK``), at its fixed address if it has one.
* :func:`state_summary` turns an inspect answer into the contract's ``ContainerState``, and
  :func:`stats_summary` a ``docker stats`` sample into a ``StatsSample``: the runtime calls
  them, so Docker's dictionaries never leave ``agent.runtime``.
* :class:`PullProgress` turns the events of a streamed ``docker pull`` into an overall
  percentage, reported at a bounded rate.

A spec that cannot be turned into a container raises InstructionError with code INVALID_DATA
(the spec's types were checked by ``ContainerSpec.parse``).
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from agent.network.config import NETWORK
from shared.containers import ContainerSpec, ContainerState, ContainerStatus, Mount, PortBinding
from shared.errors import ErrorCode, InstructionError
from shared.instructions import StatsSample

__all__ = [
    "MANAGED_LABEL",
    "MANAGED_NETWORK_MODE",
    "UUID_LABEL",
    "PullProgress",
    "create_params",
    "state_summary",
    "stats_summary",
]

_ANONYMOUS = re.compile(r"[0-9a-f]{64}")
UUID_LABEL = "io.rancher.container.uuid"
MANAGED_LABEL = "io.corral.managed"
MANAGED_NETWORK_MODE = "managed"
"""The spec's ``networkMode`` for the host's overlay network (Docker network ``NETWORK``)."""
_NEVER = "0001-01-01T00:00:00Z"


def create_params(spec: ContainerSpec, host_ip: str | None) -> dict[str, Any]:
    """docker-py ``create_container`` kwargs for ``spec``; ``host_config`` holds the kwargs of
    ``create_host_config``.

    Published ports bind to the port's ``hostIp``, else ``host_ip`` (the agent's IP), else every
    interface; a null ``hostPort`` lets Docker pick one. Named volumes become binds
    (``name:/dest:mode``); anonymous ones only declare their destination (their mode is Docker's
    default, read-write). Like ``docker run``, host networking drops published ports.

    Network mode ``managed`` becomes the Docker network ``NETWORK`` (a user-defined bridge, so
    published ports work as on the default bridge), and ``networking_config`` (the JSON of
    docker-py's ``create_networking_config``, passed on unchanged) attaches the container at
    ``ip_address``; without one Docker picks an address of the network's subnet.

    A spec Docker cannot take (volumes of several drivers, a fixed address that is not IPv4 or
    not on the managed network) is InstructionError ``invalidData``.
    """
    labels = dict(spec.labels)
    labels.update({UUID_LABEL: spec.uuid, MANAGED_LABEL: "true"})
    environment = [f"{k}={v}" for k, v in spec.environment.items()]

    exposed: dict[str, dict[str, Any]] = {}
    port_bindings: dict[str, list[dict[str, str]]] = {}
    for port in spec.ports:
        key = f"{port.container_port}/{port.protocol}"
        exposed[key] = {}
        port_bindings.setdefault(key, []).append({
            "HostIp": port.host_ip or host_ip or "",
            "HostPort": "" if port.host_port is None else str(port.host_port),
        })
    for exposed_port in spec.expose:
        exposed[f"{exposed_port.container_port}/{exposed_port.protocol}"] = {}

    binds = [f"{b.source}:{b.destination}:{b.mode or 'rw'}" for b in spec.binds]
    anonymous: list[str] = []
    drivers: set[str] = set()
    for volume in spec.volumes:
        if volume.driver:
            drivers.add(volume.driver)
        if volume.name:
            binds.append(f"{volume.name}:{volume.destination}:{volume.mode or 'rw'}")
        else:
            anonymous.append(volume.destination)
    if len(drivers) > 1:
        raise InstructionError(
            f"container {spec.uuid} asks for volumes of several drivers "
            f"({', '.join(sorted(drivers))}); Docker allows one volume driver per container.",
            ErrorCode.INVALID_DATA)

    restart, log_config = spec.restart_policy, spec.log_config
    extra_hosts = (dict(spec.extra_hosts) if isinstance(spec.extra_hosts, dict)
                   else list(spec.extra_hosts))
    host_config: dict[str, Any] = {
        "binds": binds or None,
        "port_bindings": (port_bindings or None) if spec.network_mode != "host" else None,
        "volumes_from": list(spec.volumes_from) or None,
        "network_mode": NETWORK if spec.network_mode == MANAGED_NETWORK_MODE
        else spec.network_mode,
        "dns": list(spec.dns) or None,
        "dns_search": list(spec.dns_search) or None,
        "restart_policy": None if restart is None else {
            "Name": restart.name, "MaximumRetryCount": restart.maximum_retry_count or 0},
        "cpu_shares": spec.cpu_shares,
        "cpuset_cpus": spec.cpu_set,
        "mem_limit": spec.memory,
        "memswap_limit": spec.memory_swap,
        "privileged": spec.privileged,
        "cap_add": list(spec.cap_add) or None,
        "cap_drop": list(spec.cap_drop) or None,
        "devices": [f"{d.path_on_host}:{d.path_in_container or d.path_on_host}:"
                    f"{d.permissions or 'rwm'}" for d in spec.devices] or None,
        "extra_hosts": extra_hosts or None,
        "read_only": spec.read_only,
        "pid_mode": spec.pid_mode,
        "ipc_mode": spec.ipc_mode,
        "log_config": None if log_config is None else {
            "Type": log_config.driver, "Config": dict(log_config.config)},
        "ulimits": [{"Name": u.name, "Soft": u.soft, "Hard": u.hard}
                    for u in spec.ulimits] or None,
        "volume_driver": next(iter(drivers), None),
        "publish_all_ports": spec.publish_all_ports,
        "blkio_weight": spec.blkio_weight,
        **_blkio_devices(spec),
    }
    return {
        "image": spec.image,
        "command": None if spec.command is None else list(spec.command),
        "entrypoint": None if spec.entry_point is None else list(spec.entry_point),
        "environment": environment or None,
        "labels": labels,
        "ports": exposed or None,
        "volumes": anonymous or None,
        "name": spec.name,
        "hostname": spec.hostname,
        "domainname": spec.domain_name,
        "user": spec.user,
        "working_dir": spec.working_dir,
        "tty": spec.tty,
        "stdin_open": spec.stdin_open,
        "host_config": host_config,
        "networking_config": _networking_config(spec),
    }


def _networking_config(spec: ContainerSpec) -> dict[str, Any] | None:
    """The endpoint on the managed network at the spec's fixed address (None: nothing to ask)."""
    if spec.ip_address is None:
        return None
    if spec.network_mode != MANAGED_NETWORK_MODE:
        raise InstructionError(
            f"container {spec.uuid} asks for IP address {spec.ip_address} with network mode "
            f"{spec.network_mode or 'bridge'}; a fixed address is only possible on the "
            f"{MANAGED_NETWORK_MODE} network.", ErrorCode.INVALID_DATA)
    try:
        address = ipaddress.IPv4Address(spec.ip_address)
    except ValueError:
        raise InstructionError(
            f"container {spec.uuid} asks for IP address {spec.ip_address!r}, which is not an "
            "IPv4 address.", ErrorCode.INVALID_DATA) from None
    return {"EndpointsConfig": {NETWORK: {"IPAMConfig": {"IPv4Address": str(address)}}}}


def state_summary(inspect: Mapping[str, Any]) -> ContainerState:
    """The contract's container state from a ``docker inspect`` answer.

    ``ports`` are the bindings in effect (NetworkSettings.Ports), one entry per host address as
    Docker reports them (an IPv4 and an IPv6 entry for a port published on every interface);
    a container that is not running has none. A status Docker adds after this was written
    reads as unknown (None) rather than failing the whole report.
    """
    state = inspect.get("State") or {}
    config = inspect.get("Config") or {}
    network = inspect.get("NetworkSettings") or {}
    labels = {str(k): str(v) for k, v in (config.get("Labels") or {}).items()}
    uuid = labels.get(UUID_LABEL)
    exit_code = state.get("ExitCode")
    image = config.get("Image")
    return ContainerState(
        uuid=uuid,
        docker_id=str(inspect.get("Id")),
        name=str(inspect.get("Name") or "").lstrip("/") or None,
        image=None if image is None else str(image),
        status=_known_status(state.get("Status")),
        exit_code=exit_code if isinstance(exit_code, int) else None,
        ip_address=_ip_address(network),
        ports=_ports(network.get("Ports") or {}),
        started_at=_timestamp(state.get("StartedAt")),
        finished_at=_timestamp(state.get("FinishedAt")),
        labels=labels,
        mounts=_mounts(inspect.get("Mounts") or []),
    )


def _known_status(value: Any) -> ContainerStatus | None:
    try:
        return ContainerStatus(value)
    except ValueError:
        return None


def _mounts(mounts: list[Mapping[str, Any]]) -> tuple[Mount, ...]:
    """Volumes and binds as the server records them; Docker names anonymous volumes by a
    64-hex id."""
    return tuple(Mount(
        type=_opt_str(mount.get("Type")), name=_opt_str(mount.get("Name")),
        source=_opt_str(mount.get("Source")), destination=_opt_str(mount.get("Destination")),
        driver=_opt_str(mount.get("Driver")), mode=_opt_str(mount.get("Mode")),
        anonymous=bool(mount.get("Name") and _ANONYMOUS.fullmatch(str(mount["Name"]))),
    ) for mount in mounts)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def stats_summary(raw: Mapping[str, Any]) -> StatsSample:
    """CPU, memory, network and block I/O from one ``docker stats`` sample, as the docker CLI
    computes them (CPU in % of one core; memory without the page cache)."""
    cpu, pre = raw.get("cpu_stats") or {}, raw.get("precpu_stats") or {}
    cpu_delta = _number(cpu, "cpu_usage", "total_usage") - _number(pre, "cpu_usage",
                                                                     "total_usage")
    system_delta = _number(cpu, "system_cpu_usage") - _number(pre, "system_cpu_usage")
    cores = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage")
                                          or []) or 1
    percent = cpu_delta / system_delta * cores * 100 if system_delta > 0 and cpu_delta > 0 \
        else 0.0
    memory = raw.get("memory_stats") or {}
    cache = _number(memory, "stats", "cache") or _number(memory, "stats", "inactive_file")
    networks = (raw.get("networks") or {}).values()
    blkio = (raw.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []
    return StatsSample(
        cpu_percent=round(percent, 2),
        memory_usage=max(int(_number(memory, "usage") - cache), 0),
        memory_limit=int(_number(memory, "limit")),
        network_rx_bytes=int(sum(n.get("rx_bytes", 0) for n in networks)),
        network_tx_bytes=int(sum(n.get("tx_bytes", 0) for n in networks)),
        block_read_bytes=int(sum(e.get("value", 0) for e in blkio
                                 if str(e.get("op")).lower() == "read")),
        block_write_bytes=int(sum(e.get("value", 0) for e in blkio
                                  if str(e.get("op")).lower() == "write")),
    )


def _number(mapping: Mapping[str, Any], *path: str) -> float:
    value: Any = mapping
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return float(value) if isinstance(value, int | float) else 0.0


class PullProgress:
    """Aggregates the events of a streamed pull into ``report(phase, percent)`` calls.

    Each layer to fetch counts equally: half for its download, half for its extraction (Docker
    reports ``progressDetail.current/total`` for both); layers the engine already has ("Already
    exists") are no work and do not count. ``phase`` is ``resolving`` (no layer known yet),
    ``downloading``, ``extracting`` or ``complete``; ``percent`` is None while resolving and never
    goes down. A report is made when the phase changes, else at most every ``interval`` seconds.
    """

    _STARTED = frozenset({"Pulling fs layer", "Waiting"})
    _DOWNLOADED = frozenset({"Verifying Checksum", "Download complete"})
    _DONE = frozenset({"Pull complete"})

    def __init__(self, report: Callable[[str, int | None], None], *, interval: float = 0.5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._report = report
        self._interval = interval
        self._clock = clock
        self._layers: dict[str, float] = {}
        self._percent: int | None = None
        self._last: tuple[str, int | None, float] | None = None

    def feed(self, event: Mapping[str, Any]) -> None:
        """Take one decoded event of the pull stream (errors are the caller's business)."""
        status, layer = event.get("status"), event.get("id")
        if not isinstance(status, str) or not isinstance(layer, str):
            return
        detail = event.get("progressDetail") or {}
        current, total = detail.get("current"), detail.get("total")
        ratio = (min(current / total, 1.0) if isinstance(current, int | float)
                 and isinstance(total, int | float) and total > 0 else 0.0)
        if status in self._STARTED:
            fraction = 0.0
        elif status == "Downloading":
            fraction = 0.5 * ratio
        elif status in self._DOWNLOADED:
            fraction = 0.5
        elif status == "Extracting":
            fraction = 0.5 + 0.5 * ratio
        elif status in self._DONE:
            fraction = 1.0
        else:  # "Already exists", and events about the whole image
            return
        self._layers[layer] = max(self._layers.get(layer, 0.0), fraction)
        self._emit(force=False)

    def finish(self) -> None:
        """The pull ended well: report ``complete`` at 100 % unless that was the last report."""
        self._percent = 100
        self._emit(force=self._last is None or self._last[:2] != ("complete", 100),
                   phase="complete")

    def _emit(self, *, force: bool, phase: str | None = None) -> None:
        if self._layers and phase is None:
            percent = int(100 * sum(self._layers.values()) / len(self._layers))
            self._percent = max(self._percent or 0, percent)
            fractions = self._layers.values()
            phase = ("downloading" if any(f < 0.5 for f in fractions) else
                     "extracting" if any(f < 1.0 for f in fractions) else "complete")
        phase = phase or "resolving"
        now = self._clock()
        last = self._last
        if not force and last is not None and (
                last[0] == phase and (now - last[2] < self._interval or last[1] == self._percent)):
            return
        self._last = (phase, self._percent, now)
        self._report(phase, self._percent)


def _ip_address(network: Mapping[str, Any]) -> str | None:
    """The managed network's address, else the bridge's, else the first network's
    (user-defined networks leave the top-level ``IPAddress`` empty)."""
    networks = network.get("Networks") or {}
    managed = networks.get(NETWORK) or {}
    if managed.get("IPAddress"):
        return str(managed["IPAddress"])
    if network.get("IPAddress"):
        return str(network["IPAddress"])
    for attached in networks.values():
        if attached and attached.get("IPAddress"):
            return str(attached["IPAddress"])
    return None


def _ports(bindings: Mapping[str, Any]) -> tuple[PortBinding, ...]:
    ports = []
    for key, hosts in bindings.items():
        number, _, protocol = key.partition("/")
        for host in hosts or []:
            ports.append(PortBinding(
                host_ip=host.get("HostIp") or None,
                host_port=int(host["HostPort"]) if host.get("HostPort") else None,
                container_port=int(number),
                protocol=protocol or "tcp",
            ))
    return tuple(ports)


def _timestamp(value: Any) -> str | None:
    """Docker's time as it gives it, or None for its zero time ("never")."""
    if not isinstance(value, str) or not value or value.startswith("0001-01-01"):
        return None
    return value


def _blkio_devices(spec: ContainerSpec) -> dict[str, Any]:
    """Per-device block I/O limits as docker-py's host config takes them (unset: None)."""
    options = spec.blkio_device_options

    def rates(attr: str) -> list[dict[str, Any]] | None:
        return [{"Path": o.path, "Rate": getattr(o, attr)} for o in options
                if getattr(o, attr) is not None] or None

    return {
        "blkio_weight_device": [{"Path": o.path, "Weight": o.weight} for o in options
                                if o.weight is not None] or None,
        "device_read_bps": rates("read_bps"), "device_write_bps": rates("write_bps"),
        "device_read_iops": rates("read_iops"), "device_write_iops": rates("write_iops"),
    }
