"""Unit tests for srv/salt/_modules/pigeon_pillar.py: the haproxy formula's apps, checked."""

import copy

import pytest
import yaml

from srv_modules import SALT_DIR, load, utils_dunder

schema = load("_utils/pigeon_schema.py", "pigeon_schema_for_pillar")
UTILS = utils_dunder(schema, load("_utils/pigeon_definition.py", "pigeon_definition_for_pillar"),
                     load("_utils/pigeon_statemachine.py", "pigeon_statemachine_for_pillar"),
                     load("_utils/haproxy_maps.py", "haproxy_maps_for_pillar"))
LAB = yaml.safe_load((SALT_DIR.parent / "pillar" / "stacks.sls").read_text())["stacks"]


@pytest.fixture
def module():
    mod = load("_modules/pigeon_pillar.py", "pigeon_pillar_under_test")
    mod.__utils__ = UTILS
    mod.__pillar__ = {"stacks": copy.deepcopy(LAB)}
    return mod


def test_the_apps_of_our_frontends(module):
    other = copy.deepcopy(LAB["app"])
    other["loadbal"]["frontend"] = "elsewhere"
    module.__pillar__["stacks"]["other"] = other
    backends = [{"slot": s, "name": f"app_{s}", "alias": f"pigeon-app-{s}", "servers": 10, "by_address": False,
                 "version_key": f"app/version/{s}"} for s in "abc"]
    assert module.loadbal_apps(["www"]) == {"app": dict(LAB["app"]["loadbal"], backends=backends)}
    assert module.loadbal_apps(["nothing"]) == {}


def test_the_backends_are_named_as_the_plan_names_them(module):
    """One source: the formula's backend and server names are the plan's (pigeon_definition)."""
    definition = load("_utils/pigeon_definition.py", "pigeon_definition_check")
    sm = load("_utils/pigeon_statemachine.py", "pigeon_statemachine_check")
    [app] = module.loadbal_apps(["www"]).values()
    for b in app["backends"]:
        assert b["name"] == sm.backend("app", b["slot"])
        cts = definition.containers("app", "1.0", b["slot"], copy.deepcopy(LAB["app"]))
        aliases = {a for c in cts if c["registered"] for net in c["networks"] for items in net.values()
                   for item in items for a in item.get("aliases", [])}
        assert b["alias"] in aliases and b["servers"] == definition.MAX_REPLICAS


@pytest.mark.parametrize("change, word", [
    (lambda d: d["loadbal"]["healthcheck"].update(path="/healthz\n    server evil 127.0.0.1:1"),
     "healthcheck:path"),
    (lambda d: d["loadbal"]["healthcheck"].update(status="200\nevil"), "healthcheck:status"),
    (lambda d: d["loadbal"]["healthcheck"].update(interval="1s evil"), "healthcheck:interval"),
    (lambda d: d["loadbal"].update(backend_port="8080\nevil"), "backend_port"),
])
def test_a_value_that_would_reach_haproxy_cfg_fails_in_one_line(module, change, word):
    change(module.__pillar__["stacks"]["app"])
    with pytest.raises(module.CommandExecutionError) as refused:
        module.loadbal_apps(["www"])
    message = str(refused.value)
    assert "\n" not in message and message.startswith("haproxy: stacks:'app' not rendered: broken pillar")
    assert word in message


def test_an_app_name_that_is_not_one_fails(module):
    module.__pillar__["stacks"]["app\nbackend evil"] = module.__pillar__["stacks"].pop("app")
    with pytest.raises(module.CommandExecutionError) as refused:
        module.loadbal_apps(["www"])
    assert "\n" not in str(refused.value)


def test_routes_map_holds_our_apps_routes_in_the_runtime_writers_format(module):
    module.__pillar__["pigeon"] = {"routes": {"app/production": "app_a", "app/internal": "app_b",
                                              "other/production": "other_a", "gone/internal": None}}
    text = module.routes_map(["app", "gone"])
    assert text == ("# managed by Salt (haproxy_runtime); changes will be overwritten\n"
                    "app/internal app_b\napp/production app_a\n")
    maps = load("_utils/haproxy_maps.py", "haproxy_maps_check")
    assert text == maps.map_text({"app/production": "app_a", "app/internal": "app_b"})
    module.__pillar__.pop("pigeon")
    assert module.routes_map(["app"]) == maps.MAP_HEADER + "\n"
