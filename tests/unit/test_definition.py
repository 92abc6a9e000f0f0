"""Unit tests for srv/salt/_utils/pigeon_definition.py: a stack definition, expanded."""

import copy

import pytest
import yaml

from srv_modules import SALT_DIR, load

definition = load("_utils/pigeon_definition.py", "pigeon_definition_under_test")
sm = load("_utils/pigeon_statemachine.py", "pigeon_statemachine_for_definition")

LAB = yaml.safe_load((SALT_DIR.parent / "pillar" / "stacks.sls").read_text())["stacks"]["app"]


def test_services_of_both_forms():
    readme = {"task_definitions": {"count": 2, "web": {"docker_config": {}}, "api": {}}}
    original = {"task_definition": {"count": 3, "services": {"web": {"docker_config": {}}}}}
    assert definition.services(readme) == (2, {"web": {"docker_config": {}}, "api": {}})
    assert definition.services(original) == (3, {"web": {"docker_config": {}}})
    assert definition.services({"task_definitions": {"web": {}}}) == (1, {"web": {}})
    assert readme["task_definitions"]["count"] == 2  # the pillar is not changed


@pytest.mark.parametrize("raw, want", [
    (None, {}),
    (["register_backend=true", "a=b=c", "flag"], {"register_backend": "true", "a": "b=c", "flag": ""}),
    ([{"x": 1}, "y=2"], {"x": "1", "y": "2"}),
    ({"k": True}, {"k": "True"}),
])
def test_labels(raw, want):
    assert definition.labels(raw) == want


@pytest.mark.parametrize("name, want", [
    ("pigeon/demoapp", "pigeon/demoapp:1.4"),
    ("registry:5000/team/app", "registry:5000/team/app:1.4"),  # a port is not a tag
    ("app:stable", "app:stable"),
    ("app@sha256:abc", "app@sha256:abc"),
    ("app:{version}-slim", "app:1.4-slim"),
])
def test_image(name, want):
    assert definition.image(name, "1.4") == want


def test_containers_of_the_lab_app():
    cts = definition.containers("app", "1.4", "b", copy.deepcopy(LAB))
    assert [c["name"] for c in cts] == ["app-1.4-api-1", "app-1.4-web-1", "app-1.4-api-2", "app-1.4-web-2"]
    web = cts[1]
    assert web["registered"] is True and cts[0]["registered"] is False
    assert web["labels"] == {"register_backend": "true", "pigeon.managed": "true", "pigeon.app": "app",
                             "pigeon.version": "1.4", "pigeon.slot": "b", "pigeon.service": "web",
                             "pigeon.replica": "1", "pigeon.network": "pigeon-app-1.4"}
    # the stack's own network (services by name), and the slot's alias on HAProxy's network
    assert web["networks"] == [{"pigeon-app-1.4": [{"aliases": ["web"]}]},
                               {"pigeon": [{"aliases": ["pigeon-app-b"]}]}]
    assert cts[0]["networks"] == [{"pigeon-app-1.4": [{"aliases": ["api"]}]}]
    # docker's steady health check every 30 s (the image's test): the gate checks by itself
    assert web["docker_config"] == {"image": "pigeon/demoapp:1.4", "stop_timeout": 10,
                                    "restart_policy": "unless-stopped", "healthcheck": {"Interval": 30 * 10**9}}


def test_containers_health_interval_from_the_pillar_and_a_services_own_healthcheck():
    d = copy.deepcopy(LAB)
    d["config"]["health_interval"] = 5
    d["task_definitions"]["api"]["docker_config"]["healthcheck"] = {"test": ["CMD", "true"], "interval": 10**9}
    cts = {c["service"]: c for c in definition.containers("app", "2", "a", d)}
    assert cts["web"]["docker_config"]["healthcheck"] == {"Interval": 5 * 10**9}
    assert cts["api"]["docker_config"]["healthcheck"] == {"test": ["CMD", "true"], "interval": 10**9}
    # a service's healthcheck that sets no interval gets Pigeon's (not the image's 1 s)
    d["task_definitions"]["api"]["docker_config"]["healthcheck"] = {"retries": 5}
    cts = {c["service"]: c for c in definition.containers("app", "2", "a", d)}
    assert cts["api"]["docker_config"]["healthcheck"] == {"retries": 5, "Interval": 5 * 10**9}
    assert d["task_definitions"]["api"]["docker_config"]["healthcheck"] == {"retries": 5}  # pillar unchanged


