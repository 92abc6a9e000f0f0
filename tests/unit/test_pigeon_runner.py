"""Unit tests for srv/salt/_modules/pigeon_runner.py (the plan called in-process)."""

import pytest

from srv_modules import load


@pytest.fixture
def pr(monkeypatch):
    module = load("_modules/pigeon_runner.py", "pigeon_runner_under_test")
    loaders = []

    def runner(opts, utils=None, whitelist=None, **kwargs):
        calls = []

        def plan(**kw):
            calls.append(kw)
            return {"planned": kw}

        loader = {"stacks.plan": plan, "calls": calls, "opts": opts, "utils": utils, "whitelist": whitelist}
        loaders.append(loader)
        return loader

    monkeypatch.setattr(module.salt.loader, "runner", runner)
    module.__opts__ = {"__role": "master", "cachedir": "/var/cache/salt/master"}
    module.__utils__ = {"pigeon_statemachine.plan": object()}
    module.__context__ = {}
    module.loaders = loaders
    return module


def test_loaded_on_the_master_only(pr):
    assert pr.__virtual__() == "pigeon_runner"
    pr.__opts__ = {"__role": "minion"}
    loaded, why = pr.__virtual__()
    assert loaded is False and "master" in why


def test_call_runs_the_runner_function_in_process_with_one_loader(pr):
    first = pr.call("stacks.plan", app="app", action="activate", __pub_fun="x")
    second = pr.call("stacks.plan", app="app", action="rollback")
    assert first == {"planned": {"app": "app", "action": "activate"}}  # salt's __pub_ keys dropped
    assert second == {"planned": {"app": "app", "action": "rollback"}}
    assert len(pr.loaders) == 1  # the runner loader is made once per process (context)
    loader = pr.loaders[0]
    assert loader["opts"] is pr.__opts__ and loader["utils"] is pr.__utils__
    assert loader["whitelist"] == ["stacks"]


def test_call_refuses_other_runners(pr):
    with pytest.raises(Exception, match="not a function of the stacks runner"):
        pr.call("state.orchestrate", mods="orch.release")
    assert pr.loaders == []
