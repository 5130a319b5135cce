"""Real ``corral-server`` and ``corral-agent`` processes for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.support.timing import seconds, wait_for

ACCESS_KEY = "TESTADMINACCESSKEY01"
SECRET_KEY = "test-admin-secret-key-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """A ``corral-server`` on ``data_dir`` and ``port``; restartable on the same data.

    ``database_url`` goes to ``--db`` (None: SQLite in the data dir). It holds a password, so
    it is left out of the repr that pytest prints in a failure report.
    """

    data_dir: Path
    port: int
    host: str = "127.0.0.1"
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    database_url: str | None = field(default=None, repr=False)

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.origin}/v1"

    def start(self) -> ServerProcess:
        env = {**os.environ, "CORRAL_ADMIN_ACCESS_KEY": ACCESS_KEY,
               "CORRAL_ADMIN_SECRET_KEY": SECRET_KEY, **self.extra_env}
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        db = ["--db", self.database_url] if self.database_url is not None else []
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from server.cli import main; main()", "--data-dir",
             str(self.data_dir), "--host", self.host, "--port", str(self.port),
             "--public-url", self.origin, *db],
            env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()

        def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log()}")
            try:
                return requests.get(f"{self.origin}/healthz", timeout=1).ok
            except requests.RequestException:
                return False

        wait_for(healthy, 20, "the server to answer")
        return self

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=seconds(15))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("server did not stop within 15 s of SIGTERM") from None

    def kill(self) -> None:
        """SIGKILL the server, as a crash would: nothing is flushed or closed on the way out."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGKILL)
        try:
            self.proc.wait(timeout=seconds(10))
        except subprocess.TimeoutExpired:
            # The message of TimeoutExpired holds the command line, and so --db's password.
            raise AssertionError("the server did not die within 10 s of SIGKILL") from None

    def restart_after_kill(self) -> ServerProcess:
        """Kill the server (if running) and start it again on the same data dir, port and
        database, as a supervisor would after a crash."""
        self.kill()
        return self.start()

    def api(self, method: str, path: str, **kw: Any) -> requests.Response:
        url = path if path.startswith("http") else f"{self.url}{path}"
        return requests.request(method, url, auth=(ACCESS_KEY, SECRET_KEY), timeout=10, **kw)

    def registration_url(self) -> str:
        tokens = self.api("GET", "/registrationtokens").json()["data"]
        active = [t for t in tokens if t["state"] == "active"]
        assert active, "the Default environment has no registration token"
        return str(active[0]["registrationUrl"])

    def hosts(self) -> list[dict[str, Any]]:
        return list(self.api("GET", "/hosts").json()["data"])

    def get_host(self, host_id: str) -> dict[str, Any]:
        return dict(self.api("GET", f"/hosts/{host_id}").json())


def agent_command(url: str | None, state_dir: Path, *extra: str) -> list[str]:
    args = [sys.executable, "-c", "from agent.cli import main; main()"]
    if url is not None:
        args.append(url)
    return [*args, "--state-dir", str(state_dir), *extra]


def start_agent(url: str | None, state_dir: Path, *extra: str, log_path: Path,
                env: dict[str, str] | None = None,
                prefix: list[str] | None = None) -> subprocess.Popen[bytes]:
    log = log_path.open("ab")
    try:
        return subprocess.Popen([*(prefix or []), *agent_command(url, state_dir, *extra)],
                                env={**os.environ, **(env or {})}, stdout=log,
                                stderr=subprocess.STDOUT)
    finally:
        log.close()


def stop_balancers(directory: Path) -> None:
    """Stop the HAProxy masters agents under ``directory`` started: they outlive their agent
    on purpose (an agent restart adopts them), so a test stops them itself."""
    for pid_file in directory.glob("**/lb/**/haproxy.pid"):
        try:
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError, IndexError):
            continue
        deadline = time.monotonic() + seconds(10)
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=seconds(10))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
