"""The real Rancher Python clients (``cattle`` 0.5.4 on ``gdapi-python`` 0.5.3) against a
real server process, used unchanged. On Python 3 their RestObject is used through ``.data``,
iteration and attributes only (its list helpers are Python 2 only)."""

from __future__ import annotations

import cattle
import gdapi
import pytest

from tests.support.processes import ACCESS_KEY, SECRET_KEY, ServerProcess


@pytest.fixture
def api(server: ServerProcess) -> cattle.Client:
    return cattle.Client(url=f"{server.url}/schemas", access_key=ACCESS_KEY,
                         secret_key=SECRET_KEY, headers={"Accept": "application/json"})


def test_client_discovers_schemas_and_binds_methods(api: cattle.Client) -> None:
    types = api.schema.types
    assert {"host", "project", "apiKey", "registrationToken", "account"} <= set(types)
    assert hasattr(api, "list_host") and hasattr(api, "by_id_host")
    assert not hasattr(api, "create_host")  # hosts come from registration
    assert hasattr(api, "create_registration_token")
    assert types["host"].resourceFields.state.type == "enum"


def test_client_built_from_the_version_root_too(server: ServerProcess) -> None:
    api = cattle.Client(url=server.url, access_key=ACCESS_KEY, secret_key=SECRET_KEY,
                        headers={"Accept": "application/json"})
    assert "host" in api.schema.types


def test_client_lists_reads_and_follows_links(api: cattle.Client) -> None:
    assert list(api.list_host()) == []
    projects = api.list_project()
    default = projects.data[0]
    assert default.name == "Default" and default.id.startswith("1a")
    again = api.by_id_project(default.id)
    assert again.uuid == default.uuid
    assert api.reload(again).name == "Default"
    tokens = api.list_registration_token()
    token = tokens.data[0]
    account = token.account()  # a link, followed by GET
    assert account.id == default.id
    assert api.by_id_host("1h999") is None


def test_client_creates_updates_acts_and_waits(api: cattle.Client) -> None:
    project = api.create_project(name="Staging", description="for tests")
    assert project.state == "active" and project.transitioning == "no"
    project = api.update(project, description="changed")
    assert project.description == "changed"
    project = api.update_by_id_project(project.id, name="Staging 2")
    assert project.name == "Staging 2"
    project = api.wait_success(project.deactivate())
    assert project.state == "inactive"
    removed = api.wait_success(api.delete(project))
    assert removed.state == "removed"
    assert api.by_id_project(project.id).state == "removed"


def test_client_filters_and_pages(api: cattle.Client) -> None:
    for i in range(5):
        api.create_api_key(name=f"bulk-{i}")
    page = api.list_api_key(name_prefix="bulk-", limit=2)
    names = [k.name for k in page]
    while hasattr(page.pagination, "next") and page.pagination.next:
        page = page.next()
        names += [k.name for k in page]
    assert names == [f"bulk-{i}" for i in range(5)]
    assert [k.name for k in api.list_api_key(name="bulk-3")] == ["bulk-3"]


def test_client_sees_validation_errors_with_codes(api: cattle.Client) -> None:
    with pytest.raises(gdapi.ApiError) as error:
        api.create_project()
    assert error.value.error.status == 422
    assert error.value.error.code == "MissingRequired"
    assert error.value.error.fieldName == "name"


def test_wrong_key_gets_a_401_json_error(server: ServerProcess) -> None:
    with pytest.raises(gdapi.ApiError) as error:
        cattle.Client(url=f"{server.url}/schemas", access_key=ACCESS_KEY, secret_key="wrong",
                      headers={"Accept": "application/json"})
    assert error.value.error.status == 401
    assert error.value.error.code == "Unauthorized"


def test_project_scoped_client_by_url(api: cattle.Client, server: ServerProcess) -> None:
    staging = api.create_project(name="Scoped")
    scoped = cattle.Client(url=f"{server.url}/projects/{staging.id}", access_key=ACCESS_KEY,
                           secret_key=SECRET_KEY, headers={"Accept": "application/json"})
    token = scoped.create_registration_token()
    assert token.accountId == staging.id
    assert [t.id for t in scoped.list_registration_token()] == [token.id]
    # As in Rancher, the admin with no environment in scope lists across environments.
    assert token.id in [t.id for t in api.list_registration_token()]


def test_project_scoped_client_by_header(api: cattle.Client, server: ServerProcess) -> None:
    staging = api.create_project(name="Header")
    scoped = cattle.Client(url=f"{server.url}/schemas", access_key=ACCESS_KEY,
                           secret_key=SECRET_KEY,
                           headers={"Accept": "application/json",
                                    "X-API-Project-Id": staging.id})
    token = scoped.create_registration_token()
    assert token.accountId == staging.id
