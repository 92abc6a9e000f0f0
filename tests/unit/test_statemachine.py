"""
Unit tests for srv/salt/_utils/pigeon_statemachine.py: the stack state machine.

The module is pure (plain dicts in, plain dicts out) and not a package, so it is
loaded by path as Salt's loader would find it.
"""

import copy
import random

import pytest

from srv_modules import load


sm = load("_utils/pigeon_statemachine.py", "pigeon_statemachine")
TransitionError = sm.TransitionError

APP = "shop"
WHEN = "2024-05-01T12:00:00Z"
BY = "alice"


def traffic(routes):
    """The routes that send traffic somewhere (production, internal), without the slots' versions."""
    return {k: v for k, v in routes.items() if k.rpartition("/")[2] in ("production", "internal")}


def versions(routes):
    """{slot: version} of the slots the routes hold a version for."""
    return {k.rpartition("/")[2]: v for k, v in routes.items() if "/version/" in k and v is not None}


def _entry(stacks, generation=1):
    built = {v: {"state": st, "slot": sl, "since": "earlier", "by": "bob"} for v, (st, sl) in stacks.items()}
    return {"app": APP, "generation": generation, "stacks": built,
            "routes": sm.routes(APP, built)}


def plan(e, action, version=None, **kw):
    """sm.plan, checking on the way that it never mutates the entry it is given."""
    before = copy.deepcopy(e)
    try:
        return sm.plan(e, action, version, **kw)
    finally:
        assert e == before, "plan() mutated the registry entry"


def refused(e, action, version=None, **kw):
    before = copy.deepcopy(e)
    with pytest.raises(TransitionError) as info:
        sm.plan(e, action, version, **kw)
    assert e == before
    return str(info.value)


# A few registry shapes used throughout
def fresh():
    return sm.empty(APP)


def released_only():          # first deploy: 1.0 in release, nothing in production
    return _entry({"1.0": ("release", "a")})


def active_only():
    return _entry({"1.0": ("active", "a")})


def active_and_release():
    return _entry({"1.0": ("active", "a"), "2.0": ("release", "b")})


def full():                   # 1.0 inactive in a, 2.0 active in b, 3.0 release in c
    return _entry({"1.0": ("inactive", "a"), "2.0": ("active", "b"), "3.0": ("release", "c")})


def active_and_inactive():
    return _entry({"1.0": ("inactive", "a"), "2.0": ("active", "b")})


# ---------------------------------------------------------------------------
# small helpers
def test_empty_backend_in_state():
    assert sm.empty("x") == {"app": "x", "generation": 0, "stacks": {}, "routes": {}}
    assert sm.backend("shop", "b") == "shop_b"
    e = full()
    assert sm.in_state(e, "release") == "3.0"
    assert sm.in_state(e, "active") == "2.0"
    assert sm.in_state(e, "inactive") == "1.0"
    assert sm.in_state(active_only(), "release") is None


def test_routes_say_which_version_each_slot_holds():
    routes = sm.routes(APP, {"1.0": {"state": "active", "slot": "a"}, "2.0": {"state": "release", "slot": "c"}})
    assert {k: v for k, v in routes.items() if "/version/" in k} == {
        "shop/version/a": "1.0", "shop/version/b": None, "shop/version/c": "2.0"}
    assert sm.version_key(APP, "b") == "shop/version/b"
    # the slots of the plan, and an empty slot's key deleted (None)
    assert sm.routes(APP, {"1.0": {"state": "active", "slot": "y"}}, slots=("x", "y")) == {
        "shop/production": "shop_y", "shop/internal": "shop_y", "shop/version/x": None, "shop/version/y": "1.0",
        "shop/canary": None, "shop/maintenance": None}


