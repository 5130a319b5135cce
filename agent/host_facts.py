"""Host facts: what the agent tells the server about its machine (Rancher's ``host.info``).

The only agent module that imports ``psutil``. :func:`gather_facts` runs every minute, so it only
makes cheap, non-blocking calls: no ``cpu_percent(interval)``, no network filesystems, and a
partial read of ``/proc/cpuinfo``. :func:`changed_sections` and :func:`parse_labels` are pure.

The facts, all JSON-able (sizes in MiB)::

    {"hostname": str,
     "labels": {user labels..., "io.rancher.host.linux_kernel_version": "6.1",
                "io.rancher.host.docker_version": "20.10", "io.rancher.host.os": "linux",
                "io.rancher.host.arch": "amd64"},
     "info": {"osInfo":     {operatingSystem, distribution, version, kernelVersion, dockerVersion,
                             arch},
              "cpuInfo":    {count, mhz, modelName, loadAvg: [1, 5, 15 min]},
              "memoryInfo": {memTotal, memAvailable, swapTotal},
              "diskInfo":   {mountPoints: {path: {total, used, free, percentage}},
                             dockerStorageDriver},
              "dockerInfo": {version, apiVersion, containers, containersRunning, images, rootDir}}}
"""

from __future__ import annotations

import os
import platform
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import psutil

__all__ = [
    "ARCH_LABEL",
    "DOCKER_VERSION_LABEL",
    "KERNEL_VERSION_LABEL",
    "OS_LABEL",
    "changed_sections",
    "gather_facts",
    "parse_labels",
]

KERNEL_VERSION_LABEL = "io.rancher.host.linux_kernel_version"
DOCKER_VERSION_LABEL = "io.rancher.host.docker_version"
OS_LABEL = "io.rancher.host.os"
ARCH_LABEL = "io.rancher.host.arch"

_MIB = 1024 * 1024
_OS_RELEASE_FILES = (Path("/etc/os-release"), Path("/usr/lib/os-release"))
_CPUINFO = Path("/proc/cpuinfo")
_CPU_MODEL_KEYS = frozenset({"model name", "cpu model", "Model", "Processor"})
# Read-only image filesystems (snap packages, CD images): real devices, but always 100 % full.
_IMAGE_FILESYSTEMS = frozenset({"squashfs", "iso9660", "erofs", "udf"})
# uname -m spelling to Docker/Go spelling.
_MACHINE_TO_ARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i386": "386",
    "i686": "386",
}
_MAJOR_MINOR = re.compile(r"^\s*v?(\d+)\.(\d+)")
_MISSING = object()


def gather_facts(
    runtime_version: Mapping[str, Any],
    runtime_info: Mapping[str, Any],
    labels: Mapping[str, str],
) -> dict[str, Any]:
    """Collect this host's facts; ``runtime_*`` are the engine's ``version()`` and ``info()``.

    Automatic ``io.rancher.host.*`` labels win over user labels with the same key, so the
    scheduler can trust them. Empty runtime mappings (engine down) give empty Docker fields;
    the kernel, OS and architecture labels then come from this machine.
    """
    return {
        "hostname": socket.gethostname(),
        "labels": {**labels, **_automatic_labels(runtime_version, runtime_info)},
        "info": {
            "osInfo": _os_info(runtime_version, runtime_info),
            "cpuInfo": _cpu_info(),
            "memoryInfo": _memory_info(),
            "diskInfo": _disk_info(runtime_info),
            "dockerInfo": _docker_info(runtime_version, runtime_info),
        },
    }


