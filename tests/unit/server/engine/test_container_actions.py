"""Container states and actions as Rancher 1.6 has them: the states a container passes
(``requested``, ``updating-*``, ``migrating``, ``erroring``), the running container's actions,
each carried out, logs wherever the container exists, and a running container stopped before
it is removed."""

from __future__ import annotations

from itertools import groupby
from typing import Any

import pytest

from server import operations
from server.api.errors import Conflict
from server.resources.containers import CONTAINER
from server.store import Change, Condition, Query, Record
from shared.errors import InstructionError
from tests.unit.server.engine.harness import SLEEPER, Engine

RANCHER_RUNNING_ACTIONS = {"migrate", "restart", "stop", "update", "execute", "logs", "proxy",
                           "addlabel", "removelabel", "setlabels"}


async def states_since(engine: Engine, seq: int, record: Record) -> list[str]:
    """The states ``record`` went through after change ``seq``, each once in a row."""
    changes: list[Change] = []
    while batch := await engine.store.changes_after(seq, 500):
        changes.extend(batch)
        seq = batch[-1].seq
    return [state for state, _ in groupby(c.record.state for c in changes
                                          if c.record.id == record.id)]


async def running(engine: Engine, **body: Any) -> Record:
    container = await engine.container(startOnCreate=True, **body)
    assert container.state == "running"
    return container


def test_the_state_options_include_rancher_s_requested_migrating_updating_and_erroring() -> None:
    options = CONTAINER.all_fields["state"].options or ()
    assert {"requested", "migrating", "updating-running", "updating-stopped",
            "erroring"} <= set(options)


async def test_a_new_container_is_requested_then_creating_then_starting(engine: Engine) -> None:
    await engine.add_host()
    before = await engine.store.last_seq()

    record = await operations.create(engine.caller, "container",
                                     {**SLEEPER, "startOnCreate": True})
    assert (record.state, record.transitioning) == ("requested", "yes")
    await engine.settle()

    assert await states_since(engine, before, record) == [
        "requested", "creating", "starting", "running"]


async def test_a_running_container_offers_rancher_s_actions(engine: Engine) -> None:
    await engine.add_host()
    container = await running(engine)
    rtype = engine.services.types.get("container")
    assert rtype is not None

    assert set(rtype.available_actions(container)) == RANCHER_RUNNING_ACTIONS


@pytest.mark.parametrize(("start", "passing"), [
    (True, "updating-running"), (False, "updating-stopped")])
async def test_update_passes_updating_and_rereads_the_container_from_its_host(
        engine: Engine, start: bool, passing: str) -> None:
    await engine.add_host()
    container = await engine.container(startOnCreate=start)
    resting = container.state
    before = await engine.store.last_seq()

    asked = await engine.act(container, "update")
    assert (asked.state, asked.transitioning) == (passing, "yes")
    await engine.settle()

    assert await states_since(engine, before, container) == [passing, resting]
    assert engine.hub.calls_about(container.uuid)[-1] == "instance.inspect"
    assert (await engine.get(container)).transitioning == "no"


async def test_a_failing_create_passes_erroring_stops_the_container_and_ends_in_error(
        engine: Engine) -> None:
    await engine.add_host()
    engine.hub.fail("instance.start", InstructionError("the entry point is missing"))
    before = await engine.store.last_seq()

    record = await operations.create(engine.caller, "container",
                                     {**SLEEPER, "startOnCreate": True})
    await engine.settle()

    failed = await engine.get(record)
    assert (failed.state, failed.transitioning, failed.transitioning_message) == (
        "error", "error", "the entry point is missing")
    assert await states_since(engine, before, record) == [
        "requested", "creating", "starting", "erroring", "error"]
    assert engine.hub.calls_about(record.uuid) == [
        "instance.create", "instance.start", "instance.stop"]


