"""
Unit tests for srv/salt/_utils/pigeon_orchestrate.py: an action's orchestration run with
the plan as its whole pillar.

Salt's own state compiler runs here, for real, on a master configuration of a temporary
folder: a file_roots holding stand-in ``orch/<action>.sls`` files (states of Salt's ``test``
module, which run on the master itself), no salt-master process, no minion. What is
checked is what the deploy runner relies on: the SLS sees exactly ``{"pigeon_plan": plan}``
as its pillar and nothing of the master's, the return is shaped as ``state.orchestrate``'s,
a failed state sets retcode 1, and an SLS that does not render comes back as its errors.
The real orchestrations are run by the integration tests.
"""

import copy

import pytest
import salt.config

from srv_modules import load

PLAN = {"action": "release", "app": "app", "version": "1.4", "steps": [{"step": "containers"}]}

ECHO = """
{%- set plan = pillar.get("pigeon_plan", {}) %}
seen:
  test.succeed_without_changes:
    - name: {{ ((pillar | list | sort | join(",")) ~ " " ~ plan.get("version", "none")) | tojson }}
"""

FAILS = """
broken:
  test.fail_without_changes:
    - name: this step fails
after:
  test.succeed_without_changes:
    - require:
      - test: broken
"""


@pytest.fixture
def orchestrate(tmp_path):
    roots = tmp_path / "roots"
    (roots / "orch").mkdir(parents=True)
    (roots / "orch" / "release.sls").write_text(ECHO)
    (roots / "orch" / "rollback.sls").write_text(FAILS)
    (roots / "orch" / "activate.sls").write_text("{{ nonsense(\n")
    pillar_roots = tmp_path / "pillar"
    pillar_roots.mkdir()
    # a master pillar the orchestration must not see
    (pillar_roots / "top.sls").write_text("base:\n  '*':\n    - secret\n")
    (pillar_roots / "secret.sls").write_text("stacks: {app: {secret: 1}}\n")
    opts = copy.deepcopy(salt.config.DEFAULT_MASTER_OPTS)
    opts.update(conf_file=str(tmp_path / "master"), id="testmaster", root_dir=str(tmp_path),
                cachedir=str(tmp_path / "cache"), sock_dir=str(tmp_path / "sock"),
                pki_dir=str(tmp_path / "pki"), extension_modules=str(tmp_path / "extmods"),
                file_roots={"base": [str(roots)]}, pillar_roots={"base": [str(pillar_roots)]},
                log_file=str(tmp_path / "log"), state_events=False)
    module = load("_utils/pigeon_orchestrate.py", "pigeon_orchestrate_under_test")
    module.__opts__ = opts
    return module


def states(ret):
    [(minion, running)] = ret["data"].items()
    return minion, running


def test_the_plan_is_the_whole_pillar(orchestrate):
    ret = orchestrate.run("release", copy.deepcopy(PLAN), jid="20261204000000000001", user="deployer")
    minion, running = states(ret)
    assert ret["retcode"] == 0 and ret["outputter"] == "highstate" and minion == "testmaster"  # the master minion's id, as state.orchestrate names it
    [state] = running.values()
    # the SLS saw one pillar key, pigeon_plan, and the version of the plan given
    assert state["result"] is True and state["name"] == "pigeon_plan 1.4"
    assert state["__id__"] == "seen"


def test_a_failed_state_sets_retcode_1(orchestrate):
    ret = orchestrate.run("rollback", copy.deepcopy(PLAN))
    _, running = states(ret)
    assert ret["retcode"] == 1
    by_id = {s["__id__"]: s for s in running.values()}
    assert by_id["broken"]["result"] is False and by_id["after"]["result"] is False
    assert "requisite" in by_id["after"]["comment"].lower()


def test_an_sls_that_does_not_render_returns_its_errors(orchestrate):
    ret = orchestrate.run("activate", copy.deepcopy(PLAN))
    _, errors = states(ret)
    assert ret["retcode"] == 1 and isinstance(errors, list) and errors
    assert any("orch.activate" in line or "Rendering SLS" in line for line in errors)


def test_each_state_sends_its_progress_on_the_masters_bus(orchestrate, monkeypatch):
    """Salt's own State.event sends nothing on a master (its opts say local): the run sends
    salt/job/<jid>/prog/<master id>/<run number> itself, as each state ends."""
    import salt.utils.event  # pylint: disable=import-outside-toplevel

    sent = []

    class Bus:
        def __init__(self, opts, sock_dir, listen=False):
            assert listen is False and sock_dir == opts["sock_dir"]

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def fire_event(self, data, tag):
            sent.append((tag, data))

    monkeypatch.setattr(salt.utils.event, "get_master_event", Bus)
    jid = "20261204000000000002"
    ret = orchestrate.run("rollback", copy.deepcopy(PLAN), jid=jid)
    _, running = states(ret)
    by_run = {s["__run_num__"]: s["__id__"] for s in running.values()}
    assert [tag for tag, _ in sent] == [f"salt/job/{jid}/prog/testmaster/{n}" for n in sorted(by_run)]
    assert [data["ret"]["__id__"] for _, data in sent] == [by_run[n] for n in sorted(by_run)]
    assert all(data["len"] == 2 for _, data in sent)


STEPS = """
first:
  test.succeed_with_changes: []
second:
  test.succeed_with_changes:
    - require:
      - test: first
third:
  test.succeed_with_changes:
    - require:
      - test: second
cleanup:
  test.succeed_with_changes:
    - onfail_any:
      - test: second
      - test: third
"""


def test_a_cancel_stops_before_the_next_cancellable_step_and_the_cleanup_runs(orchestrate, tmp_path):
    (tmp_path / "roots" / "orch" / "deactivate.sls").write_text(STEPS)
    plan = {"action": "deactivate", "steps": [
        {"step": "first", "id": "first", "cancellable": True}, {"step": "second", "id": "second", "cancellable": True},
        {"step": "third", "id": "third", "cancellable": False}, {"step": "cleanup", "id": "cleanup",
                                                                 "cancellable": False}]}
    asked = []

    def stop():  # cancelled once the first step ran
        asked.append(len(asked))
        return "cancelled by alice at t" if len(asked) > 1 else None

    _, running = states(orchestrate.run("deactivate", plan, stop=stop))
    by_id = {s["__id__"]: s for s in running.values()}
    assert len(asked) == 2  # asked before first and second only: third and cleanup are not cancellable
    assert by_id["first"]["result"] is True and by_id["first"]["changes"]
    assert by_id["second"]["result"] is False and by_id["second"]["comment"] == "not run: cancelled by alice at t"
    assert not by_id["second"]["changes"]
    assert by_id["third"]["result"] is False and "requisite" in by_id["third"]["comment"].lower()
    assert by_id["cleanup"]["result"] is True and by_id["cleanup"]["changes"]  # its onfail: it ran


def test_without_a_cancel_every_step_runs(orchestrate, tmp_path):
    (tmp_path / "roots" / "orch" / "deactivate.sls").write_text(STEPS)
    plan = {"action": "deactivate", "steps": [{"step": "first", "id": "first", "cancellable": True}]}
    _, running = states(orchestrate.run("deactivate", plan, stop=lambda: None))
    by_id = {s["__id__"]: s for s in running.values()}
    assert all(by_id[i]["result"] is True for i in ("first", "second", "third"))
    assert "onfail" in by_id["cleanup"]["comment"]
