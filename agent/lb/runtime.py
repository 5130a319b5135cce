"""Server changes HAProxy can take without a reload, through its admin socket (pure).

Two configs that are equal once their generated ``server`` lines are left out
(``shared.haproxy_config.render_without_servers``) differ only in their servers: each
server's address and draining change with ``set server``, a new server comes with
``add server`` (dynamic servers start in maintenance: ``set server ... state ready`` lets
them in, ``enable health`` starts their check), and a server that goes is drained now and
deleted after the drain period (:data:`RuntimePlan.removals`, see ``agent.lb.manager``).

Draining is a weight of 0, in the file as at runtime: the server state file keeps a weight
set at runtime across a reload only while the file's weight is unchanged, so the two always
agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.haproxy_config import (
    DEFAULT_SERVER_MAXCONN,
    Paths,
    address,
    render_without_servers,
    server_params,
)
from shared.lb import Balancer

# What the admin socket answers when a command worked (most answer nothing).
_OK_PREFIXES = ("New server registered", "Server deleted", "no need to change")


@dataclass(frozen=True)
class RuntimePlan:
    """Commands that make the running HAProxy match the new balancer, and the servers
    (``backend/server``) to drain now and delete later."""

    commands: tuple[str, ...]
    removals: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.commands and not self.removals


def plan(old: Balancer, new: Balancer, paths: Paths) -> RuntimePlan | None:
    """The runtime changes from ``old`` (what HAProxy runs) to ``new``; None when anything
    but servers changed, so that a reload is needed."""
    if render_without_servers(old, paths) != render_without_servers(new, paths):
        return None
    commands: list[str] = []
    removals: list[str] = []
    for backend in sorted(new.backends, key=lambda b: b.name):
        before = {s.name: s for s in old.backend(backend.name).servers}
        after = {s.name: s for s in backend.servers}
        for name in sorted(after):
            server, slot = after[name], f"{backend.name}/{name}"
            previous = before.get(name)
            if previous is None:
                params = server_params(new, backend, server)
                commands.append(f"add server {slot} {address(server)} {params} "
                                f"maxconn {DEFAULT_SERVER_MAXCONN}".replace("  ", " "))
                commands.append(f"set server {slot} state ready")
                if backend.check is not None:
                    commands.append(f"enable health {slot}")
                continue
            if (previous.address, previous.port) != (server.address, server.port):
                commands.append(f"set server {slot} addr {server.address} port {server.port}")
            if previous.draining != server.draining:
                commands.append(f"set server {slot} weight {0 if server.draining else 1}")
        removals += [f"{backend.name}/{name}" for name in sorted(set(before) - set(after))]
    return RuntimePlan(tuple(commands), tuple(removals))


def drain_commands(slot: str) -> tuple[str, ...]:
    return (f"set server {slot} state drain",)


def delete_commands(slot: str) -> tuple[str, ...]:
    return (f"set server {slot} state maint", f"shutdown sessions server {slot}",
            f"del server {slot}")


def succeeded(answer: str) -> bool:
    """Whether the admin socket's answer to a command says it worked."""
    text = answer.strip()
    return not text or text.startswith(_OK_PREFIXES) or "changed from" in text
