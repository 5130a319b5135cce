"""Instruction handlers, by name: the one table the dispatcher looks in."""

from __future__ import annotations

from collections.abc import Mapping

from agent.dispatcher import Handler
from agent.handlers import (
    dns,
    docker_socket,
    health,
    host,
    instances,
    lb,
    network,
    proxy,
    streams,
    volumes,
)

HANDLERS: Mapping[str, Handler] = {
    "host.inspect": host.inspect,
    "host.stats": host.stats,
    "host.dockersocket": docker_socket.docker_socket,
    "instance.stats": instances.stats,
    "instance.create": instances.create,
    "instance.start": instances.start,
    "instance.stop": instances.stop,
    "instance.restart": instances.restart,
    "instance.remove": instances.remove,
    "instance.inspect": instances.inspect,
    "volume.remove": volumes.remove,
    "network.apply": network.apply,
    "dns.apply": dns.apply,
    "health.apply": health.apply,
    "lb.apply": lb.apply,
    "instance.logs": streams.logs,
    "instance.exec": streams.execute,
    "instance.proxy": proxy.proxy,
}

# Instructions that stream until the server closes them (see Dispatcher).
STREAMING = frozenset({"instance.logs", "instance.exec", "instance.proxy",
                       "host.dockersocket"})
