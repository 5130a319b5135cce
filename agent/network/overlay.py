"""The host's overlay network programming: read the state, run the plan, verify.

:class:`Overlay` is what the agent calls: ``apply(config, peers)`` whenever the server sends this
host's subnet, peer list and policy (and again after a dockerd restart: the plan recreates
whatever is missing), ``teardown()`` when the host is removed. Both serialise on one lock,
observe the host, run :mod:`agent.network.plan`'s commands in order and check that planning
again gives nothing.

Commands run through a :class:`Runner`: :class:`SubprocessRunner` executes them with
``asyncio.create_subprocess_exec`` (never a shell) in the agent's own network namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from agent.logs import log
from agent.network.config import DEVICE, NETWORK, OverlayConfig, Peer
from agent.network.errors import CommandFailed, OverlayError
from agent.network.plan import Command, plan, plan_teardown
from agent.network.state import (
    FdbEntry,
    Neighbour,
    Observed,
    Route,
    network_id,
    parse_fdb,
    parse_links,
    parse_neighbours,
    parse_network,
    parse_routes,
    parse_table,
)

COMMAND_TIMEOUT = 60.0
"""Seconds one command may take (``docker network create`` is the slow one)."""


class Runner(Protocol):
    """Runs one command; its standard output, or CommandFailed."""

    async def run(self, argv: Sequence[str]) -> str: ...


class SubprocessRunner:
    """Runs commands as child processes. ``docker`` commands are pointed at the agent's engine
    by :func:`docker_cli`, from the same DOCKER_* settings the runtime is configured with."""

    def __init__(self, docker_env: Mapping[str, str] | None = None, *,
                 timeout: float = COMMAND_TIMEOUT) -> None:
        self._docker = docker_cli(docker_env or {})
        self._timeout = timeout

    async def run(self, argv: Sequence[str]) -> str:
        full = [*self._docker, *argv[1:]] if argv[0] == "docker" else list(argv)
        try:
            process = await asyncio.create_subprocess_exec(
                *full, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
        except OSError as exc:  # not installed, not executable
            raise CommandFailed(argv, 127, f"{full[0]}: {exc.strerror}") from exc
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), self._timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise CommandFailed(argv, None, f"no answer within {self._timeout:g} s") from None
        if process.returncode != 0:
            raise CommandFailed(argv, process.returncode, stderr.decode(errors="replace"))
        return stdout.decode(errors="replace")


def docker_cli(docker_env: Mapping[str, str]) -> list[str]:
    """The ``docker`` command line that reaches the engine DOCKER_HOST, DOCKER_TLS_VERIFY and
    DOCKER_CERT_PATH name, with docker-py's meaning (as ``DockerRuntime.from_env``). The
    runtime has no network calls yet; this is the one place that would call them instead.
    ``-H`` also overrides any Docker CLI context of the agent's user."""
    argv = ["docker", "-H", docker_env.get("DOCKER_HOST") or "unix:///var/run/docker.sock"]
    certs = docker_env.get("DOCKER_CERT_PATH", "").rstrip("/")
    verify = docker_env.get("DOCKER_TLS_VERIFY", "") != ""
    if certs:
        argv += ["--tlscert", f"{certs}/cert.pem", "--tlskey", f"{certs}/key.pem"]
        argv += ["--tlsverify", "--tlscacert", f"{certs}/ca.pem"] if verify else ["--tls"]
    elif verify:
        argv.append("--tlsverify")
    return argv


async def observe(runner: Runner, *, device: str = DEVICE, network: str = NETWORK) -> Observed:
    """The host's current overlay state (the links of every interface, to find the underlay)."""
    links = parse_links(await runner.run(("ip", "-j", "-d", "addr", "show")))
    routes: tuple[Route, ...] = ()
    neighbours: tuple[Neighbour, ...] = ()
    fdb: tuple[FdbEntry, ...] = ()
    if any(link.name == device for link in links):
        routes = parse_routes(await runner.run(("ip", "-4", "-j", "route", "show", "dev",
                                                device)))
        neighbours = parse_neighbours(await runner.run(("ip", "-4", "-j", "neigh", "show",
                                                        "dev", device)))
        fdb = parse_fdb(await runner.run(("bridge", "-j", "fdb", "show", "dev", device)))
    filter_table = parse_table(await runner.run(("iptables", "-w", "-t", "filter", "-S")))
    nat_table = parse_table(await runner.run(("iptables", "-w", "-t", "nat", "-S")))
    listed = await runner.run(("docker", "network", "ls", "--no-trunc", "--format",
                               "{{json .}}"))
    found = None
    if network_id(listed, network) is not None:
        found = parse_network(await runner.run(("docker", "network", "inspect", network)))
    return Observed(links=links, routes=routes, neighbours=neighbours, fdb=fdb,
                    filter=filter_table, nat=nat_table, network=found)


class Overlay:
    """This host's overlay: applied and torn down one operation at a time."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner
        self._lock = asyncio.Lock()

    async def pending(self, config: OverlayConfig, peers: Iterable[Peer]) -> list[Command]:
        """What :meth:`apply` would run now (nothing when the host matches)."""
        return plan(config, peers, await observe(self._runner, device=config.device,
                                                 network=config.network))

    async def apply(self, config: OverlayConfig, peers: Iterable[Peer]) -> list[Command]:
        """Make the host match ``config`` with ``peers``; the commands that ran.

        Raises ValueError for impossible settings (nothing is changed then), CommandFailed for
        the first command that fails (the ones before it stay applied: applying again goes on
        from there), OverlayError if the host still differs afterwards.
        """
        peers = list(peers)
        async with self._lock:
            commands = await self.pending(config, peers)
            await self._run(commands)
            left = await self.pending(config, peers)
            if left:
                raise OverlayError("The overlay network did not converge; still to do: "
                                   + "; ".join(shlex.join(c) for c in left[:3]) + ".")
        if commands:
            log.info("overlay: %d change(s) applied for %s with %d peer(s)", len(commands),
                     config.subnet, len(peers))
        return commands

    async def teardown(self, *, device: str = DEVICE, network: str = NETWORK) -> list[Command]:
        """Remove the Docker network, Corral's iptables chains and the VXLAN device; the
        commands that ran.

        A failing command does not stop the others: Docker refuses to remove a network that
        containers still use, and the chains and the device must go all the same. The first
        failure is raised once every command has been tried.
        """
        done: list[Command] = []
        failures: list[CommandFailed] = []
        async with self._lock:
            observed = await observe(self._runner, device=device, network=network)
            for command in plan_teardown(observed, device=device, network=network):
                try:
                    await self._run([command])
                except CommandFailed as exc:
                    failures.append(exc)
                else:
                    done.append(command)
        if done:
            log.info("overlay: removed (%d command(s)): %s", len(done),
                     "; ".join(shlex.join(c) for c in done))
        if failures:
            raise failures[0]
        return done

    async def _run(self, commands: list[Command]) -> None:
        for command in commands:
            log.debug("overlay: %s", shlex.join(command))
            await self._runner.run(command)
