"""The pure plan of a service's units: which to create, which to remove."""

from __future__ import annotations

from server.engine.service_units import PRIMARY, HostView, Member, Wish, plan


def member(index: int, *, state: str = "running", version: str = "v2") -> Member:
    return Member(id=index, unit=f"u{index}", index=index, launch_config=PRIMARY, state=state,
                  host_id=1, version=version)


def test_units_set_aside_keep_their_names() -> None:
    # An upgraded service scaled from 2 to 3: its old units (1 and 2, stopped for a rollback)
    # are not the plan's to judge, but their names are taken until they are removed.
    old = [member(1, state="stopped", version="v1"), member(2, state="stopped", version="v1")]
    new = [member(3), member(4)]
    made = plan(Wish(scale=3, launch_configs=(PRIMARY,), version="v2"), new,
                {1: HostView(1, active=True, lost=False)}, aside=old)
    assert [unit.index for unit in made.create] == [5]
    assert made.remove == []
