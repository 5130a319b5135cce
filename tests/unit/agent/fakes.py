"""Test doubles for the agent's I/O edges.

``FakeRuntime`` stands in for ``agent.runtime.DockerRuntime``: it answers from canned dicts
copied from a real engine (Docker 20.10 on Debian 12) and records every call.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from agent.runtime import RuntimeUnavailable
from shared.errors import InstructionError

if TYPE_CHECKING:
    from agent.runtime import ContainerRuntime

DOCKER_VERSION: dict[str, Any] = {
    "Platform": {"Name": ""},
    "Components": [
        {
            "Name": "Engine",
            "Version": "20.10.24+dfsg1",
            "Details": {
                "ApiVersion": "1.41",
                "Arch": "amd64",
                "BuildTime": "2026-05-07T21:09:36.000000000+00:00",
                "Experimental": "false",
                "GitCommit": "5d6db84",
                "GoVersion": "go1.19.8",
                "KernelVersion": "6.1.0-18-amd64",
                "MinAPIVersion": "1.12",
                "Os": "linux",
            },
        },
        {
            "Name": "containerd",
            "Version": "1.6.20~ds1",
            "Details": {"GitCommit": "1.6.20~ds1-1+deb12u3"},
        },
        {"Name": "runc", "Version": "1.1.5+ds1", "Details": {"GitCommit": "1.1.5+ds1-1+deb12u1"}},
        {"Name": "docker-init", "Version": "0.19.0", "Details": {"GitCommit": ""}},
    ],
    "Version": "20.10.24+dfsg1",
    "ApiVersion": "1.41",
    "MinAPIVersion": "1.12",
    "GitCommit": "5d6db84",
    "GoVersion": "go1.19.8",
    "Os": "linux",
    "Arch": "amd64",
    "KernelVersion": "6.1.0-18-amd64",
    "BuildTime": "2026-05-07T21:09:36.000000000+00:00",
}

DOCKER_INFO: dict[str, Any] = {
    "ID": "DG5S:EIQQ:4FX5:ABUV:JOFG:4MSK:YOZL:OFDH:YBME:5XXQ:TUWF:PUKI",
    "Containers": 3,
    "ContainersRunning": 2,
    "ContainersPaused": 0,
    "ContainersStopped": 1,
    "Images": 5,
    "Driver": "overlay2",
    "DriverStatus": [
        ["Backing Filesystem", "extfs"],
        ["Supports d_type", "true"],
        ["Native Overlay Diff", "true"],
        ["userxattr", "false"],
    ],
    "Plugins": {
        "Volume": ["local"],
        "Network": ["bridge", "host", "ipvlan", "macvlan", "null", "overlay"],
        "Authorization": None,
        "Log": ["json-file", "local", "journald", "syslog"],
    },
    "MemoryLimit": True,
    "SwapLimit": True,
    "CpuCfsPeriod": True,
    "CpuCfsQuota": True,
    "CPUShares": True,
    "CPUSet": True,
    "PidsLimit": True,
    "IPv4Forwarding": True,
    "Debug": False,
    "NFd": 28,
    "NGoroutines": 42,
    "SystemTime": "2026-11-27T12:04:24.643952018Z",
    "LoggingDriver": "json-file",
    "CgroupDriver": "cgroupfs",
    "CgroupVersion": "1",
    "KernelVersion": "6.1.0-18-amd64",
    "OperatingSystem": "Debian GNU/Linux 12 (bookworm)",
    "OSVersion": "12",
    "OSType": "linux",
    "Architecture": "x86_64",
    "IndexServerAddress": "https://index.docker.io/v1/",
    "NCPU": 2,
    "MemTotal": 25276502016,
    "DockerRootDir": "/var/lib/docker",
    "HttpProxy": "",
    "HttpsProxy": "",
    "NoProxy": "",
    "Name": "vm",
    "Labels": [],
    "ExperimentalBuild": False,
    "ServerVersion": "20.10.24+dfsg1",
    "DefaultRuntime": "runc",
    "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive"},
    "LiveRestoreEnabled": False,
    "InitBinary": "docker-init",
    "SecurityOptions": ["name=seccomp,profile=default"],
    "Warnings": None,
}


class FakeRuntime:
    """A ContainerRuntime answering from canned dicts; ``calls`` lists every method called.

    Set ``error`` to make every following call raise it (e.g. ``RuntimeUnavailable(...)``).
    """

    def __init__(
        self, *, version: dict[str, Any] | None = None, info: dict[str, Any] | None = None
    ) -> None:
        self.version_answer = copy.deepcopy(DOCKER_VERSION if version is None else version)
        self.info_answer = copy.deepcopy(DOCKER_INFO if info is None else info)
        self.calls: list[str] = []
        self.error: InstructionError | None = None
        self.closed = False

    def version(self) -> dict[str, Any]:
        self._enter("version")
        return copy.deepcopy(self.version_answer)

    def info(self) -> dict[str, Any]:
        self._enter("info")
        return copy.deepcopy(self.info_answer)

    def close(self) -> None:
        self.calls.append("close")
        self.closed = True

    def _enter(self, name: str) -> None:
        self.calls.append(name)
        if self.closed:
            raise RuntimeUnavailable("The fake Docker engine is closed.")
        if self.error is not None:
            raise self.error


if TYPE_CHECKING:
    _conforms: ContainerRuntime = FakeRuntime()
