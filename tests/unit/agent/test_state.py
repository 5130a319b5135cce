"""The agent's state dir: a stable private host key, private credentials, clear errors."""

from __future__ import annotations

import json
import stat
from dataclasses import asdict
from pathlib import Path

import pytest

from agent.state import CREDENTIALS_FILE, HOST_KEY_FILE, Credentials, StateDir, StateError

SECRET = "s3cretValueThatMustNotPrint0123456789abc"


def credentials(**overrides: object) -> Credentials:
    values: dict[str, object] = {
        "server_url": "http://corral:8080", "agent_url": "ws://corral:8080/v1/agent/connect",
        "host_id": "1h3", "access_key": "AKAKAKAKAKAKAKAKAKAK", "secret_key": SECRET,
    }
    values.update(overrides)
    return Credentials(**values)  # type: ignore[arg-type]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    state_dir = StateDir(tmp_path / "state")
    state_dir.ensure()
    return state_dir


def test_ensure_creates_a_private_dir(tmp_path: Path) -> None:
    StateDir(tmp_path / "a" / "state").ensure()
    assert mode(tmp_path / "a" / "state") == 0o700


def test_ensure_on_a_path_under_a_file_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StateError, match="cannot create state dir"):
        StateDir(tmp_path / "file" / "state").ensure()


# host key


def test_host_key_is_made_once_and_kept_private(state: StateDir) -> None:
    key = state.host_key()
    assert len(key) == 64
    int(key, 16)  # hex
    path = state.path / HOST_KEY_FILE
    assert mode(path) == 0o600
    assert path.read_text().strip() == key


def test_host_key_is_stable_across_calls_and_instances(state: StateDir) -> None:
    key = state.host_key()
    assert state.host_key() == key
    assert StateDir(state.path).host_key() == key


def test_host_keys_of_different_state_dirs_differ(tmp_path: Path) -> None:
    a, b = StateDir(tmp_path / "a"), StateDir(tmp_path / "b")
    a.ensure()
    b.ensure()
    assert a.host_key() != b.host_key()


def test_an_empty_host_key_file_is_replaced_by_a_new_key(state: StateDir) -> None:
    (state.path / HOST_KEY_FILE).write_text("\n")
    key = state.host_key()
    assert len(key) == 64
    assert state.host_key() == key


def test_host_key_in_a_missing_dir_is_a_state_error_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(StateError, match=HOST_KEY_FILE):
        StateDir(tmp_path / "absent").host_key()


# credentials


def test_load_without_saved_credentials_is_none(state: StateDir) -> None:
    assert state.load() is None


@pytest.mark.parametrize("saved", [
    credentials(),
    credentials(agent_ip="192.168.1.10", labels={"zone": "eu-1", "disk": "ssd"}),
])
def test_credentials_round_trip_through_a_private_file(state: StateDir,
                                                       saved: Credentials) -> None:
    state.save(saved)
    assert state.load() == saved
    assert mode(state.path / CREDENTIALS_FILE) == 0o600


def test_saving_again_replaces_the_credentials_and_keeps_them_private(
        state: StateDir) -> None:
    path = state.path / CREDENTIALS_FILE
    state.save(credentials())
    path.chmod(0o644)
    state.save(credentials(host_id="1h9"))
    loaded = state.load()
    assert loaded is not None
    assert loaded.host_id == "1h9"
    assert mode(path) == 0o600
    assert sorted(p.name for p in state.path.iterdir()) == [CREDENTIALS_FILE]


@pytest.mark.parametrize("text", [
    "{not json",
    "",
    "[]",
    "null",
    '"credentials"',
    json.dumps({"server_url": "http://corral:8080"}),                 # fields missing
    json.dumps({**asdict(credentials()), "extra": 1}),              # an unknown field
])
def test_damaged_credentials_are_a_state_error_saying_what_to_do(state: StateDir,
                                                                 text: str) -> None:
    (state.path / CREDENTIALS_FILE).write_text(text)
    with pytest.raises(StateError) as caught:
        state.load()
    message = str(caught.value)
    assert CREDENTIALS_FILE in message
    assert "damaged" in message
    assert "register again" in message


def test_repr_of_credentials_hides_the_secret_key() -> None:
    shown = repr(credentials())
    assert SECRET not in shown
    assert "AKAKAKAKAKAKAKAKAKAK" in shown  # the access key is fine to show
    assert SECRET not in str(credentials())