async def test_addlabel_and_removelabel_change_the_labels_as_setlabels_does(
        engine: Engine) -> None:
    await engine.add_host()
    container = await running(engine, labels={"keep": "1", "drop": "2"})

    await engine.act(container, "addlabel", {"key": "tier", "value": "web"})
    assert own_labels(await engine.get(container)) == {"keep": "1", "drop": "2", "tier": "web"}
    await engine.act(container, "removelabel", {"key": "drop"})
    assert own_labels(await engine.get(container)) == {"keep": "1", "tier": "web"}
    await engine.act(container, "setlabels", {"labels": {"only": "this"}})
    assert own_labels(await engine.get(container)) == {"only": "this"}


def own_labels(record: Record) -> dict[str, str]:
    """The user's labels, without those Corral sets itself (``io.rancher.*``)."""
    return {k: v for k, v in (record.data.get("labels") or {}).items()
            if not k.startswith("io.rancher.")}


async def test_removelabel_needs_the_key(engine: Engine) -> None:
    await engine.add_host()
    container = await running(engine)

    with pytest.raises(Exception) as caught:
        await operations.act(engine.caller, container, "removelabel", {})

    assert (getattr(caught.value, "status", None), getattr(caught.value, "code", None)) == (
        422, "MissingRequired")


async def test_proxy_answers_a_host_access_url_and_token_for_the_container_port(
        engine: Engine) -> None:
    host = await engine.add_host()
    container = await running(engine)

    access = await operations.act(engine.caller, container, "proxy",
                                  {"port": 8080, "scheme": "http"})

    assert isinstance(access, dict) and access["type"] == "hostAccess"
    token = access["token"]
    assert access["url"].startswith("http") and \
        access["url"].endswith(f"/v1/container-proxy/{token}/")
    ticket = engine.services.streams.lookup(token)
    assert ticket is not None
    assert (ticket.host_id, ticket.instruction, ticket.data) == (
        host.id, "instance.proxy", {"uuid": container.uuid, "port": 8080, "scheme": "http"})
    assert engine.services.streams.lookup(token) is not None  # good for many requests


async def test_the_proxy_labels_choose_the_port_and_scheme_as_in_rancher(
        engine: Engine) -> None:
    await engine.add_host()
    container = await running(engine, labels={"io.rancher.websocket.proxy.port": "9000",
                                              "io.rancher.websocket.proxy.scheme": "https"})

    access = await operations.act(engine.caller, container, "proxy", {"port": 80})

    assert isinstance(access, dict)
    ticket = engine.services.streams.lookup(access["token"])
    assert ticket is not None and (ticket.data["port"], ticket.data["scheme"]) == (
        9000, "https")


async def test_migrate_moves_a_running_container_to_the_other_host(engine: Engine) -> None:
    first = await engine.add_host("host-1")
    container = await running(engine, requestedHostId=f"1h{first.id}")
    await engine.store.update(container.id, {}, {"requestedHostId": None})
    second = await engine.add_host("host-2")
    before = await engine.store.last_seq()

    asked = await engine.act(container, "migrate")
    assert (asked.state, asked.transitioning) == ("migrating", "yes")
    await engine.settle()

    moved = await engine.get(container)
    assert (moved.state, moved.transitioning, moved.data["hostId"]) == (
        "running", "no", second.id)
    assert await states_since(engine, before, container) == ["migrating", "running"]
    assert [(c.name, c.host_id) for c in engine.hub.calls if c.uuid == container.uuid][-4:] == [
        ("instance.stop", first.id), ("instance.remove", first.id),
        ("instance.create", second.id), ("instance.start", second.id)]
    assert container.uuid not in engine.hub.containers[first.id]
    assert engine.hub.containers[second.id][container.uuid].status == "running"
    assert moved.data["externalId"] == engine.hub.containers[second.id][container.uuid].docker_id
    # On the managed network it takes an address of its new host's subnet and gives up the
    # one it had.
    sent = engine.hub.calls_named("instance.create")[-1].data["container"]
    assert sent["ipAddress"] == moved.data["spec"]["ipAddress"] != \
        container.data["spec"]["ipAddress"]
    leases = await engine.store.list(Query(types=["ipLease"], conditions=[
        Condition("kind", "eq", "address"), Condition("removed", "null")]))
    assert [(lease.name, lease.data["hostId"]) for lease in leases] == [
        (moved.data["spec"]["ipAddress"], second.id)]


