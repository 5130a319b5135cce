"""The engine's tests' world: every service but the web app, on a fake hub, with the
Default environment and helpers to put hosts and containers in it."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from server import operations
from server.agents.liveness import AgentState
from server.caller import Caller
from server.config import Settings
from server.resources.volumes import create_local_pool
from server.security import digest
from server.services import Services
from server.store import Condition, NewRecord, Query, Record, Store
from server.wiring import running_services
from tests.support.fake_hub import FakeHub
from tests.support.timing import seconds

MIB = 1024 * 1024
SLEEPER: dict[str, Any] = {"imageUuid": "docker:busybox", "command": ["sleep", "1000"],
                           "startOnCreate": False}


async def default_project(store: Store) -> Record:
    """The admin's Default environment, which bootstrap made on the first start."""
    admins = await store.list(Query(types=["account"], limit=1,
                                    conditions=[Condition("kind", "eq", "admin")]))
    assert admins, "bootstrap made no admin account"
    project = await store.get(admins[0].data["defaultProjectId"])
    assert project is not None and project.type == "project"
    return project


@dataclass
class Engine:
    services: Services
    hub: FakeHub
    project: Record

    @property
    def store(self) -> Store:
        return self.services.store

    @property
    def caller(self) -> Caller:
        """Corral itself, acting in the Default environment."""
        return Caller.system(self.services, self.project)

    async def add_host(self, name: str = "host-1", *, live: bool = True,
                       **data: Any) -> Record:
        """An active host as registration and its agent's hello leave it (``data`` overrides
        what the hello reported)."""
        host = await self.store.create(NewRecord(
            type="host", kind="docker", state="active", name=name,
            project_id=self.project.id, lookup_key=digest(f"fake-{uuid.uuid4().hex}"),
            data={"agentState": AgentState.ACTIVE.value, "agentIpAddress": "10.0.0.5",
                  "agentVersion": "fake", "hostname": name, "memory": 4096 * MIB,
                  "milliCpu": 2000, "localStorageMb": 10_000, "reportedLabels": {}, **data}))
        await create_local_pool(self.store, host)
        if live:
            self.hub.connect(host.id)
        return host

    async def settle(self) -> None:
        """Wait (bounded) until the runner has nothing under way."""
        async with asyncio.timeout(seconds(5)):
            await self.services.runner.idle()

    async def get(self, record: Record) -> Record:
        """The record as it is now."""
        current = await self.store.get(record.id)
        assert current is not None
        return current

    async def container(self, **body: Any) -> Record:
        """A container created through the domain operations, once the runner settled it."""
        record = await operations.create(self.caller, "container", {**SLEEPER, **body})
        await self.settle()
        return await self.get(record)

    async def act(self, record: Record, action: str, body: Any = None) -> Record:
        """``action`` on the record as it is now (the step is recorded; it may be under way)."""
        result = await operations.act(self.caller, await self.get(record), action, body)
        assert isinstance(result, Record)
        return result


@contextlib.asynccontextmanager
async def engine_running(settings: Settings, hub: FakeHub) -> AsyncIterator[Engine]:
    """The services started on ``settings``' data, with ``hub`` as their agents' hub.
    Leaving and entering again on the same settings is a server restart."""
    async with running_services(settings, hub_factory=hub.factory) as (services, _):
        yield Engine(services, hub, await default_project(services.store))
