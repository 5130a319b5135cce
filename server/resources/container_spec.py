"""The container spec: a v2-beta ``container``'s API values, checked and normalised for the agent.

``build_spec`` turns the values a user sent (camelCase, each already type-checked against the
schema) into the spec of ``instance.create`` (docs/protocol.md, "Containers"): every key of the
contract present, null / [] / {} when unset. Anything Docker could not honour is refused here
with a 422 (``server.api.errors.invalid``) carrying Rancher's code and the offending
``fieldName``, so a bad container fails at the API, not on a host. Pure: no I/O.

Container references (``dataVolumesFrom``, ``networkMode: container:<x>``) are kept as given;
the caller resolves them to docker ids. ``healthCheck``, ``requestedHostId``,
``startOnCreate``, ``description``, ``memoryReservation`` and ``milliCpuReservation`` are not
part of the spec; the last two are checked here all the same, for the scheduler.
Docker's short string forms (``-p``, ``-v``, ...) and the structured fields are parsed in
``container_fields``; this module assembles the spec and parses the rest.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from server.api.errors import invalid
from server.resources.container_fields import (
    DRIVER_NAME,
    check_int,
    check_str_map,
    is_domain,
    parse_blkio_device_options,
    parse_blkio_weight,
    parse_capabilities,
    parse_devices,
    parse_dns,
    parse_dns_search,
    parse_expose,
    parse_extra_hosts,
    parse_log_config,
    parse_ports,
    parse_restart_policy,
    parse_ulimits,
    parse_volumes,
)
from server.store import Record
from shared.discovery import RESOLVER_ADDRESS, ZONE

__all__ = ["ENVIRONMENT_UUID_LABEL", "PID_MODES", "build_spec", "parse_expose", "parse_image",
           "parse_memory", "parse_ports", "parse_volumes", "volume_names",
           "with_environment_label"]

MIB = 1024 * 1024
MIN_MEMORY = 6 * MIB  # Docker refuses smaller memory limits
MAX_INT64 = 2**63 - 1
MIN_CPU_SHARES, MAX_CPU_SHARES = 2, 262_144  # the kernel's bounds, which Docker enforces
MAX_UTS_NAME = 64  # the kernel's limit for a hostname or domain name
RESERVED_LABELS = frozenset({"io.rancher.container.uuid", "io.corral.managed"})
MANAGED = "managed"  # the network mode of the overlay: the default
# Rancher sets this label to the container's environment, whatever the client sent.
ENVIRONMENT_UUID_LABEL = "io.rancher.environment.uuid"
# List fields where Rancher's converter took one value for a one-element list and a number
# for a string (``ports: [80]``, ``devices: "/dev/fuse"``).
LENIENT_LISTS = frozenset({"ports", "expose", "dataVolumes", "dns", "dnsSearch", "capAdd",
                           "capDrop", "devices", "extraHosts"})
IPC_MODES = ("host", "shareable", "private", "none")
PID_MODES = ("host",)  # or unset: the container's own PID namespace

_SIZE = re.compile(r"([0-9]{1,30}(?:\.[0-9]{1,30})?) ?([kmgtp]?)(?:i?b)?", re.IGNORECASE)
_UNITS = {unit: 1024**power for power, unit in enumerate(("", "k", "m", "g", "t", "p"))}
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE = re.compile(  # Docker's reference grammar: [domain[:port]/]path[:tag][@digest]
    rf"(?P<name>(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?/)?"
    rf"{_PATH_PART}(?:/{_PATH_PART})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{32,}))?", re.ASCII)
_CONTAINER_REF = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_CPU_SET = re.compile(r"[0-9]{1,5}(?:-[0-9]{1,5})?(?:,[0-9]{1,5}(?:-[0-9]{1,5})?)*")
_USER = re.compile(r"[^\s:]+(?::[^\s:]+)?")


def build_spec(values: Mapping[str, Any], *, uuid: str, name: str | None) -> dict[str, Any]:
    """The normalised container spec for ``values``, or a 422 naming the first bad field."""
    binds, volumes = parse_volumes(_str_list(values, "dataVolumes"),
                                   driver=_volume_driver(values))
    memory, memory_swap = _memory_limits(values)
    _check_reservations(values, memory)
    _refuse_build(values)
    return {
        "uuid": uuid,
        "name": name,
        "image": _image(values),
        "command": _argv(values, "command"),
        "entryPoint": _argv(values, "entryPoint"),
        "environment": _environment(values),
        "labels": _labels(values),
        "ports": parse_ports(_str_list(values, "ports")),
        "expose": parse_expose(_str_list(values, "expose")),
        "binds": binds,
        "volumes": volumes,
        "volumesFrom": _container_refs(values, "dataVolumesFrom"),
        "networkMode": _network_mode(values),
        "ipAddress": None,  # leased at placement for the managed network
        "dns": parse_dns(_str_list(values, "dns")),
        "dnsSearch": parse_dns_search(_str_list(values, "dnsSearch")),
        "capAdd": parse_capabilities(_str_list(values, "capAdd"), "capAdd"),
        "capDrop": parse_capabilities(_str_list(values, "capDrop"), "capDrop"),
        "extraHosts": parse_extra_hosts(_str_list(values, "extraHosts")),
        "restartPolicy": parse_restart_policy(values.get("restartPolicy")),
        "cpuShares": _cpu_shares(values),
        "memory": memory,
        "memorySwap": memory_swap,
        "cpuSet": _cpu_set(values),
        "user": _checked(values, "user", _USER.fullmatch, "is not user[:group]"),
        "workingDir": _checked(values, "workingDir", lambda v: v.startswith("/"),
                               "is not an absolute path"),
        "hostname": _uts_name(values, "hostname"),
        "domainName": _uts_name(values, "domainName"),
        "pidMode": _pid_mode(values),
        "ipcMode": _ipc_mode(values),
        "privileged": _bool(values, "privileged"),
        "tty": _bool(values, "tty"),
        "stdinOpen": _bool(values, "stdinOpen"),
        "readOnly": _bool(values, "readOnly"),
        "devices": parse_devices(_str_list(values, "devices")),
        "logConfig": parse_log_config(values.get("logConfig")),
        "ulimits": parse_ulimits(values.get("ulimits")),
        "publishAllPorts": _bool(values, "publishAllPorts"),
        "blkioWeight": parse_blkio_weight(values.get("blkioWeight")),
        "blkioDeviceOptions": parse_blkio_device_options(values.get("blkioDeviceOptions")),
    }


def with_environment_label(values: Mapping[str, Any], environment_uuid: str) -> dict[str, Any]:
    """``values`` with the environment label set as Rancher sets it (a sent one is
    replaced); other labels are checked later, by ``build_spec``."""
    labels = values.get("labels")
    labels = dict(labels) if isinstance(labels, dict) else {}
    labels[ENVIRONMENT_UUID_LABEL] = environment_uuid
    return {**values, "labels": labels}


def volume_names(spec: Mapping[str, Any]) -> list[str]:
    """The named volumes a spec uses, each once: the container must run where they live."""
    names = [v["name"] for v in spec.get("volumes") or [] if v.get("name") is not None]
    return list(dict.fromkeys(names))


def parse_image(image_uuid: str) -> str:
    """``docker:<reference>`` → the reference, with ``:latest`` when it has no tag or digest."""
    m = _IMAGE.fullmatch(image_uuid.removeprefix("docker:"))
    if not image_uuid.startswith("docker:") or m is None:
        raise invalid("InvalidFormat", "imageUuid", f"imageUuid {image_uuid!r} is not "
                      "docker:<image reference>, e.g. docker:busybox:1.36")
    if len(m["name"]) > 255:
        raise invalid("InvalidFormat", "imageUuid",
                      "imageUuid names a repository longer than 255 characters")
    if m["tag"] is None and m["digest"] is None:
        return f"{m[0]}:latest"
    return m[0]


def parse_memory(value: int | str, field: str = "memory") -> int:
    """Bytes from an int or a size such as ``512m``, ``1g``, ``1024k``, ``100b``, ``2048``.

    Units are binary (k = 1024), as Docker reads them; ``field`` names the field in a 422.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise invalid("InvalidType", field, f"{field} must be a number of bytes or a size")
    if isinstance(value, int):
        size = value
    elif (m := _SIZE.fullmatch(value.strip())) is not None:
        size = int(Decimal(m[1]) * _UNITS[m[2].lower()])
    else:
        raise invalid("InvalidFormat", field,
                      f"{field} {value!r} is not a size such as 512m, 1g or 2048")
    if size <= 0:
        raise invalid("InvalidFormat", field, f"{field} must be more than 0 bytes")
    if size > MAX_INT64:
        raise invalid("MaxLimitExceeded", field, f"{field} is larger than {MAX_INT64} bytes")
    return size