def test_routes_function():
    assert traffic(sm.routes(APP, {})) == {"shop/production": None, "shop/internal": None}
    assert traffic(sm.routes(APP, {"1": {"state": "active", "slot": "c"}})) == {
        "shop/production": "shop_c", "shop/internal": "shop_c"}
    assert traffic(sm.routes(APP, {"1": {"state": "active", "slot": "a"}, "2": {"state": "release", "slot": "b"}})) == {
        "shop/production": "shop_a", "shop/internal": "shop_b"}
    assert traffic(sm.routes(APP, {"1": {"state": "release", "slot": "b"}})) == {
        "shop/production": None, "shop/internal": "shop_b"}
    # inactive takes no traffic at all
    assert traffic(sm.routes(APP, {"1": {"state": "inactive", "slot": "a"}})) == {
        "shop/production": None, "shop/internal": None}


# ---------------------------------------------------------------------------
# release
@pytest.mark.parametrize("make, slot, production", [
    (fresh, "a", None),
    (active_only, "b", "shop_a"),
    (active_and_inactive, "c", "shop_b"),
    # the first free slot in order, even when it is before the used ones
    (lambda: _entry({"9": ("active", "b")}), "a", "shop_b"),
    (lambda: _entry({"8": ("inactive", "a"), "9": ("active", "c")}), "b", "shop_c"),
])
def test_release_into_first_free_slot(make, slot, production):
    e = make()
    p = plan(e, "release", "4.0")
    assert p["action"] == "release"
    assert p["app"] == APP
    assert p["version"] == "4.0"
    assert p["generation"] == e["generation"]
    assert p["noop"] is False
    assert p["start"] == {"version": "4.0", "slot": slot}
    assert p["stop"] == []
    assert p["states"] == {"4.0": "release"}
    assert p["message"] == f"shop 4.0 released in slot {slot}"
    assert p["routes_before"] == sm.routes(APP, e["stacks"])
    # production untouched, internal to the new stack
    assert traffic(p["routes"]) == {"shop/production": production, "shop/internal": f"shop_{slot}"}


def test_release_with_custom_slots_and_no_free_slot():
    e = active_and_inactive()  # uses a and b
    p = plan(e, "release", "3.0", slots=("b", "a", "z"))
    assert p["start"] == {"version": "3.0", "slot": "z"}
    msg = refused(e, "release", "3.0", slots=("a", "b"))
    assert "no free slot" in msg
    assert "deactivate the inactive stack" in msg


def test_release_of_released_version_is_noop():
    e = active_and_release()
    p = plan(e, "release", "2.0")
    assert p["noop"] is True
    assert p["message"] == "shop 2.0 is already released"
    assert p["start"] is None
    assert p["stop"] == []
    assert p["states"] == {}
    assert traffic(p["routes"]) == traffic(p["routes_before"]) == {"shop/production": "shop_a", "shop/internal": "shop_b"}


def test_release_of_active_version_refused():
    msg = refused(active_and_release(), "release", "1.0")
    assert msg.startswith("shop 1.0 is already active")
    assert "deactivate it first" in msg
    assert "rollback" not in msg


def test_release_of_inactive_version_refused():
    msg = refused(full(), "release", "1.0")
    assert msg.startswith("shop 1.0 is already inactive")
    assert "roll back to it with 'stacks.py rollback'" in msg


def test_release_while_another_release_exists_refused():
    msg = refused(active_and_release(), "release", "3.0")
    assert "shop 2.0 is in release already" in msg
    assert "activate or deactivate it before releasing 3.0" in msg


@pytest.mark.parametrize("make", [fresh, active_only, active_and_inactive])
def test_release_needs_a_version(make):
    # a None version would become a stack keyed None, invisible to in_state()'s
    # truthiness checks: a second release would then be let in beside it
    assert refused(make(), "release") == "release needs --version"


