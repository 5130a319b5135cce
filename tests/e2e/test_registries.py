"""Pulls from a private registry with authentication, through registry credentials."""

from __future__ import annotations

import sqlite3

import gdapi
import pytest

from tests.e2e.cluster import SLEEPER, Cluster, docker_state
from tests.e2e.conftest import PrivateRegistry


def test_private_registry_pull_needs_and_uses_a_registry_credential(
        cluster: Cluster, private_registry: PrivateRegistry) -> None:
    api = cluster.client()
    refused = api.create_container(imageUuid=f"docker:{private_registry.image}",
                                   command=SLEEPER, labels=cluster.labels())
    with pytest.raises(gdapi.ClientApiError) as error:
        api.wait_success(refused, timeout=60)
    assert "no basic auth credentials" in str(error.value) or \
        "unauthorized" in str(error.value).lower()
    assert api.reload(refused).state == "error"

    registry = api.create_registry(serverAddress=f"http://{private_registry.address}/")
    assert registry.serverAddress == private_registry.address
    credential = api.create_registry_credential(
        registryId=registry.id, publicValue=private_registry.username,
        secretValue=private_registry.password)
    assert credential.secretValue is None
    assert api.reload(credential).secretValue is None

    pulled = api.wait_success(api.create_container(
        imageUuid=f"docker:{private_registry.image}", command=SLEEPER,
        labels=cluster.labels()), timeout=120)
    assert pulled.state == "running"
    assert docker_state(pulled.uuid)["Config"]["Image"] == private_registry.image

    # The secret is encrypted at rest: the database never holds it in clear.
    db = sqlite3.connect(f"file:{cluster.server.data_dir / 'corral.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT data FROM resource WHERE type = 'registryCredential'").fetchall()
    finally:
        db.close()
    assert rows and all(private_registry.password not in row[0] for row in rows)
    for path in cluster.server.data_dir.glob("corral.db*"):
        assert private_registry.password.encode() not in path.read_bytes()
