"""No admin lockout, on a real ``corral-server`` process restarted on the same data.

Removing or deactivating the last active admin account is refused (it would leave every
request a 401 for ever), and the starts after the attempt serve with the same admin, its
environment-given key and one Default environment: start-up is one idempotent transaction.
A store left without an active admin (by a server from before this rule) gets a new admin
on the next start, and the key given in the environment works again.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.store.urls import SQLITE_FILE
from tests.support.processes import ACCESS_KEY, ServerProcess, free_port


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(data_dir=tmp_path / "data", port=free_port()).start()
    try:
        yield proc
    finally:
        proc.stop()


def listed(server: ServerProcess, path: str) -> list[dict[str, Any]]:
    resp = server.api("GET", path)
    assert resp.status_code == 200, resp.text
    return list(resp.json()["data"])


def bootstrapped(server: ServerProcess) -> tuple[str, str]:
    """The one active admin and the one Default environment, with the env key the admin's."""
    admins = listed(server, "/accounts?kind=admin&state=active")
    assert len(admins) == 1, admins
    defaults = listed(server, "/projects?name=Default")
    assert len(defaults) == 1, defaults
    keys = listed(server, f"/apikeys?publicValue={ACCESS_KEY}")
    assert [(k["accountId"], k["state"]) for k in keys] == [(admins[0]["id"], "active")]
    return str(admins[0]["id"]), str(defaults[0]["id"])


def restart(server: ServerProcess) -> None:
    assert server.stop() == 0, server.log()
    server.start()  # fails the test if the server exits instead of serving


def test_the_last_admin_cannot_lock_everyone_out_across_two_restarts(
        server: ServerProcess) -> None:
    admin, default = bootstrapped(server)
    for method, path in (("POST", f"/accounts/{admin}?action=remove"),
                         ("POST", f"/accounts/{admin}?action=deactivate"),
                         ("DELETE", f"/accounts/{admin}")):
        refused = server.api(method, path)
        assert refused.status_code == 422, refused.text
        assert refused.json()["code"] == "ActionNotAvailable"
        assert "last active admin" in refused.json()["message"]
    assert server.api("GET", "/projects").status_code == 200
    for _ in range(2):
        restart(server)
        assert bootstrapped(server) == (admin, default)


def lose_every_admin(data_dir: Path) -> None:
    """What a server from before the rule let an admin do: remove the last admin account."""
    with contextlib.closing(sqlite3.connect(data_dir / SQLITE_FILE)) as db, db:
        db.execute("UPDATE resource SET state = 'removed', removed = ? "
                   "WHERE type = 'account' AND kind = 'admin'", (int(time.time() * 1000),))


def test_a_store_left_without_an_admin_gets_one_and_the_env_key_works_again(
        server: ServerProcess) -> None:
    old_admin, default = bootstrapped(server)
    assert server.stop() == 0
    lose_every_admin(server.data_dir)
    server.start()
    admin, again = bootstrapped(server)
    assert admin != old_admin and again == default  # the old Default environment is kept
    tokens = listed(server, f"/registrationtokens?accountId={default}&state=active")
    assert tokens, "the kept Default environment has no registration token"
    restart(server)
    assert bootstrapped(server) == (admin, default)
