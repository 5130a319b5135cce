"""One balancer's HAProxy processes, as seen from the agent: the master-worker master
(started, adopted, reloaded, stopped) and the two sockets it answers on.

The master runs in the foreground (``-W -db``, so that its own and its workers' alerts go to
its log file) in a session of its own, so that stopping or restarting the agent leaves it
serving. It is started with ``os.posix_spawn`` rather than an asyncio subprocess: asyncio would
own the process for as long as it runs (and warn when the agent leaves it behind), while this
process is meant to outlive the agent. Its exit is awaited through a pidfd, which works for a
master the agent started as for one it adopted after a restart.

Both sockets take one command per connection and answer once the client has shut down its
write side (without that, the master CLI never answers).

Errors: :class:`HaproxyError`, whose ``str()`` is HAProxy's own message, trimmed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

from shared.lb_report import trim_message

CLI_TIMEOUT = 5.0
# HAProxy's environment: nothing of the agent's (a balancer's config names no variable).
_ENVIRONMENT = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG": "C"}
POLL_INTERVAL = 0.05
_FAILED = re.compile(r"\[failed:\s*(\d+)\]")


class HaproxyError(Exception):
    """HAProxy refused a config, failed to start or reload, or did not answer."""


async def check_config(binary: str, config: Path) -> None:
    """``haproxy -c -f config``; HaproxyError with HAProxy's alerts when it refuses (``-q``
    would silence them)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            binary, "-c", "-f", str(config), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    except OSError as exc:
        raise HaproxyError(f"cannot run {binary}: {exc.strerror or exc}; install HAProxy 2.6 "
                           "or later, or name it with --haproxy") from exc
    output, _ = await proc.communicate()
    if proc.returncode != 0:
        text = output.decode(errors="replace").replace(str(config), "haproxy.cfg")
        raise HaproxyError(trim_message(text) or f"haproxy -c exited with {proc.returncode}")