# Type checks: the schema has checked most fields already, but json fields may hold anything.


def _str(values: Mapping[str, Any], key: str) -> str | None:
    """A string field; an empty string counts as unset."""
    value = values.get(key)
    if value is not None and not isinstance(value, str):
        raise invalid("InvalidType", key, f"{key} must be a string")
    return value or None


def _str_list(values: Mapping[str, Any], key: str) -> list[str]:
    value = values.get(key)
    if value is None:
        return []
    if key in LENIENT_LISTS:
        value = _as_strings(value)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid("InvalidType", key, f"{key} must be a list of strings")
    return list(value)


def _as_strings(value: Any) -> Any:
    """Rancher's reading of a list of strings: one value is a list of one, and an integer
    stands for its digits; anything else is left for the type check to refuse."""
    items = value if isinstance(value, list) else [value]
    return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in items]


def _bool(values: Mapping[str, Any], key: str) -> bool:
    value = values.get(key)
    if value is not None and not isinstance(value, bool):
        raise invalid("InvalidType", key, f"{key} must be true or false")
    return bool(value)


# One function per field that needs more than a type check.


def _image(values: Mapping[str, Any]) -> str:
    image = values.get("imageUuid")
    if image is None:
        raise invalid("MissingRequired", "imageUuid", "imageUuid is required")
    if not isinstance(image, str):
        raise invalid("InvalidType", "imageUuid", "imageUuid must be a string")
    return parse_image(image)