# ---------------------------------------------------------------------------
# activate
def test_activate_full_rotation():
    e = full()
    p = plan(e, "activate", "3.0")
    assert p["noop"] is False
    assert p["version"] == "3.0"
    assert p["states"] == {"3.0": "active", "2.0": "inactive", "1.0": None}
    assert p["stop"] == [{"version": "1.0", "slot": "a", "state": "inactive"}]
    assert p["start"] is None
    assert p["message"] == "shop 3.0 is active; 2.0 is inactive"
    assert traffic(p["routes_before"]) == {"shop/production": "shop_b", "shop/internal": "shop_c"}
    # no release left: internal follows production
    assert traffic(p["routes"]) == {"shop/production": "shop_c", "shop/internal": "shop_c"}


def test_activate_without_version_takes_the_release():
    p = plan(full(), "activate")
    assert p["version"] == "3.0"
    assert p["states"] == {"3.0": "active", "2.0": "inactive", "1.0": None}


def test_activate_with_active_but_no_inactive():
    p = plan(active_and_release(), "activate", "2.0")
    assert p["states"] == {"2.0": "active", "1.0": "inactive"}
    assert p["stop"] == []
    assert p["message"] == "shop 2.0 is active; 1.0 is inactive"
    assert traffic(p["routes"]) == {"shop/production": "shop_b", "shop/internal": "shop_b"}


def test_first_activate():
    p = plan(released_only(), "activate")
    assert p["version"] == "1.0"
    assert p["states"] == {"1.0": "active"}
    assert p["stop"] == []
    assert p["message"] == "shop 1.0 is active"
    assert traffic(p["routes_before"]) == {"shop/production": None, "shop/internal": "shop_a"}
    assert traffic(p["routes"]) == {"shop/production": "shop_a", "shop/internal": "shop_a"}


def test_activate_of_active_is_noop():
    e = active_and_release()
    p = plan(e, "activate", "1.0")
    assert p["noop"] is True
    assert p["message"] == "shop 1.0 is already active"
    assert p["states"] == {} and p["stop"] == [] and p["start"] is None
    assert p["routes"] == p["routes_before"]


@pytest.mark.parametrize("make", [fresh, active_only, active_and_inactive])
def test_activate_with_nothing_released_refused(make):
    msg = refused(make(), "activate")
    assert msg == "shop has no release to activate; run 'stacks.py release' first"


def test_activate_of_unknown_version_refused():
    msg = refused(active_and_release(), "activate", "7.7")
    assert msg == ("shop 7.7 is not released; run 'stacks.py release --app-name shop --version 7.7' first")


def test_activate_of_inactive_refused():
    msg = refused(full(), "activate", "1.0")
    assert "shop 1.0 is inactive" in msg
    assert "stacks.py rollback --app-name shop" in msg


# ---------------------------------------------------------------------------
# rollback
def test_rollback_swaps_active_and_inactive():
    e = active_and_inactive()
    p = plan(e, "rollback")
    assert p["version"] == "1.0"
    assert p["states"] == {"1.0": "active", "2.0": "inactive"}
    assert p["stop"] == [] and p["start"] is None
    assert p["noop"] is False
    assert p["message"] == "shop 1.0 is active again; 2.0 is inactive"
    assert traffic(p["routes_before"]) == {"shop/production": "shop_b", "shop/internal": "shop_b"}
    assert traffic(p["routes"]) == {"shop/production": "shop_a", "shop/internal": "shop_a"}


def test_rollback_keeps_the_release_on_internal():
    p = plan(full(), "rollback", "1.0")
    assert p["states"] == {"1.0": "active", "2.0": "inactive"}
    assert traffic(p["routes"]) == {"shop/production": "shop_a", "shop/internal": "shop_c"}


def test_rollback_without_active():
    # an active deactivated with --force leaves an inactive and no active
    e = _entry({"1.0": ("inactive", "a")})
    p = plan(e, "rollback")
    assert p["states"] == {"1.0": "active"}
    assert p["message"] == "shop 1.0 is active again"
    assert traffic(p["routes"]) == {"shop/production": "shop_a", "shop/internal": "shop_a"}