def test_containers_keep_what_the_pillar_sets():
    d = copy.deepcopy(LAB)
    d["task_definitions"]["web"]["docker_config"].update(stop_timeout=30, restart_policy="no")
    web = [c for c in definition.containers("app", "2", "a", d) if c["service"] == "web"][0]
    assert web["docker_config"]["stop_timeout"] == 30 and web["docker_config"]["restart_policy"] == "no"
    assert "labels" in d["task_definitions"]["web"]["docker_config"]  # the pillar is not changed


def _entry(stacks, loadbal_seen=True):
    stacks = {v: {"state": s, "slot": slot, "since": "x", "by": "ci"} for v, (s, slot) in stacks.items()}
    entry = {"app": "app", "generation": 5, "stacks": stacks, "routes": sm.routes("app", stacks)}
    if loadbal_seen:
        entry["loadbal_hash"] = definition.loadbal_hash(LAB)
    return entry


def _expand(action, version, stacks, d=None, loadbal_seen=True, force=False):
    entry = _entry(stacks, loadbal_seen)
    planned = sm.plan(copy.deepcopy(entry), action, version=version, force=force)
    return definition.expand("app", action, version, copy.deepcopy(d or LAB), entry, planned, sm.backend)


def test_expand_a_release():
    plan = _expand("release", "2.0", {"1.0": ("active", "a")})
    start = plan["start"]
    assert (start["slot"], start["backend"], start["network"], start["expected_up"]) == \
           ("b", sm.backend("app", "b"), "pigeon-app-2.0", 2)
    assert start["keep"] == ["1.0"] and len(start["containers"]) == 4
    assert plan["loadbal"] == {"target": LAB["loadbal"]["target"], "target_type": "pcre",
                               "healthcheck_timeout": 30, "drain_timeout": 10, "balancers": []}
    assert plan["config"]["formula"] == "demoapp"
    assert plan["converge_loadbal"] is False
    assert _expand("release", "2.0", {}, loadbal_seen=False)["converge_loadbal"] is True


def test_expand_an_activation_and_a_deactivation():
    plan = _expand("activate", "2.0", {"1.0": ("active", "a"), "2.0": ("release", "b")})
    assert plan["gate"] == {"backend": sm.backend("app", "b"), "expected_up": 2}
    assert plan["stop"] == []
    plan = _expand("deactivate", "1.0", {"1.0": ("inactive", "a"), "2.0": ("active", "b")})
    assert plan["stop"] == [{"version": "1.0", "slot": "a", "state": "inactive",
                             "backend": sm.backend("app", "a"), "network": "pigeon-app-1.0"}]
    # a version the registry does not know: what an interrupted action left of it goes
    plan = _expand("deactivate", "0.9", {"2.0": ("active", "b")})
    assert plan["stop"] == [{"version": "0.9", "slot": None, "state": None, "backend": None,
                             "network": "pigeon-app-0.9"}]


def _broken(change):
    d = copy.deepcopy(LAB)
    change(d)
    return _expand("release", "2.0", {}, d)


def test_expand_refuses_what_the_slot_cannot_take():
    def unregistered(d):
        d["task_definitions"]["web"]["docker_config"]["labels"] = []

    def reserved(d):
        d["task_definitions"]["api"]["docker_config"]["network_mode"] = "host"

    def too_many(d):
        d["task_definitions"]["count"] = definition.MAX_REPLICAS + 1

    assert _broken(unregistered) == {
        "error": "broken pillar: no service of stacks:app is labelled register_backend=true"}
    assert _broken(reserved) == {
        "error": "broken pillar: stacks:app docker_config sets network_mode, which Pigeon sets "
                 "itself; remove it"}
    assert _broken(too_many) == {
        "error": f"broken pillar: stacks:app would put {definition.MAX_REPLICAS + 1} containers in "
                 f"one HAProxy slot, more than its {definition.MAX_REPLICAS} servers; lower count"}
    assert _broken(lambda d: d["task_definitions"].update(count=definition.MAX_REPLICAS))["start"]
