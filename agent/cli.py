"""``corral-agent URL``: register this host with a Corral server and carry out its
instructions. Without a URL, run with the credentials kept in the state dir."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.connection import AgentConnection, AgentExit
from agent.dispatcher import Dispatcher
from agent.dns.manager import DnsManager
from agent.facts import FactsSource
from agent.handlers import HANDLERS, STREAMING
from agent.health import HealthChecker
from agent.host_facts import parse_labels
from agent.lb import LbManager
from agent.logs import log, set_host
from agent.network import Overlay, SubprocessRunner
from agent.network.manager import NetworkManager
from agent.registration import RegistrationError, parse_registration_url, register
from agent.runtime import DockerRuntime
from agent.state import Credentials, StateDir, StateError
from shared import protocol
from shared.health import HealthResult
from shared.lb_report import LbResult
from shared.logformat import formatter

DEFAULT_STATE_DIR = "/var/lib/corral"


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent is told, read once here from flags and the environment."""

    url: str | None
    state_dir: Path
    agent_ip: str | None
    labels: dict[str, str] | None
    docker_env: dict[str, str] = field(default_factory=dict)
    register_only: bool = False
    haproxy: str = "haproxy"  # the binary load balancers run


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corral-agent",
        description="Register this host with a Corral server and run its instructions.")
    parser.add_argument("url", nargs="?",
                        help="registration URL, http://SERVER:8080/v1/scripts/TOKEN "
                             "(not needed once registered)")
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR,
                        help=f"where the host key and credentials live ({DEFAULT_STATE_DIR})")
    parser.add_argument("--agent-ip", help="address other hosts and users reach this host at "
                                           "(default: detected, the source address of the "
                                           "route to the server, or of the default route "
                                           "when the server is on this host)")
    parser.add_argument("--labels", help="host labels, 'a=b&c=d'")
    parser.add_argument("--log-format", default="text", choices=["text", "json"])
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--haproxy", help="the HAProxy binary load balancers run (default: "
                                          "$CORRAL_HAPROXY, else haproxy on the PATH)")
    parser.add_argument("--register-only", action="store_true",
                        help="register (or re-register) and exit")
    return parser


def read_config(args: argparse.Namespace, environ: Mapping[str, str]) -> AgentConfig:
    labels_text = args.labels or environ.get("CORRAL_HOST_LABELS") or \
        environ.get("CATTLE_HOST_LABELS")
    docker_env = {k: v for k, v in environ.items() if k.startswith("DOCKER_")}
    return AgentConfig(
        url=args.url,
        state_dir=Path(args.state_dir),
        agent_ip=args.agent_ip or environ.get("CORRAL_AGENT_IP") or
        environ.get("CATTLE_AGENT_IP") or None,
        labels=parse_labels(labels_text) if labels_text is not None else None,
        docker_env=docker_env,
        register_only=args.register_only,
        haproxy=args.haproxy or environ.get("CORRAL_HAPROXY") or "haproxy",
    )


async def obtain_credentials(config: AgentConfig, state: StateDir) -> Credentials:
    """Register when given a URL; otherwise use what the state dir holds."""
    stored = state.load()
    if config.url is None:
        if stored is None:
            raise RegistrationError(f"not registered yet (nothing in {state.path}): run "
                                    "corral-agent with the registration URL from Corral")
        return stored
    url = parse_registration_url(config.url)
    registered = await register(url, state.host_key())
    labels = config.labels if config.labels is not None else \
        (stored.labels if stored is not None else {})
    agent_ip = config.agent_ip or (stored.agent_ip if stored is not None else None)
    credentials = Credentials(server_url=url.origin, agent_url=registered.agent_url,
                              host_id=registered.host_id, access_key=registered.access_key,
                              secret_key=registered.secret_key, agent_ip=agent_ip,
                              labels=labels)
    state.save(credentials)
    log.info("registered with %s as host %s", url.origin, registered.host_id)
    return credentials


async def run(config: AgentConfig) -> None:
    state = StateDir(config.state_dir)
    state.ensure()
    credentials = await obtain_credentials(config, state)
    set_host(credentials.host_id)
    if config.register_only:
        return
    labels = config.labels if config.labels is not None else credentials.labels
    runtime = DockerRuntime.from_env(config.docker_env)
    network = NetworkManager(Overlay(SubprocessRunner(config.docker_env)))
    # The responder binds the address the managed network puts on its bridge, once it is there.
    dns = DnsManager(network)
    connection: AgentConnection | None = None

    async def report_health(results: list[HealthResult]) -> None:
        if connection is not None:
            await connection.report(protocol.HealthReport(results=[r.dump() for r in results]))

    async def report_lb(results: list[LbResult]) -> None:
        if connection is not None:
            await connection.report(protocol.LbReport(results=[r.dump() for r in results]))

    health = HealthChecker(report_health)
    # Each balancer's HAProxy outlives the agent; the next one adopts it.
    lb = LbManager(config.state_dir / "lb", report_lb, haproxy=config.haproxy)
    instructions = set(HANDLERS)
    if shutil.which(config.haproxy) is None:
        # Not offered, so the server places no balancer here.
        instructions.discard("lb.apply")
        log.warning("lb: no HAProxy binary %r: this host runs no load balancer until it is "
                    "installed (apt-get install haproxy)", config.haproxy)
    try:
        facts = FactsSource(runtime, labels, config.agent_ip or credentials.agent_ip,
                            server_url=credentials.server_url,  # else detected
                            instructions=instructions)
        dispatcher = Dispatcher(HANDLERS, runtime, facts, streaming=STREAMING,
                                network=network, dns=dns, health=health, lb=lb)
        connection = AgentConnection(credentials, facts, dispatcher, runtime)
        # A new session's server knows nothing yet: the next apply reports every state.
        connection.on_session(health.reconnected)
        connection.on_session(lb.reconnected)
        main = asyncio.current_task()
        assert main is not None
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, main.cancel)
        network.start()
        dns.start()
        health.start()
        await lb.start()
        try:
            await connection.run()
        except asyncio.CancelledError:
            log.info("stopping")
        except AgentExit as exc:
            # Only a removed host loses its overlay: after a restart or any other exit its
            # containers must stay reachable.
            if exc.host_removed:
                await dns.stop()
                await lb.stop_all()
                await network.teardown()
            raise
    finally:
        await health.stop()
        await lb.stop()
        await dns.stop()
        await network.stop()
        await asyncio.to_thread(runtime.close)


def _setup_logging(kind: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(kind))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The websockets library logs each retry at INFO with its own wording; ours says it better.
    logging.getLogger("websockets").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    _setup_logging(args.log_format, args.log_level)
    try:
        config = read_config(args, os.environ)
        asyncio.run(run(config))
    except ValueError as exc:
        print(f"corral-agent: {exc}", file=sys.stderr)
        sys.exit(2)
    except (RegistrationError, StateError, AgentExit) as exc:
        log.error("%s", exc)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
