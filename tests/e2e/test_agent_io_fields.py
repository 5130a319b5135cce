"""The container fields Rancher 1.6 had and Corral now sends (publishAllPorts, block I/O
limits) on the real Docker engine, through the agent's real handlers and DockerRuntime."""

from __future__ import annotations

import json
import os

from tests.e2e.test_agent_containers import Agent, agent, docker, runtime, spec

__all__ = ["agent", "runtime"]  # the fixtures this module uses, from the agent's e2e tests


async def test_publish_all_ports_publishes_every_exposed_port(agent: Agent) -> None:
    container = spec(name=f"corral-e2e-publish-{os.getpid()}", publishAllPorts=True,
                     expose=[{"containerPort": 80, "protocol": "tcp"}])
    created = await agent.ok("instance.create", container=container)
    started = await agent.ok("instance.start", uuid=container["uuid"])
    seen = json.loads(docker("inspect", created["dockerId"]))[0]
    assert seen["HostConfig"]["PublishAllPorts"] is True
    published = seen["NetworkSettings"]["Ports"]["80/tcp"]
    assert published and all(int(binding["HostPort"]) > 0 for binding in published)
    # The agent reports the ports Docker chose, which the container's ports link shows.
    assert any(p["containerPort"] == 80 and p["hostPort"] for p in started["ports"])
    assert await agent.ok("instance.remove", uuid=container["uuid"], removeVolumes=True) == {}


async def test_block_io_limits_reach_the_engine(agent: Agent) -> None:
    """Docker keeps per-device rates in the host config. The weight needs the kernel's block
    I/O controller: an engine without one discards it with a warning (and shows 0)."""
    container = spec(name=f"corral-e2e-blkio-{os.getpid()}", blkioWeight=300,
                     blkioDeviceOptions=[{"path": "/dev/null", "weight": None,
                                          "readBps": 1048576, "writeBps": None,
                                          "readIops": None, "writeIops": 20}])
    created = await agent.ok("instance.create", container=container)
    host = json.loads(docker("inspect", created["dockerId"]))[0]["HostConfig"]
    assert host["BlkioDeviceReadBps"] == [{"Path": "/dev/null", "Rate": 1048576}]
    assert host["BlkioDeviceWriteIOps"] == [{"Path": "/dev/null", "Rate": 20}]
    assert host["BlkioWeight"] in (0, 300)
    assert await agent.ok("instance.remove", uuid=container["uuid"], removeVolumes=True) == {}
