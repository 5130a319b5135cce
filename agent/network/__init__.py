"""The managed overlay network on this host: one L3 VXLAN device to every peer, a Docker bridge
network on this host's subnet, and the iptables rules between them (docs/architecture.md).

``config`` (settings, peers, policy, derived addresses) and ``state`` (parsing the host's
state) and ``plan`` (desired + observed -> commands) are pure; ``overlay`` runs commands;
``manager`` is what the ``network.apply`` handler calls, and keeps the host matching the
server's desired state. ``errors`` draws the exception tree. ``python -m agent.network``
applies a JSON description by hand.
"""

from agent.network.config import OverlayConfig, Peer
from agent.network.errors import CommandFailed, OverlayError
from agent.network.overlay import Overlay, Runner, SubprocessRunner
from agent.network.plan import Command

__all__ = [
    "Command",
    "CommandFailed",
    "Overlay",
    "OverlayConfig",
    "OverlayError",
    "Peer",
    "Runner",
    "SubprocessRunner",
]