@pytest.mark.parametrize("make", [fresh, active_only, active_and_release, released_only])
def test_rollback_without_inactive_refused(make):
    assert refused(make(), "rollback") == "shop has no inactive stack to roll back to"


def test_rollback_to_other_version_refused():
    msg = refused(full(), "rollback", "2.0")
    assert msg == "shop 2.0 is not the inactive stack (1.0 is)"


# ---------------------------------------------------------------------------
# deactivate
def test_deactivate_release_internal_falls_back_to_active():
    e = full()
    p = plan(e, "deactivate", "3.0")
    assert p["states"] == {"3.0": None}
    assert p["stop"] == [{"version": "3.0", "slot": "c", "state": "release"}]
    assert p["message"] == "shop 3.0 deactivated"
    assert traffic(p["routes_before"]) == {"shop/production": "shop_b", "shop/internal": "shop_c"}
    assert traffic(p["routes"]) == {"shop/production": "shop_b", "shop/internal": "shop_b"}


def test_deactivate_only_release_leaves_no_routes():
    p = plan(released_only(), "deactivate", "1.0")
    assert traffic(p["routes"]) == {"shop/production": None, "shop/internal": None}


def test_deactivate_inactive_routes_unchanged():
    e = full()
    p = plan(e, "deactivate", "1.0")
    assert p["states"] == {"1.0": None}
    assert p["stop"] == [{"version": "1.0", "slot": "a", "state": "inactive"}]
    assert traffic(p["routes"]) == traffic(p["routes_before"]) == {"shop/production": "shop_b", "shop/internal": "shop_c"}


def test_deactivate_active_with_force():
    p = plan(active_and_inactive(), "deactivate", "2.0", force=True)
    assert p["states"] == {"2.0": None}
    assert p["stop"] == [{"version": "2.0", "slot": "b", "state": "active"}]
    # production answers 503; the inactive takes no traffic
    assert traffic(p["routes"]) == {"shop/production": None, "shop/internal": None}

    p = plan(full(), "deactivate", "2.0", force=True)
    assert traffic(p["routes"]) == {"shop/production": None, "shop/internal": "shop_c"}


def test_deactivate_active_without_force_refused():
    msg = refused(active_and_inactive(), "deactivate", "2.0")
    assert msg.startswith("shop 2.0 is active")
    assert "503" in msg
    assert "--force" in msg


def test_deactivate_missing_version_is_noop():
    e = full()
    p = plan(e, "deactivate", "9.9")
    assert p["noop"] is True
    assert p["message"] == "shop 9.9 is not deployed; nothing to deactivate"
    assert p["states"] == {} and p["stop"] == [] and p["start"] is None
    assert p["routes"] == p["routes_before"]


def test_deactivate_needs_version():
    assert refused(full(), "deactivate") == "deactivate needs --version"


# ---------------------------------------------------------------------------
# refusals before any state is looked at
@pytest.mark.parametrize("version", [
    "x" * 129, "-1.0", ".1.0", "1.0 beta", " 1.0", "1.0\n", "", "v1/2", "1:0", "é", 10, 1.5,
])
@pytest.mark.parametrize("action", ["release", "activate", "deactivate", "rollback"])
def test_invalid_version_refused(action, version):
    msg = refused(full(), action, version)
    assert msg.startswith(f"version {version!r} is not a valid image tag")
    assert "1-128" in msg


@pytest.mark.parametrize("version", ["x" * 128, "1", "_x", "1.0-rc.1", "A_b.C-9", "latest"])
def test_valid_versions_accepted(version):
    p = plan(fresh(), "release", version)
    assert p["states"] == {version: "release"}


@pytest.mark.parametrize("action", ["deploy", "Release", "", None, "status"])
def test_unknown_action_refused(action):
    msg = refused(full(), action, "1.0")
    assert msg.startswith(f"unknown action {action!r}")
    assert "release, activate, deactivate, rollback" in msg


