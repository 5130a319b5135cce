"""Who acts, and where: what every domain operation takes, whether a REST request or one of
the server's own loops asked for it.

A ``Caller`` names the actor (an API key, an agent, or the system itself), the environment in
scope and the account acting; its ``store`` records every write as that actor's, so the change
log says who did what.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from server.store import SYSTEM, Actor, Record, Store
from server.store.acting import ActingStore

if TYPE_CHECKING:
    from server.services import Services


@dataclass
class Caller:
    services: Services
    actor: Actor
    # The environment operations of environment-scoped types happen in.
    project: Record | None = None
    # The account acting, for account-scoped types (API keys).
    account_id: int | None = None
    # Where clients reach this server (``http://host:8080``), for URLs in results.
    origin: str | None = None
    # Values shown once, in the response that created them (a new API key's secret).
    reveal: dict[int, dict[str, Any]] = field(default_factory=dict)
    store: Store = field(init=False)

    def __post_init__(self) -> None:
        self.store = ActingStore(self.services.store, self.actor)

    @classmethod
    def system(cls, services: Services, project: Record | None = None) -> Caller:
        """Corral itself, acting in ``project`` (a background loop)."""
        return cls(services=services, actor=SYSTEM, project=project)

    @property
    def public_origin(self) -> str:
        """The origin for URLs handed out: the configured public URL, else the request's."""
        configured = self.services.settings.public_url
        if configured:
            return configured
        if self.origin:
            return self.origin
        from server.bootstrap import public_origin

        return public_origin(self.services.settings)
