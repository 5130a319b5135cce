"""Translation between Corral's container contract (docs/protocol.md, "Containers") and the
shapes Docker uses. Pure: no docker import, no I/O.

* :func:`create_params` turns a normalised container spec into docker-py's low-level
  ``create_container`` keyword arguments, with the ``host_config`` as the keyword arguments of
  ``create_host_config`` (that call needs the engine's API version, so the runtime makes it).
* :func:`state_summary` turns an inspect answer into the contract's container ``state``.
* :class:`PullProgress` turns the events of a streamed ``docker pull`` into an overall
  percentage, reported at a bounded rate.

A spec that cannot be turned into a container raises InstructionError with code INVALID_DATA.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from shared.errors import ErrorCode, InstructionError

__all__ = [
    "MANAGED_LABEL",
    "UUID_LABEL",
    "PullProgress",
    "create_params",
    "state_summary",
]

_ANONYMOUS = re.compile(r"[0-9a-f]{64}")
UUID_LABEL = "io.rancher.container.uuid"
MANAGED_LABEL = "io.corral.managed"
_NEVER = "0001-01-01T00:00:00Z"


def create_params(spec: Mapping[str, Any], host_ip: str | None) -> dict[str, Any]:
    """docker-py ``create_container`` kwargs for ``spec``; ``host_config`` holds the kwargs of
    ``create_host_config``.

    Published ports bind to the port's ``hostIp``, else ``host_ip`` (the agent's IP), else every
    interface; a null ``hostPort`` lets Docker pick one. Named volumes become binds
    (``name:/dest:mode``); anonymous ones only declare their destination (their mode is Docker's
    default, read-write). Like ``docker run``, host networking drops published ports.
    """
    try:
        return _create_params(spec, host_ip)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InstructionError(f"the container spec is malformed ({type(exc).__name__}: {exc}); "
                               "the server should have normalised it", ErrorCode.INVALID_DATA
                               ) from exc


def _create_params(spec: Mapping[str, Any], host_ip: str | None) -> dict[str, Any]:
    uuid = _text(spec, "uuid")
    image = _text(spec, "image")
    labels = {str(k): str(v) for k, v in _map(spec, "labels").items()}
    labels.update({UUID_LABEL: uuid, MANAGED_LABEL: "true"})
    environment = [f"{k}={v}" for k, v in _map(spec, "environment").items()]

    exposed: dict[str, dict[str, Any]] = {}
    port_bindings: dict[str, list[dict[str, str]]] = {}
    for port in _list(spec, "ports"):
        key = _port_key(port)
        exposed[key] = {}
        host_port = port.get("hostPort")
        port_bindings.setdefault(key, []).append({
            "HostIp": port.get("hostIp") or host_ip or "",
            "HostPort": "" if host_port is None else str(host_port),
        })
    for port in _list(spec, "expose"):
        exposed[_port_key(port)] = {}

    binds = [f"{b['source']}:{b['destination']}:{b.get('mode') or 'rw'}"
             for b in _list(spec, "binds")]
    anonymous: list[str] = []
    drivers: set[str] = set()
    for volume in _list(spec, "volumes"):
        if volume.get("driver"):
            drivers.add(str(volume["driver"]))
        if volume.get("name"):
            binds.append(f"{volume['name']}:{volume['destination']}:{volume.get('mode') or 'rw'}")
        else:
            anonymous.append(str(volume["destination"]))
    if len(drivers) > 1:
        raise InstructionError(
            f"container {uuid} asks for volumes of several drivers ({', '.join(sorted(drivers))})"
            "; Docker allows one volume driver per container.", ErrorCode.INVALID_DATA)

    network_mode = spec.get("networkMode")
    restart = spec.get("restartPolicy")
    log_config = spec.get("logConfig")
    host_config: dict[str, Any] = {
        "binds": binds or None,
        "port_bindings": (port_bindings or None) if network_mode != "host" else None,
        "volumes_from": _list(spec, "volumesFrom") or None,
        "network_mode": network_mode,
        "dns": _list(spec, "dns") or None,
        "dns_search": _list(spec, "dnsSearch") or None,
        "restart_policy": None if not restart else {
            "Name": restart["name"], "MaximumRetryCount": restart.get("maximumRetryCount") or 0},
        "cpu_shares": spec.get("cpuShares"),
        "cpuset_cpus": spec.get("cpuSet"),
        "mem_limit": spec.get("memory"),
        "memswap_limit": spec.get("memorySwap"),
        "privileged": bool(spec.get("privileged")),
        "cap_add": _list(spec, "capAdd") or None,
        "cap_drop": _list(spec, "capDrop") or None,
        "devices": [f"{d['pathOnHost']}:{d.get('pathInContainer') or d['pathOnHost']}:"
                    f"{d.get('permissions') or 'rwm'}" for d in _list(spec, "devices")] or None,
        "extra_hosts": spec.get("extraHosts") or None,
        "read_only": bool(spec.get("readOnly")),
        "pid_mode": spec.get("pidMode"),
        "ipc_mode": spec.get("ipcMode"),
        "log_config": None if not log_config else {
            "Type": log_config["driver"], "Config": dict(log_config.get("config") or {})},
        "ulimits": [{"Name": u["name"], "Soft": u["soft"], "Hard": u["hard"]}
                    for u in _list(spec, "ulimits")] or None,
        "volume_driver": next(iter(drivers), None),
    }
    return {
        "image": image,
        "command": spec.get("command"),
        "entrypoint": spec.get("entryPoint"),
        "environment": environment or None,
        "labels": labels,
        "ports": exposed or None,
        "volumes": anonymous or None,
        "name": spec.get("name"),
        "hostname": spec.get("hostname"),
        "domainname": spec.get("domainName"),
        "user": spec.get("user"),
        "working_dir": spec.get("workingDir"),
        "tty": bool(spec.get("tty")),
        "stdin_open": bool(spec.get("stdinOpen")),
        "host_config": host_config,
    }


def state_summary(inspect: Mapping[str, Any]) -> dict[str, Any]:
    """The contract's container ``state`` from a ``docker inspect`` answer.

    ``ports`` are the bindings in effect (NetworkSettings.Ports), one entry per host address as
    Docker reports them (an IPv4 and an IPv6 entry for a port published on every interface);
    a container that is not running has none.
    """
    state = inspect.get("State") or {}
    config = inspect.get("Config") or {}
    network = inspect.get("NetworkSettings") or {}
    labels = dict(config.get("Labels") or {})
    return {
        "uuid": labels.get(UUID_LABEL),
        "dockerId": inspect.get("Id"),
        "name": str(inspect.get("Name") or "").lstrip("/") or None,
        "image": config.get("Image"),
        "status": state.get("Status"),
        "exitCode": state.get("ExitCode"),
        "ipAddress": _ip_address(network),
        "ports": _ports(network.get("Ports") or {}),
        "startedAt": _timestamp(state.get("StartedAt")),
        "finishedAt": _timestamp(state.get("FinishedAt")),
        "labels": labels,
        "mounts": _mounts(inspect.get("Mounts") or []),
    }


def _mounts(mounts: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Volumes and binds as the server records them; Docker names anonymous volumes by a
    64-hex id."""
    out = []
    for mount in mounts:
        name = mount.get("Name")
        out.append({
            "type": mount.get("Type"), "name": name, "source": mount.get("Source"),
            "destination": mount.get("Destination"), "driver": mount.get("Driver"),
            "mode": mount.get("Mode"),
            "anonymous": bool(name and _ANONYMOUS.fullmatch(str(name))),
        })
    return out