# ---------------------------------------------------------------------------
# apply
def test_apply_release():
    e = active_only()
    p = plan(e, "release", "2.0")
    before = copy.deepcopy(e)
    new = sm.apply(e, p, WHEN, BY)
    assert e == before, "apply() mutated the entry"
    assert new is not e
    assert new["generation"] == 2
    assert new["app"] == APP
    assert new["stacks"] == {
        "1.0": {"state": "active", "slot": "a", "since": "earlier", "by": "bob"},
        "2.0": {"state": "release", "slot": "b", "since": WHEN, "by": BY},
    }
    assert traffic(new["routes"]) == {"shop/production": "shop_a", "shop/internal": "shop_b"}
    # the routes are a copy, not the plan's dict
    new["routes"]["shop/production"] = "changed"
    assert p["routes"]["shop/production"] == "shop_a"


def test_apply_activate_records_since_and_by_of_changed_stacks_only():
    e = full()
    new = sm.apply(e, plan(e, "activate"), WHEN, BY)
    assert new["generation"] == e["generation"] + 1
    assert new["stacks"] == {
        "3.0": {"state": "active", "slot": "c", "since": WHEN, "by": BY},
        "2.0": {"state": "inactive", "slot": "b", "since": WHEN, "by": BY},
    }
    assert traffic(new["routes"]) == {"shop/production": "shop_c", "shop/internal": "shop_c"}


def test_apply_on_empty_registry():
    e = fresh()
    new = sm.apply(e, plan(e, "release", "1.0"), WHEN, BY)
    assert new["generation"] == 1
    assert new["stacks"] == {"1.0": {"state": "release", "slot": "a", "since": WHEN, "by": BY}}
    assert traffic(new["routes"]) == {"shop/production": None, "shop/internal": "shop_a"}
    assert e == sm.empty(APP)


def test_apply_deactivate_removes_stack():
    e = full()
    new = sm.apply(e, plan(e, "deactivate", "1.0"), WHEN, BY)
    assert set(new["stacks"]) == {"2.0", "3.0"}
    assert new["stacks"]["2.0"]["since"] == "earlier"  # untouched stacks keep their record
    assert new["generation"] == 2


@pytest.mark.parametrize("make, action, version", [
    (active_and_release, "release", "2.0"),
    (active_and_release, "activate", "1.0"),
    (full, "deactivate", "9.9"),
])
def test_apply_noop_keeps_generation_and_stacks(make, action, version):
    e = make()
    e["generation"] = 7
    p = plan(e, action, version)
    assert p["noop"] is True
    new = sm.apply(e, p, WHEN, BY)
    assert new["generation"] == 7
    assert new["stacks"] == e["stacks"]
    assert new["routes"] == e["routes"]
    assert all(s["since"] == "earlier" and s["by"] == "bob" for s in new["stacks"].values())


# ---------------------------------------------------------------------------
# the invariants over random sequences of actions
VERSIONS = ["1.0", "1.1", "2.0", "2.1", "3.0"]


def _check_invariants(e, slots):
    stacks = e["stacks"]
    states = [s["state"] for s in stacks.values()]
    used = [s["slot"] for s in stacks.values()]
    assert len(states) == len(set(states)), f"two stacks share a state: {stacks}"
    assert len(used) == len(set(used)), f"two stacks share a slot: {stacks}"
    assert set(states) <= set(sm.STATES)
    assert set(used) <= set(slots)
    slot_of = {s["state"]: s["slot"] for s in stacks.values()}
    production = f"{APP}_{slot_of['active']}" if "active" in slot_of else None
    internal_slot = slot_of.get("release", slot_of.get("active"))
    internal = f"{APP}_{internal_slot}" if internal_slot else None
    assert traffic(e["routes"]) == {f"{APP}/production": production, f"{APP}/internal": internal}, stacks
    # a canary only while a release and an active stack share production; a maintenance kept by every action
    canary = (e.get("traffic") or {}).get("canary")
    assert canary is None or ("release" in slot_of and "active" in slot_of), e
    assert e["routes"].get(f"{APP}/canary", None) == (str(canary) if canary else None), e
    assert bool(e["routes"].get(f"{APP}/maintenance")) == bool((e.get("traffic") or {}).get("maintenance")), e
    assert versions(e["routes"]) == {s["slot"]: v for v, s in stacks.items()}, stacks


