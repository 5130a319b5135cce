"""Build, start and stop the server's services: the store, the change feed, the agent hub,
the runner and the rest, in the order they need each other. The web app runs on top of
them; tests run them with a fake hub and no web app at all."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

from server.agents.hub import AgentHub, Hub
from server.agents.instructions import Instructions
from server.agents.streams import StreamTickets
from server.api.auth import KeyCache
from server.bootstrap import FirstStart, bootstrap
from server.caches import Recent
from server.config import Settings
from server.engine.discovery import DiscoveryController
from server.engine.health import HealthController
from server.engine.lb_controller import LoadBalancerController
from server.engine.overlay import OverlayController
from server.engine.placement import Placer
from server.engine.placement_view import PlacementView
from server.engine.reconcile import Reconciler
from server.engine.registries import RegistryAuth
from server.engine.runner import Runner, server_owner
from server.engine.service_controller import ServiceController
from server.engine.tables import operation_tables
from server.feed import ChangeFeed
from server.resources import build_types
from server.security import ServerKey
from server.services import Services
from server.sockets import ClientSockets
from server.store import Change, Record, Store
from server.store.sql import SqlStore
from server.store.urls import sqlite_url

HubFactory = Callable[[Store, Settings], Hub]


@contextlib.asynccontextmanager
async def running_services(
        settings: Settings,
        hub_factory: HubFactory = AgentHub) -> AsyncIterator[tuple[Services, FirstStart | None]]:
    """The services, started; what to tell the operator on a first start beside them."""
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_cache = KeyCache()
    projects: Recent[Record | None] = Recent(frozenset({"project"}))
    registry_cache: Recent[list[tuple[Record, Record]]] = Recent(
        frozenset({"registry", "registryCredential"}))
    feeds: list[ChangeFeed] = []

    def on_change(record: Record) -> None:
        key_cache.on_change(record)
        projects.on_change(record)
        registry_cache.on_change(record)

    def on_commit(entries: Sequence[Change]) -> None:
        for feed in feeds:
            feed.notify(entries)

    store = await SqlStore.open(settings.database_url or sqlite_url(settings.data_dir),
                                on_change=on_change, on_commit=on_commit)
    # Other server processes on the same PostgreSQL commit too: look for their changes.
    feed = ChangeFeed(store, poll_interval=1.0 if store.dialect == "postgresql" else None,
                      keep=settings.change_log_keep)
    feeds.append(feed)
    server_key = ServerKey.load_or_create(settings.data_dir)
    hub = hub_factory(store, settings)
    services = Services(settings=settings, store=store, types=build_types(),
                        server_key=server_key, feed=feed, hub=hub, key_cache=key_cache,
                        sockets=ClientSockets(), projects=projects)
    services.instructions = Instructions(hub, store)
    services.runner = Runner(services, server_owner(settings.data_dir))
    for type_id, (lifecycle, operations) in operation_tables().items():
        services.runner.register(type_id, lifecycle, operations)
    services.placer = Placer(store, PlacementView(store, feed), hub)
    services.reconciler = Reconciler(services)
    services.registries = RegistryAuth(services, registry_cache)
    services.streams = StreamTickets(services.tokens)
    services.overlay = OverlayController(services)
    services.service_controller = ServiceController(services)
    services.discovery = DiscoveryController(services)
    services.health = HealthController(services)
    services.lb = LoadBalancerController(services)
    try:
        first = await bootstrap(store, settings, server_key)
        await feed.start()
        services.placer.view.start()
        await hub.start()
        await services.overlay.start()
        await services.service_controller.start()
        await services.discovery.start()
        await services.health.start()
        await services.lb.start()
        # Operations under way when the server stopped carry on once their hosts reconnect.
        await services.runner.resume()
        services.runner.start()
        yield services, first
    finally:
        await services.runner.stop()
        await services.service_controller.stop()
        await services.discovery.stop()
        await services.health.stop()
        await services.lb.stop()
        await services.overlay.stop()
        await services.instructions.progress.stop()
        await hub.stop()
        await services.placer.view.stop()
        await feed.stop()
        await store.close()