async def test_migrate_with_one_host_makes_the_container_anew_there(engine: Engine) -> None:
    host = await engine.add_host()
    container = await running(engine, labels={"before": "1"})
    await engine.act(container, "addlabel", {"key": "after", "value": "2"})

    await engine.act(container, "migrate")
    await engine.settle()

    again = await engine.get(container)
    assert (again.state, again.data["hostId"]) == ("running", host.id)
    assert engine.hub.calls_about(container.uuid)[-4:] == [
        "instance.stop", "instance.remove", "instance.create", "instance.start"]
    # Made anew from the container's labels as they are now.
    made = engine.hub.containers[host.id][container.uuid]
    assert {"before": "1", "after": "2"}.items() <= made.labels.items()


async def test_logs_are_available_while_the_container_stops(engine: Engine) -> None:
    await engine.add_host()
    container = await running(engine)
    gate = engine.hub.hold("instance.stop")
    stopping = await engine.act(container, "stop")
    await engine.hub.arrived("instance.stop")
    assert stopping.state == "stopping"

    access = await operations.act(engine.caller, await engine.get(stopping), "logs",
                                  {"follow": False})

    assert isinstance(access, dict) and access["type"] == "hostAccess" and access["token"]
    gate.set()
    await engine.settle()


@pytest.mark.parametrize("how", ["delete", "action"])
async def test_removing_a_running_container_stops_it_first(engine: Engine, how: str) -> None:
    await engine.add_host()
    container = await running(engine)
    before = await engine.store.last_seq()

    if how == "delete":
        asked = await operations.remove(engine.caller, container)
    else:
        result = await operations.act(engine.caller, container, "remove")
        assert isinstance(result, Record)
        asked = result
    assert (asked.state, asked.transitioning) == ("stopping", "yes")
    await engine.settle()

    removed = await engine.get(container)
    assert (removed.state, removed.transitioning) == ("removed", "no")
    assert removed.removed is not None
    assert await states_since(engine, before, container) == ["stopping", "removing", "removed"]
    assert engine.hub.calls_about(container.uuid)[-2:] == ["instance.stop", "instance.remove"]


async def test_a_stop_after_a_failed_stop_and_remove_does_not_remove(engine: Engine) -> None:
    await engine.add_host()
    container = await running(engine)
    engine.hub.fail("instance.stop", InstructionError("docker is busy"))

    await operations.remove(engine.caller, container)
    await engine.settle()
    failed = await engine.get(container)
    assert (failed.state, failed.transitioning) == ("running", "error")

    await engine.act(failed, "stop")
    await engine.settle()
    assert (await engine.get(container)).state == "stopped"


async def test_an_action_holds_through_background_writes_but_not_through_a_new_state(
        engine: Engine) -> None:
    """A client acts on the record it read; Corral's own writes since (facts, health, network
    versions) must not turn that into a 409, a state change must."""
    await engine.add_host()
    container = await running(engine)
    read = await engine.get(container)
    await engine.store.update(container.id, {}, {"healthCheckedAt": 1})
    stopping = await operations.act(engine.caller, read, "stop")
    assert isinstance(stopping, Record) and stopping.state == "stopping"
    await engine.settle()
    with pytest.raises(Conflict, match="is stopped now, no longer "):
        await operations.act(engine.caller, read, "stop")


async def test_an_action_holds_when_the_record_moved_to_another_state_it_is_valid_in(
        engine: Engine) -> None:
    """Read while ``running``, acted on once an operation moved it on to ``restarting``:
    ``stop`` is valid there too, so it is no conflict."""
    await engine.add_host()
    container = await running(engine)
    read = await engine.get(container)
    await engine.store.update(container.id, {"state": "restarting"})
    stopping = await operations.act(engine.caller, read, "stop")
    assert isinstance(stopping, Record) and stopping.state == "stopping"