def _argv(values: Mapping[str, Any], key: str) -> list[str] | None:
    """A list of strings, or one string split as a shell would; empty means the image's."""
    value = values.get(key)
    if isinstance(value, str):
        try:
            return shlex.split(value) or None
        except ValueError:
            raise invalid("InvalidFormat", key,
                          f"{key} {value!r} has an unbalanced quote") from None
    return _str_list(values, key) or None


def _environment(values: Mapping[str, Any]) -> dict[str, str]:
    env = check_str_map(values.get("environment"), "environment")
    for key in env:
        if not key or "=" in key:
            raise invalid("InvalidFormat", "environment",
                          f"environment variable name {key!r} is empty or contains '='")
    return env


def _labels(values: Mapping[str, Any]) -> dict[str, str]:
    labels = check_str_map(values.get("labels"), "labels")
    for key in labels:
        if not key:
            raise invalid("InvalidFormat", "labels", "labels may not have an empty key")
        if key in RESERVED_LABELS:
            raise invalid("InvalidOption", "labels", f"label {key} is set by Corral itself")
    return labels


def _container_refs(values: Mapping[str, Any], key: str) -> list[str]:
    refs = _str_list(values, key)
    for ref in refs:
        if not _CONTAINER_REF.fullmatch(ref):
            raise invalid("InvalidFormat", key, f"{key} entry {ref!r} is not a container id")
    return refs


def _volume_driver(values: Mapping[str, Any]) -> str:
    driver = _str(values, "volumeDriver")
    if driver is not None and not DRIVER_NAME.fullmatch(driver):
        raise invalid("InvalidFormat", "volumeDriver", f"volumeDriver {driver!r} is not a "
                      "driver name")
    return driver or "local"


def _network_mode(values: Mapping[str, Any]) -> str:
    # Rancher's default: the environment's managed overlay, with an address leased at
    # placement (server.engine.overlay).
    mode = _str(values, "networkMode") or MANAGED
    if mode in (MANAGED, "bridge", "host", "none"):
        return mode
    if mode == "container":  # Rancher's form: the container in networkContainerId
        key, target = "networkContainerId", _str(values, "networkContainerId")
        if target is None:
            raise invalid("MissingRequired", key, f"{key} is required when networkMode is "
                          "container")
    elif mode.startswith("container:"):
        key, target = "networkMode", mode.removeprefix("container:")
    else:  # Rancher looks other names up as networks of the environment
        raise invalid("InvalidReference", "networkMode",
                      f"networkMode {mode!r}: no network of that name in this environment "
                      "(Corral has managed, bridge, host, none and container:<id>)")
    if not _CONTAINER_REF.fullmatch(target):
        raise invalid("InvalidFormat", key, f"{key}: {target!r} is not a container id")
    return f"container:{target}"


def _refuse_build(values: Mapping[str, Any]) -> None:
    """Rancher could build an image on the host from ``build``; Corral's agents cannot, so a
    build is refused rather than ignored."""
    if values.get("build") not in (None, {}):
        raise invalid("InvalidOption", "build", "build is not supported: Corral runs images "
                      "from a registry; build and push the image, then name it in imageUuid")


def _cpu_shares(values: Mapping[str, Any]) -> int | None:
    shares = check_int(values.get("cpuShares"), "cpuShares")
    if not shares:
        return None
    if shares < MIN_CPU_SHARES:
        raise invalid("MinLimitExceeded", "cpuShares", f"cpuShares must be at least "
                      f"{MIN_CPU_SHARES} (or 0 for the default)")
    if shares > MAX_CPU_SHARES:
        raise invalid("MaxLimitExceeded", "cpuShares", f"cpuShares must be at most "
                      f"{MAX_CPU_SHARES}")
    return shares


