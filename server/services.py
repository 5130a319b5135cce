"""The services a request handler reaches through its context, built once per app."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from server.api.auth import KeyCache
from server.api.throttle import AuthGuard, ThrottlePolicy
from server.api.types import TypeRegistry
from server.caches import Recent
from server.config import Settings
from server.feed import ChangeFeed
from server.security import ServerKey
from server.sockets import ClientSockets
from server.store import Record, Store
from server.tokens import TokenSigner

if TYPE_CHECKING:
    from server.agents.hub import Hub
    from server.agents.instructions import Instructions
    from server.agents.streams import StreamTickets
    from server.engine.discovery import DiscoveryController
    from server.engine.health import HealthController
    from server.engine.lb_controller import LoadBalancerController
    from server.engine.overlay import OverlayController
    from server.engine.placement import Placer
    from server.engine.reconcile import Reconciler
    from server.engine.registries import RegistryAuth
    from server.engine.runner import Runner
    from server.engine.service_controller import ServiceController


@dataclass
class Services:
    settings: Settings
    store: Store
    types: TypeRegistry
    server_key: ServerKey
    feed: ChangeFeed
    hub: Hub
    key_cache: KeyCache
    sockets: ClientSockets
    # Environments, read by every request.
    projects: Recent[Record | None]
    # Built from the services above, right after them (they need the services themselves).
    runner: Runner = field(init=False)
    placer: Placer = field(init=False)
    instructions: Instructions = field(init=False)
    reconciler: Reconciler = field(init=False)
    registries: RegistryAuth = field(init=False)
    streams: StreamTickets = field(init=False)
    # Pushes the managed overlay's desired state to the agents connected here.
    overlay: OverlayController = field(init=False)
    # Pushes the discovery table to every agent's DNS responder.
    discovery: DiscoveryController = field(init=False)
    # Tells every agent which containers to check, and records what they report.
    health: HealthController = field(init=False)
    # Places load balancer instances and pushes each host's balancers to its agent.
    lb: LoadBalancerController = field(init=False)
    # Keeps every running service at its scale.
    service_controller: ServiceController = field(init=False)
    # Signs the tokens of streams and proxies; its public key is /v1/scripts/api.crt.
    tokens: TokenSigner = field(init=False)
    # Failed authentications per client address: throttled and logged in summary.
    auth_guard: AuthGuard = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = TokenSigner.of(self.server_key)
        self.auth_guard = AuthGuard(ThrottlePolicy(
            burst=self.settings.auth_failure_burst, per_second=self.settings.auth_failure_rate,
            log_interval=self.settings.auth_log_interval,
            trusted_proxies=self.settings.trusted_proxies))
