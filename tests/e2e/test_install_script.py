"""The install script a new host pipes into sh: it installs the agent from the server itself
(a wheel the server builds of its own code) into a fresh virtualenv, registers, and runs it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support.processes import ServerProcess, stop
from tests.support.timing import seconds, wait_for


def test_curl_pipe_sh_installs_registers_and_runs_the_agent(
        docker_engine: None, server: ServerProcess, tmp_path: Path) -> None:
    token = server.api("GET", "/registrationtokens").json()["data"][0]
    assert token["installCommand"] == f"curl -fsSL {token['registrationUrl']} | sudo sh"
    env = {**os.environ, "CORRAL_AGENT_HOME": str(tmp_path / "venv"),
           "CORRAL_STATE_DIR": str(tmp_path / "state"), "CORRAL_BIN_DIR": str(tmp_path / "bin"),
           "CORRAL_NO_SYSTEMD": "1"}
    env.pop("VIRTUAL_ENV", None)
    log = (tmp_path / "install.log").open("wb")
    proc = subprocess.Popen(["sh", "-c", f"curl -fsSL {token['registrationUrl']} | sh"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        host = wait_for(lambda: [h for h in server.hosts() if h["state"] == "active"], 240,
                        "the installed agent to make the host active")[0]
        assert host["agentState"] == "active"
        assert (tmp_path / "bin" / "corral-agent").resolve() == \
            tmp_path / "venv" / "bin" / "corral-agent"
        assert (tmp_path / "state" / "credentials.json").stat().st_mode & 0o077 == 0
    finally:
        stop(proc)
        log.close()
    output = (tmp_path / "install.log").read_text()
    assert "running the agent in the foreground" in output, output


def test_install_script_with_a_bad_token_runs_nothing(server: ServerProcess,
                                                         tmp_path: Path) -> None:
    result = subprocess.run(["sh", "-c", f"curl -fsSL {server.url}/scripts/nope | sh"],
                            capture_output=True, text=True, timeout=seconds(30))
    assert "401" in result.stderr  # curl -f refuses the error body; sh gets nothing to run
    assert server.hosts() == []