def _cpu_set(values: Mapping[str, Any]) -> str | None:
    cpus = _str(values, "cpuSet")
    if cpus is None:
        return None
    ranges = [part.partition("-") for part in cpus.split(",")]
    if not _CPU_SET.fullmatch(cpus) or any(dash and int(high) < int(low)
                                           for low, dash, high in ranges):
        raise invalid("InvalidFormat", "cpuSet", f"cpuSet {cpus!r} is not a list of CPUs "
                      "and ranges such as 0-2,4")
    return cpus


def _size(values: Mapping[str, Any], key: str) -> int | None:
    """A memory size, with 0 and "" meaning unset (as Docker reads 0)."""
    value = values.get(key)
    if value is None or value == "" or (type(value) is int and value == 0):
        return None
    return parse_memory(value, key)


def _memory_limits(values: Mapping[str, Any]) -> tuple[int | None, int | None]:
    memory = _size(values, "memory")
    if memory is not None and memory < MIN_MEMORY:
        raise invalid("MinLimitExceeded", "memory", "memory must be at least 6 MiB")
    unlimited = values.get("memorySwap") in (-1, "-1")
    swap = -1 if unlimited else _size(values, "memorySwap")
    if swap is not None and swap != -1:
        if memory is None:
            raise invalid("InvalidOption", "memorySwap", "memorySwap needs memory to be set")
        if swap < memory:
            raise invalid("MinLimitExceeded", "memorySwap", "memorySwap (memory plus swap) "
                          "must be at least memory, or -1 for unlimited swap")
    return memory, swap


def reserved_memory(values: Mapping[str, Any]) -> int | None:
    """The memory a container reserves on its host (bytes): ``memoryReservation``, else its
    ``memory`` limit; None when it names neither. The values were checked by build_spec."""
    return _size(values, "memoryReservation") or _size(values, "memory")


def _check_reservations(values: Mapping[str, Any], memory: int | None) -> None:
    """Reservations are the scheduler's, not the spec's, but are refused here when bad."""
    reserved = _size(values, "memoryReservation")
    if reserved is not None and memory is not None and reserved > memory:
        raise invalid("MaxLimitExceeded", "memoryReservation",
                      "memoryReservation must not be more than memory")
    milli_cpu = check_int(values.get("milliCpuReservation"), "milliCpuReservation")
    if milli_cpu is not None and milli_cpu < 0:
        raise invalid("MinLimitExceeded", "milliCpuReservation",
                      "milliCpuReservation must be 0 or more")


def _checked(values: Mapping[str, Any], key: str, check: Callable[[str], object],
             problem: str) -> str | None:
    value = _str(values, key)
    if value is not None and not check(value):
        raise invalid("InvalidFormat", key, f"{key} {value!r} {problem}")
    return value


def _uts_name(values: Mapping[str, Any], key: str) -> str | None:
    """A hostname or domain name: RFC 1123 labels, at most 64 characters in all."""
    value = _checked(values, key, is_domain, "is not an RFC 1123 name")
    if value is not None and len(value) > MAX_UTS_NAME:
        raise invalid("MaxLengthExceeded", key, f"{key} is longer than {MAX_UTS_NAME} "
                      "characters")
    return value


def _pid_mode(values: Mapping[str, Any]) -> str | None:
    mode = _str(values, "pidMode")
    if mode is not None and mode not in PID_MODES:
        raise invalid("InvalidOption", "pidMode", "pidMode must be host or unset")
    return mode


def _ipc_mode(values: Mapping[str, Any]) -> str | None:
    mode = _str(values, "ipcMode")
    if mode is None or mode in IPC_MODES:
        return mode
    if not (mode.startswith("container:")
            and _CONTAINER_REF.fullmatch(mode.removeprefix("container:"))):
        raise invalid("InvalidOption", "ipcMode", f"ipcMode must be one of "
                      f"{', '.join(IPC_MODES)} or container:<id>")
    return mode


DNS_INSTRUCTION = "dns.apply"
STACK_LABEL = "io.rancher.stack.name"


def with_discovery(spec: dict[str, Any], host: Record,
                   values: Mapping[str, Any]) -> dict[str, Any]:
    """A managed container asks its host's DNS responder (``server.engine.discovery``), as
    Rancher's asked rancher-dns, where that host's agent runs one and the container names no
    resolver of its own; its stack's zone comes first in its search list."""
    if spec.get("networkMode") != MANAGED or spec.get("dns") or \
            DNS_INSTRUCTION not in (host.data.get("agentInstructions") or ()):
        return spec
    stack = (values.get("labels") or {}).get(STACK_LABEL)
    zones = [f"{stack.lower()}.{ZONE}"] if isinstance(stack, str) and stack else []
    own = [*zones, ZONE]
    search = [*own, *(z for z in spec.get("dnsSearch") or () if z not in own)]
    return {**spec, "dns": [RESOLVER_ADDRESS], "dnsSearch": search}