async def command(socket: Path, text: str, timeout: float = CLI_TIMEOUT) -> str:
    """Send one command on a HAProxy CLI socket (admin or master) and return its answer."""

    async def exchange() -> str:
        reader, writer = await asyncio.open_unix_connection(str(socket))
        try:
            writer.write(text.encode() + b"\n")
            await writer.drain()
            writer.write_eof()
            return (await reader.read()).decode(errors="replace")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    try:
        return await asyncio.wait_for(exchange(), timeout)
    except (OSError, TimeoutError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "timed out"
        raise HaproxyError(f"HAProxy did not answer {text.split()[0]!r} on {socket.name}: "
                           f"{why}") from exc


@dataclass(frozen=True)
class Worker:
    pid: int
    reloads: int


@dataclass(frozen=True)
class Processes:
    """The master CLI's ``show proc``: the master's reload and failure counts and its
    workers (the current one has 0 reloads; older ones are finishing their connections)."""

    master: int
    reloads: int
    failed: int
    workers: tuple[Worker, ...]

    @classmethod
    def parse(cls, text: str) -> Processes:
        master = reloads = failed = None
        workers: list[Worker] = []
        for line in text.splitlines():
            words = line.split()
            if len(words) < 3 or line.startswith("#") or not words[0].isdigit():
                continue
            if words[1] == "master" and words[2].isdigit():
                master, reloads = int(words[0]), int(words[2])
                match = _FAILED.search(line)
                failed = int(match.group(1)) if match else 0
            elif words[1] == "worker" and words[2].isdigit():
                workers.append(Worker(int(words[0]), int(words[2])))
        if master is None or reloads is None or failed is None:
            raise HaproxyError(f"unexpected answer to show proc: {text[:200]!r}")
        return cls(master, reloads, failed, tuple(workers))

    @property
    def current(self) -> Worker | None:
        return next((w for w in self.workers if w.reloads == 0), None)


@dataclass(frozen=True)
class Files:
    """A balancer's directory, and the files HAProxy's processes use in it. Its sockets live
    in ``sockets`` (by default the directory itself): a unix socket's path is short (HAProxy
    takes at most 97 bytes), and an agent's state directory may be deep."""

    directory: Path
    sockets: Path | None = None

    @property
    def config(self) -> Path:
        return self.directory / "haproxy.cfg"

    @property
    def pid(self) -> Path:
        return self.directory / "haproxy.pid"

    @property
    def master_socket(self) -> Path:
        return (self.sockets or self.directory) / "master.sock"

    @property
    def admin_socket(self) -> Path:
        return (self.sockets or self.directory) / "admin.sock"

    @property
    def state(self) -> Path:
        return self.directory / "servers.state"

    @property
    def log(self) -> Path:
        return self.directory / "haproxy.log"

    @property
    def applied(self) -> Path:
        return self.directory / "balancer.json"


def _reap(pid: int) -> bool:
    """Whether ``pid`` has exited (reaping it when it is the agent's own child)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == pid
    except ChildProcessError:  # not ours (adopted): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


class Master:
    """A running HAProxy master, started here or adopted."""

    def __init__(self, pid: int, files: Files) -> None:
        self.pid = pid
        self.files = files

    @classmethod
    def spawn(cls, binary: str, files: Files) -> Master:
        """Start the master in a session of its own, its output appended to the log file."""
        argv = [binary, "-W", "-db", "-f", str(files.config), "-p", str(files.pid),
                "-S", f"{files.master_socket},mode,600"]
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        path = shutil.which(binary)
        if path is None:
            raise HaproxyError(f"{binary} was not found; install HAProxy 2.6 or later, or "
                               "name it with --haproxy")
        pid = os.posix_spawn(path, argv, _ENVIRONMENT, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(files.log), flags, 0o600),
            (os.POSIX_SPAWN_DUP2, 1, 2)], setsid=True)
        return cls(pid, files)

    @classmethod
    async def adopt(cls, files: Files) -> Master | None:
        """The master a previous agent left running in ``files.directory``, if its pid file
        names a live process that answers on the master socket."""
        try:
            pid = int(files.pid.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        if pid <= 0 or _reap(pid):
            return None
        try:
            processes = Processes.parse(await command(files.master_socket, "show proc"))
        except HaproxyError:
            return None
        return cls(pid, files) if processes.master == pid else None

    def alive(self) -> bool:
        return not _reap(self.pid)

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until the master exits; whether it did within ``timeout``."""
        if not self.alive():
            return True
        try:
            fd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            return True
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await asyncio.wait_for(asyncio.shield(exited), timeout)
        except TimeoutError:
            return False
        finally:
            loop.remove_reader(fd)
            os.close(fd)
        _reap(self.pid)
        return True

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    async def processes(self) -> Processes:
        return Processes.parse(await command(self.files.master_socket, "show proc"))

    async def ready(self, timeout: float) -> Processes:
        """Wait until the master has a worker; HaproxyError with its log when it exits."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if not self.alive():
                raise HaproxyError(self.log_tail() or "haproxy exited at once")
            with contextlib.suppress(HaproxyError):
                processes = await self.processes()
                if processes.current is not None:
                    return processes
            if loop.time() > deadline:
                raise HaproxyError(f"haproxy started no worker within {timeout:g} s")
            await asyncio.sleep(POLL_INTERVAL)

    async def reload(self, timeout: float) -> Processes:
        """Reload through the master CLI and wait until a new worker runs; HaproxyError
        when the master says the reload failed (the old worker keeps serving)."""
        before = await self.processes()
        log_size = _size(self.files.log)
        with contextlib.suppress(HaproxyError):  # the master re-executes itself meanwhile
            await command(self.files.master_socket, "reload")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        old = {w.pid for w in before.workers}
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            with contextlib.suppress(HaproxyError):
                now = await self.processes()
                if now.failed > before.failed:
                    raise HaproxyError(self.log_tail(log_size) or "the reload failed")
                current = now.current
                if now.reloads > before.reloads and current is not None and \
                        current.pid not in old:
                    return now
            if not self.alive():
                raise HaproxyError(self.log_tail(log_size) or "haproxy exited during a reload")
            if loop.time() > deadline:
                raise HaproxyError(f"the reload did not finish within {timeout:g} s")

    async def stop(self, grace: float) -> None:
        """Soft-stop (no new connection, the open ones finish) for up to ``grace`` seconds,
        then terminate, then kill."""
        self.signal(signal.SIGUSR1)
        if await self.wait(grace):
            return
        self.signal(signal.SIGTERM)
        if await self.wait(5.0):
            return
        self.signal(signal.SIGKILL)
        await self.wait(5.0)

    def log_tail(self, since: int = 0) -> str:
        """HAProxy's alerts written to the log since byte ``since``, as one message."""
        try:
            with self.files.log.open("rb") as f:
                f.seek(since)
                text = f.read(256 * 1024).decode(errors="replace")
        except OSError:
            return ""
        return trim_message(text.replace(str(self.files.config), "haproxy.cfg"))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
