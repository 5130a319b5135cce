"""The container runtime: the agent's only door to the container engine.

``interface`` says what the agent asks of an engine and the errors it may see;
``docker_engine`` is the Docker engine behind it, and the only module of the agent that imports
``docker``. Everything the engine raises is translated there into Corral errors.
"""

from agent.runtime.docker_engine import DockerRuntime
from agent.runtime.docker_errors import DEFAULT_DOCKER_HOST, DEFAULT_TIMEOUT
from agent.runtime.interface import (
    ByteStream,
    ContainerRuntime,
    EngineEndpoint,
    EventStream,
    ExecSession,
    OnPullProgress,
    RuntimeUnavailable,
)

__all__ = [
    "DEFAULT_DOCKER_HOST",
    "DEFAULT_TIMEOUT",
    "ByteStream",
    "ContainerRuntime",
    "DockerRuntime",
    "EngineEndpoint",
    "EventStream",
    "ExecSession",
    "OnPullProgress",
    "RuntimeUnavailable",
]
