"""Unit tests for srv/salt/_modules/pigeon_pillar.py: the haproxy formula's apps, checked."""

import copy

import pytest
import yaml

from srv_modules import SALT_DIR, load

schema = load("_utils/pigeon_schema.py", "pigeon_schema_for_pillar")
LAB = yaml.safe_load((SALT_DIR.parent / "pillar" / "stacks.sls").read_text())["stacks"]


@pytest.fixture
def module():
    mod = load("_modules/pigeon_pillar.py", "pigeon_pillar_under_test")
    mod.__utils__ = {"pigeon_schema.check_app": schema.check_app,
                     "pigeon_schema.check_definition": schema.check_definition}
    mod.__pillar__ = {"stacks": copy.deepcopy(LAB)}
    return mod


def test_the_apps_of_our_frontends(module):
    other = copy.deepcopy(LAB["app"])
    other["loadbal"]["frontend"] = "elsewhere"
    module.__pillar__["stacks"]["other"] = other
    assert module.loadbal_apps(["www"]) == {"app": LAB["app"]["loadbal"]}
    assert module.loadbal_apps(["nothing"]) == {}


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
