"""Fixtures shared by every test layer."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.config import Settings
from server.security import Secret
from tests.support.databases import SQLITE, backends, test_database
from tests.support.processes import ACCESS_KEY, SECRET_KEY, ServerProcess, free_port

# Layers whose tests run on every database backend; the others (end-to-end flows) on SQLite.
EVERY_BACKEND = ("tests/api/", "tests/unit/server/test_store", "tests/unit/server/engine/")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadscope``, with the end-to-end tests in one unit (tests/support/scheduling)."""
    if config.option.dist != "loadscope":
        return None
    from tests.support.scheduling import EndToEndInOrder

    return EndToEndInOrder(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker, the end-to-end tests come last (``scripts/test`` passes
    ``--no-loadscope-reorder`` to keep this order): their waits are for real processes, which
    workers busy with the fast layers would starve of CPU."""
    if hasattr(config, "workerinput"):
        from tests.support.scheduling import E2E

        items.sort(key=lambda item: item.nodeid.startswith(E2E))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "database" in metafunc.fixturenames:
        path = str(metafunc.definition.path.relative_to(metafunc.config.rootpath))
        every = any(path.startswith(prefix) for prefix in EVERY_BACKEND)
        metafunc.parametrize("database", backends() if every else [SQLITE], indirect=True)


def basic(access: str, secret: str) -> dict[str, str]:
    """Headers for HTTP Basic auth."""
    token = base64.b64encode(f"{access}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


ADMIN = basic(ACCESS_KEY, SECRET_KEY)


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": data_dir, "host": "127.0.0.1", "admin_access_key": ACCESS_KEY,
        "admin_secret_key": Secret(SECRET_KEY), "hello_timeout": 2.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def database(request: pytest.FixtureRequest) -> AsyncIterator[str | None]:
    """The ``--db`` URL of a fresh database for this test (None: SQLite in the data dir)."""
    async with test_database(request.param) as url:
        yield url


@pytest.fixture
def settings(tmp_path: Path, database: str | None) -> Settings:
    return make_settings(tmp_path / "data", database_url=database)


@pytest.fixture
async def client(settings: Settings, aiohttp_client: object) -> AsyncIterator[TestClient]:
    """An in-process server on a real localhost socket."""
    app = create_app(settings)
    test_client: TestClient = await aiohttp_client(app)  # type: ignore[operator]
    yield test_client


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A real ``corral-server`` process."""
    proc = ServerProcess(data_dir=tmp_path / "server-data", port=free_port()).start()
    try:
        yield proc
    finally:
        proc.stop()
