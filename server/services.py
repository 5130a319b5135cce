"""The services a request handler reaches through its context, built once per app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from server.api.types import TypeRegistry
from server.config import Settings
from server.events import EventBus
from server.security import ServerKey
from server.store import Store

if TYPE_CHECKING:
    from server.agents.hub import AgentHub


@dataclass
class Services:
    settings: Settings
    store: Store
    types: TypeRegistry
    server_key: ServerKey
    events: EventBus
    hub: AgentHub