def stats_summary(raw: Mapping[str, Any]) -> dict[str, Any]:
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
    return {
        "cpuPercent": round(percent, 2),
        "memoryUsage": max(int(_number(memory, "usage") - cache), 0),
        "memoryLimit": int(_number(memory, "limit")),
        "networkRxBytes": int(sum(n.get("rx_bytes", 0) for n in networks)),
        "networkTxBytes": int(sum(n.get("tx_bytes", 0) for n in networks)),
        "blockReadBytes": int(sum(e.get("value", 0) for e in blkio
                                  if str(e.get("op")).lower() == "read")),
        "blockWriteBytes": int(sum(e.get("value", 0) for e in blkio
                                   if str(e.get("op")).lower() == "write")),
    }


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


def _text(spec: Mapping[str, Any], key: str) -> str:
    value = spec.get(key)
    if not isinstance(value, str) or not value:
        raise InstructionError(f"the container spec needs a non-empty string {key!r}",
                               ErrorCode.INVALID_DATA)
    return value


def _map(spec: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = spec.get(key) or {}
    if not isinstance(value, Mapping):
        raise InstructionError(f"the container spec's {key!r} must be a map",
                               ErrorCode.INVALID_DATA)
    return value


def _list(spec: Mapping[str, Any], key: str) -> list[Any]:
    value = spec.get(key) or []
    if not isinstance(value, list):
        raise InstructionError(f"the container spec's {key!r} must be a list",
                               ErrorCode.INVALID_DATA)
    return value


def _port_key(port: Mapping[str, Any]) -> str:
    return f"{int(port['containerPort'])}/{port.get('protocol') or 'tcp'}"


def _ip_address(network: Mapping[str, Any]) -> str | None:
    """The bridge address, else the first network's (user-defined networks leave the top empty)."""
    if network.get("IPAddress"):
        return str(network["IPAddress"])
    for attached in (network.get("Networks") or {}).values():
        if attached and attached.get("IPAddress"):
            return str(attached["IPAddress"])
    return None


def _ports(bindings: Mapping[str, Any]) -> list[dict[str, Any]]:
    ports = []
    for key, hosts in bindings.items():
        number, _, protocol = key.partition("/")
        for host in hosts or []:
            ports.append({
                "hostIp": host.get("HostIp") or None,
                "hostPort": int(host["HostPort"]) if host.get("HostPort") else None,
                "containerPort": int(number),
                "protocol": protocol or "tcp",
            })
    return ports


def _timestamp(value: Any) -> str | None:
    """Docker's time as it gives it, or None for its zero time ("never")."""
    if not isinstance(value, str) or not value or value.startswith("0001-01-01"):
        return None
    return value