@pytest.mark.parametrize("slots", [sm.DEFAULT_SLOTS, ("x", "y")])
def test_random_sequences_keep_invariants(slots):
    rng = random.Random(20240501)
    done = {a: 0 for a in sm.ACTIONS}
    refusals = noops = 0
    for _ in range(600):
        e = sm.empty(APP)
        for step in range(25):
            # the traffic actions change no stack: the stacks' actions get more turns, so that
            # a rollback (which needs two activates first) comes up often enough
            action = rng.choice(sm.ACTIONS[:5] * 3 + sm.TRAFFIC_ACTIONS)
            version = rng.choice(VERSIONS + [None])
            force = rng.random() < 0.3
            before = copy.deepcopy(e)
            asked = {"percent": rng.choice([0, 10, 50, 100]), "enable": rng.random() < 0.5,
                     "message": rng.choice([None, "back soon"]), "retry_after": rng.choice([None, 60])}
            try:
                p = sm.plan(e, action, version, force=force, slots=slots, asked=asked)
            except TransitionError:
                refusals += 1
                assert e == before
                continue
            assert e == before
            assert p["routes_before"] == e["routes"] or e["generation"] == 0
            new = sm.apply(e, p, f"t{step}", "prop")
            _check_invariants(new, slots)
            assert new["routes"] == p["routes"]
            if p["noop"]:
                noops += 1
                assert p["states"] == {} and p["stop"] == [] and p["start"] is None
                assert new["generation"] == e["generation"]
                assert new["stacks"] == e["stacks"]
            elif action in sm.KEEPS_REGISTRY:  # repair: steps run, the registry stays as it is
                done[action] += 1
                assert new == dict(e, routes=p["routes"]) and p["routes"] == e["routes"]
                assert p["states"] == {} and p["stop"] == [] and p["start"] is None
                assert [r["version"] for r in p["repair"]] == ([version] if version else sorted(e["stacks"]))
            else:
                done[action] += 1
                assert new["generation"] == e["generation"] + 1
                # the stacks that stop are exactly the ones that leave the registry
                assert {s["version"] for s in p["stop"]} == set(e["stacks"]) - set(new["stacks"])
                for s in p["stop"]:
                    assert e["stacks"][s["version"]]["slot"] == s["slot"]
                    assert e["stacks"][s["version"]]["state"] == s["state"]
                if p["start"]:
                    assert action == "release"
                    assert p["start"]["slot"] not in {s["slot"] for s in e["stacks"].values()}
                    assert new["stacks"][p["start"]["version"]]["slot"] == p["start"]["slot"]
                # a stack's slot never changes while it exists
                for v in set(e["stacks"]) & set(new["stacks"]):
                    assert new["stacks"][v]["slot"] == e["stacks"][v]["slot"]
                for v, state in p["states"].items():
                    if state is not None:
                        assert new["stacks"][v] == {"state": state, "slot": new["stacks"][v]["slot"],
                                                    "since": f"t{step}", "by": "prop"}
            e = new
    # the walk really went through every transition, refusals and no-ops
    # (rollback needs an inactive stack and repair a stack: this walk gives them fewer turns)
    # (a canary needs a release beside an active stack, and an abort a canary first)
    least = {"rollback": 10, "repair": 10, "canary": 10, "abort": 2}
    assert all(n > least.get(action, 20) for action, n in done.items()), repr(done)
    assert refusals > 100 and noops > 20, (refusals, noops)


# ---------------------------------------------------------------------------