def changed_sections(previous: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """What to send after ``previous``: top-level keys that differ, and for ``info`` only the
    sections that differ (``{"info": {"memoryInfo": {...}}}``). Values are whole sections.

    Keys missing from ``current`` are not reported; an empty dict means nothing changed.
    """
    changes: dict[str, Any] = {}
    for key, value in current.items():
        before = previous.get(key, _MISSING)
        if key == "info" and isinstance(value, Mapping) and isinstance(before, Mapping):
            sections = {
                name: section
                for name, section in value.items()
                if before.get(name, _MISSING) != section
            }
            if sections:
                changes[key] = sections
        elif before != value:
            changes[key] = value
    return changes


def parse_labels(text: str) -> dict[str, str]:
    """Parse host labels written as Rancher's CATTLE_HOST_LABELS: ``a=b&c=d``.

    Keys and values are URL-decoded (the Rancher UI percent-encodes both); empty parts are
    skipped; a repeated key keeps its last value. Raises ``ValueError`` naming the bad part.
    """
    labels: dict[str, str] = {}
    for part in text.strip().split("&"):
        if not part:
            continue
        raw_key, sep, raw_value = part.partition("=")
        if not sep:
            raise ValueError(
                f"Host label {part!r} has no '=': write labels as key=value pairs joined "
                "by '&', e.g. 'a=b&c=d'."
            )
        key = unquote(raw_key)
        if not key:
            raise ValueError(f"Host label {part!r} has an empty key: write it as key=value.")
        if any(char.isspace() for char in key):
            raise ValueError(
                f"Host label key {key!r} contains whitespace: label keys are single words "
                "such as 'zone' or 'io.example.disk'."
            )
        labels[key] = unquote(raw_value)
    return labels


def _automatic_labels(version: Mapping[str, Any], info: Mapping[str, Any]) -> dict[str, str]:
    candidates = {
        KERNEL_VERSION_LABEL: _major_minor(_kernel_version(version, info)),
        DOCKER_VERSION_LABEL: _major_minor(_docker_version(version, info)),
        OS_LABEL: _text(version, "Os") or _text(info, "OSType") or platform.system().lower(),
        ARCH_LABEL: _arch(version, info),
    }
    return {key: value for key, value in candidates.items() if value}


def _os_info(version: Mapping[str, Any], info: Mapping[str, Any]) -> dict[str, Any]:
    """The engine's view of the OS, completed from os-release (which, if the agent runs in a
    container, describes the container's image)."""
    release = _read_os_release()
    operating_system = _text(info, "OperatingSystem")
    return {
        "operatingSystem": operating_system,
        "distribution": release.get("NAME") or operating_system,
        "version": release.get("VERSION_ID") or _text(info, "OSVersion"),
        "kernelVersion": _kernel_version(version, info),
        "dockerVersion": _docker_version(version, info),
        "arch": _arch(version, info),
    }


def _cpu_info() -> dict[str, Any]:
    return {
        "count": psutil.cpu_count(logical=True) or 0,
        "mhz": _cpu_mhz(),
        "modelName": _cpu_model_name(),
        "loadAvg": [round(load, 2) for load in psutil.getloadavg()],
    }


def _memory_info() -> dict[str, Any]:
    memory = psutil.virtual_memory()
    return {
        "memTotal": memory.total // _MIB,
        "memAvailable": memory.available // _MIB,
        "swapTotal": psutil.swap_memory().total // _MIB,
    }


def _disk_info(info: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "mountPoints": _mount_points(_text(info, "DockerRootDir")),
        "dockerStorageDriver": _text(info, "Driver"),
    }


def _docker_info(version: Mapping[str, Any], info: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "version": _docker_version(version, info),
        "apiVersion": _text(version, "ApiVersion"),
        "containers": _int(info, "Containers"),
        "containersRunning": _int(info, "ContainersRunning"),
        "images": _int(info, "Images"),
        "rootDir": _text(info, "DockerRootDir"),
    }


def _mount_points(docker_root_dir: str) -> dict[str, dict[str, Any]]:
    """Usage of local block-device filesystems, one entry per device (its shortest mount
    point), plus the Docker root dir when it lives on a filesystem not listed otherwise."""
    points: dict[str, dict[str, Any]] = {}
    devices: set[str] = set()
    partitions = psutil.disk_partitions(all=False)  # all=False: no pseudo or network filesystems
    for partition in sorted(partitions, key=lambda p: (len(p.mountpoint), p.mountpoint)):
        if partition.fstype in _IMAGE_FILESYSTEMS or partition.device in devices:
            continue
        if not os.path.isdir(partition.mountpoint):  # a bind-mounted file, e.g. /etc/hosts
            continue
        usage = _usage(partition.mountpoint)
        if usage is not None:
            devices.add(partition.device)
            points[partition.mountpoint] = usage
    if docker_root_dir and not _on_listed_filesystem(docker_root_dir, points):
        usage = _usage(docker_root_dir)
        if usage is not None:
            points[docker_root_dir] = usage
    return points


def _on_listed_filesystem(path: str, mount_points: Mapping[str, Any]) -> bool:
    """Whether ``path`` shares a filesystem with a listed mount point (True if unreadable)."""
    try:
        device = os.stat(path).st_dev
        return any(os.stat(point).st_dev == device for point in mount_points)
    except OSError:
        return True


def _usage(path: str) -> dict[str, Any] | None:
    try:
        usage = psutil.disk_usage(path)
    except OSError:
        return None
    return {
        "total": usage.total // _MIB,
        "used": usage.used // _MIB,
        "free": usage.free // _MIB,
        "percentage": float(usage.percent),
    }


def _cpu_mhz() -> float:
    """Maximum frequency, else current, else 0.0 (VMs and some ARM boards report none)."""
    try:
        frequency = psutil.cpu_freq()
    except (OSError, NotImplementedError, AttributeError):
        return 0.0
    if frequency is None:
        return 0.0
    return round(float(frequency.max or frequency.current or 0.0), 2)


def _cpu_model_name() -> str:
    """The first model line of /proc/cpuinfo (psutil has none), else the machine type."""
    try:
        with _CPUINFO.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                key, sep, value = line.partition(":")
                if sep and key.strip() in _CPU_MODEL_KEYS and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.machine()


def _read_os_release() -> dict[str, str]:
    """``/etc/os-release`` as a dict (quotes removed); empty if there is none."""
    for path in _OS_RELEASE_FILES:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        return _parse_os_release(text)
    return {}


def _parse_os_release(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.lstrip().startswith("#"):
            fields[key.strip()] = value.strip().strip("\"'")
    return fields


def _kernel_version(version: Mapping[str, Any], info: Mapping[str, Any]) -> str:
    return _text(version, "KernelVersion") or _text(info, "KernelVersion") or platform.release()


def _docker_version(version: Mapping[str, Any], info: Mapping[str, Any]) -> str:
    return _text(version, "Version") or _text(info, "ServerVersion")


def _arch(version: Mapping[str, Any], info: Mapping[str, Any]) -> str:
    """Docker's spelling (amd64, arm64), from the engine if it answered."""
    machine = _text(info, "Architecture") or platform.machine()
    return _text(version, "Arch") or _MACHINE_TO_ARCH.get(machine, machine)


def _major_minor(version: str) -> str:
    """``"20.10.24+dfsg1"`` → ``"20.10"``; empty if it does not start with two numbers."""
    match = _MAJOR_MINOR.match(version)
    return f"{match[1]}.{match[2]}" if match else ""


def _text(mapping: Mapping[str, Any], key: str) -> str:
    value = mapping.get(key)
    return value if isinstance(value, str) else ""


def _int(mapping: Mapping[str, Any], key: str) -> int:
    value = mapping.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
