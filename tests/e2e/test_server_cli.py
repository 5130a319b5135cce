"""``corral-server --db``: a database URL that is malformed or names a database that cannot be
reached stops the server at once with status 1 and one line for the operator on stderr, which
says what is wrong and never shows the password."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import free_port
from tests.support.timing import seconds

PASSWORD = "secret-pw"
UNREACHABLE = f"postgresql://corral:{PASSWORD}@127.0.0.1:1/corral"  # nothing listens on port 1


def run_server(tmp_path: Path, db: str) -> subprocess.CompletedProcess[str]:
    """``corral-server --db <db>`` on a fresh data dir, bounded in time."""
    env = {k: v for k, v in os.environ.items() if k != "CORRAL_DATABASE_URL"}
    try:
        return subprocess.run(
            [sys.executable, "-c", "from server.cli import main; main()", "--data-dir",
             str(tmp_path / "data"), "--host", "127.0.0.1", "--port", str(free_port()),
             "--db", db],
            env=env, capture_output=True, text=True, timeout=seconds(30))
    except subprocess.TimeoutExpired:
        # Not the exception itself: its message holds the command line, with the password.
        raise AssertionError("corral-server neither started nor gave up within "
                             f"{seconds(30):g} s") from None


def assert_one_line_error(result: subprocess.CompletedProcess[str], hint: str) -> None:
    assert PASSWORD not in result.stderr and PASSWORD not in result.stdout, \
        "the password was printed"
    lines = result.stderr.splitlines()
    assert result.returncode == 1, f"exit status {result.returncode}, stderr: {lines}"
    assert len(lines) == 1 and lines[0].startswith("corral-server: "), lines
    assert hint.lower() in lines[0].lower(), f"{lines[0]!r} does not mention {hint!r}"


@pytest.mark.parametrize(("db", "hint"), [
    ("not a url", "--db"),
    ("postgresql://", "database"),
    ("mysql://u:p@h/db", "mysql"),
    (f"mysql://corral:{PASSWORD}@127.0.0.1/corral", "mysql"),
    (f"postgresql://corral:{PASSWORD}@127.0.0.1:5432", "database"),
    (f"corral:{PASSWORD}@127.0.0.1/corral", "--db"),
    (f"postgresql://corral:{PASSWORD}@127.0.0.1:notaport/corral", "--db"),
], ids=["words", "no-database", "mysql", "mysql-with-password", "postgresql-no-database",
        "no-scheme", "non-numeric-port"])
def test_a_malformed_database_url_is_one_line_and_status_1(
        tmp_path: Path, db: str, hint: str) -> None:
    assert_one_line_error(run_server(tmp_path, db), hint)


def test_an_unreachable_database_is_one_line_and_status_1_without_the_password(
        tmp_path: Path) -> None:
    assert_one_line_error(run_server(tmp_path, UNREACHABLE), "127.0.0.1:1")
