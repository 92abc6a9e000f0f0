"""Unit tests for srv/salt/_utils/pigeon_steps.py (the steps of an action, named once)."""

import pytest

from srv_modules import load

steps_mod = load("_utils/pigeon_steps.py", "pigeon_steps_under_test")


def plan(action, **values):
    return dict({"action": action, "noop": False, "stop": [], "converge_loadbal": False}, **values)


def names(p):
    return [s["step"] for s in steps_mod.steps(p)]


@pytest.mark.parametrize("p, expected", [
    (plan("release", converge_loadbal=True), ["loadbal", "containers", "routes", "cleanup"]),
    (plan("release"), ["containers", "routes", "cleanup"]),
    (plan("release", keep_failed=True), ["containers", "routes"]),
    (plan("release", noop=True), []),
    (plan("activate"), ["routes"]),
    (plan("activate", stop=[{"version": "1.0", "state": "inactive"}]), ["routes", "remove 1.0"]),
    (plan("activate", noop=True), []),
    (plan("rollback"), ["routes"]),
    (plan("deactivate", stop=[{"version": "2.0", "state": "release"}]), ["routes", "drain 2.0", "remove 2.0"]),
    (plan("deactivate", stop=[{"version": "1.0", "state": "active"}]), ["routes", "drain 1.0", "remove 1.0"]),
    (plan("deactivate", stop=[{"version": "1.0", "state": "inactive"}]), ["routes", "remove 1.0"]),
    # not in the registry: only what an interrupted action left is removed
    (plan("deactivate", noop=True, stop=[{"version": "9.9", "state": None}]), ["remove 9.9"]),
])
def test_the_steps_of_each_plan(p, expected):
    assert names(p) == expected


def test_state_ids_are_made_here_and_only_here():
    table = steps_mod.steps(plan("deactivate", stop=[{"version": "1.0-rc.2", "state": "release"}]))
    assert [(s["step"], s["id"], s["kind"]) for s in table] == [
        ("routes", "pigeon-deactivate-routes", "routes"),
        ("drain 1.0-rc.2", "pigeon-deactivate-drain-1.0-rc.2", "drain"),
        ("remove 1.0-rc.2", "pigeon-deactivate-remove-1.0-rc.2", "remove")]
    assert table[1]["version"] == "1.0-rc.2" and all(s["does"] for s in table)


def test_a_renamed_id_format_renames_every_id(monkeypatch):
    monkeypatch.setattr(steps_mod, "ID_FORMAT", "{action}/{step}")
    assert [s["id"] for s in steps_mod.steps(plan("release"))] == [
        "release/containers", "release/routes", "release/cleanup"]


@pytest.mark.parametrize("p, cancellable", [
    ({"action": "release", "converge_loadbal": True}, {"loadbal": True, "containers": True, "routes": True,
                                                       "cleanup": False}),
    ({"action": "activate", "stop": [{"version": "1.0", "state": "inactive"}]},
     {"routes": True, "remove 1.0": False}),
    ({"action": "deactivate", "stop": [{"version": "1.0", "state": "release"}]},
     {"routes": True, "drain 1.0": False, "remove 1.0": False}),
    ({"action": "deactivate", "noop": True, "stop": [{"version": "9", "state": None}]}, {"remove 9": False}),
    ({"action": "repair", "repair": [{"version": "1.0"}, {"version": "2.0"}]},
     {"loadbal": True, "repair 1.0": True, "repair 2.0": True, "routes": True}),
])
def test_a_cancel_stops_only_before_the_routes_step(p, cancellable):
    """Up to the routes step an action can stop and leave the registry true; after it, not."""
    assert {s["step"]: s["cancellable"] for s in steps_mod.steps(p)} == cancellable
