"""The connection's lifetime: a dropped session leaves instructions to the dispatcher; stopping
the agent for good closes the dispatcher, which waits for the Docker calls in progress."""

from __future__ import annotations

import asyncio
import contextlib

from agent.connection import AgentConnection
from agent.dispatcher import SHUTDOWN_GRACE, Dispatcher
from agent.facts import FactsSource
from agent.handlers import HANDLERS
from agent.state import Credentials
from tests.support.processes import free_port
from tests.unit.agent.fakes import FakeRuntime


class RecordingDispatcher(Dispatcher):
    """The real dispatcher, noting each close() and its grace."""

    def __init__(self, runtime: FakeRuntime) -> None:
        super().__init__(HANDLERS, runtime, FactsSource(runtime, {}, None))
        self.closes: list[float] = []

    async def close(self, grace: float = SHUTDOWN_GRACE) -> None:
        self.closes.append(grace)
        await super().close(grace)


async def test_stopping_the_connection_closes_the_dispatcher_with_its_grace() -> None:
    runtime = FakeRuntime()
    dispatcher = RecordingDispatcher(runtime)
    port = free_port()  # nothing listens: the connection keeps retrying until cancelled
    credentials = Credentials(server_url=f"http://127.0.0.1:{port}",
                              agent_url=f"ws://127.0.0.1:{port}/v1/agent/connect",
                              host_id="1h1", access_key="access", secret_key="secret")
    connection = AgentConnection(credentials, FactsSource(runtime, {}, None), dispatcher,
                                 runtime)
    running = asyncio.create_task(connection.run())
    await asyncio.sleep(0)
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(running, 5)
    assert dispatcher.closes == [SHUTDOWN_GRACE]
