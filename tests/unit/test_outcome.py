"""
Unit tests for srv/salt/_utils/pigeon_outcome.py: the outcome of an action, made by the
deploy runner from its plan and the return of ``state.orchestrate`` (``build``), or
without any step (``refused``, ``nothing_ran``).

The evidence first: the lab's recorded returns (tests/fixtures/orchestrate, made by
tests/fixtures/record.py), each with the plan it ran and the outcome the runner
returned. ``build`` must give that outcome, but for what the runner fills after its
commit (``deploy._run``: changed, revision, version). Then hand-made returns, shaped
like Salt 3008's (the keys ``salt_|-<id>_|-<name>_|-<function>``, ``__run_num__``,
``__id__``), for the failures the lab did not record. Their state IDs come from
``pigeon_steps.state_id`` and their plans' step tables from ``pigeon_steps.steps``:
nothing here spells a state ID.

Last, the promise of pigeon_steps: renaming the state IDs (``pigeon_steps.ID_FORMAT``)
changes nothing ``stacks.py`` prints, its lines or its ``--json`` report, and the
``pigeon`` package reads no state ID.
"""

import copy
import json
import pathlib
import re
import sys

import pytest

from srv_modules import load

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pigeon import cli, errors, saltapi  # noqa: E402  pylint: disable=wrong-import-position

outcome = load("_utils/pigeon_outcome.py", "pigeon_outcome_under_test")
steps_mod = load("_utils/pigeon_steps.py", "pigeon_steps_for_outcome")

FIXTURES = REPO / "tests" / "fixtures" / "orchestrate"
RECORDED = sorted(path.stem for path in FIXTURES.glob("*.json"))
MASTER = "lab"  # the master's id in the lab, the key of state.orchestrate's data
MINION = "lab-minion"

OUTCOME_KEYS = {"action", "app", "version", "ok", "refused", "error", "failed_step", "steps", "cleaned",
                "containers", "changed", "revision"}
# the recordings made since the outcome has "containers" (the others: tests/fixtures/record.py
# of 2026-12-03; re-recording them changes the timings and texts other tests quote)
RECORDED_WITH_CONTAINERS = ("repair-nothing-broken", "repair")
STEP_KEYS = {"step", "result", "skipped", "seconds", "comment"}
# what deploy._run sets after build(), once the commit recorded the action (never after an abort)
FILLED_AFTER_COMMIT = ("changed", "revision", "version")


def recorded(name):
    """{"plan", "ret", "outcome"} of one action the lab ran (tests/fixtures/record.py)."""
    return json.loads((FIXTURES / f"{name}.json").read_text())


def one_line(text):
    return isinstance(text, str) and text and "\n" not in text


# ---------------------------------------------------------------------------
# the recorded actions
def test_every_recorded_action_is_tested():
    assert RECORDED == sorted([
        "release-first", "activate-first", "release-unhealthy", "release-unhealthy-kept",
        "release-cleans-leftovers", "activate", "release-third", "activate-remove-inactive", "rollback",
        "deactivate-release", "deactivate-active-forced", "deactivate-unknown", "repair-nothing-broken",
        "repair"])


@pytest.mark.parametrize("name", RECORDED)
def test_build_gives_what_the_runner_returned(name):
    case = recorded(name)
    plan, runner_outcome = case["plan"], case["outcome"]
    built = outcome.build(plan, case["ret"])
    if name not in RECORDED_WITH_CONTAINERS:  # recorded before the outcome said what started
        assert "containers" not in runner_outcome
        runner_outcome = dict(runner_outcome, containers=built["containers"])
    assert set(built) == set(runner_outcome) == OUTCOME_KEYS
    # everything but what the runner fills after its commit, as it returned it
    assert {k: v for k, v in built.items() if k not in FILLED_AFTER_COMMIT} == \
        {k: v for k, v in runner_outcome.items() if k not in FILLED_AFTER_COMMIT}
    assert built["changed"] is None and built["revision"] == plan["generation"]
    assert built["version"] == plan["version"]
    if runner_outcome["ok"]:  # commit: the registry's record and its revision (the next, unless a no-op)
        assert runner_outcome["changed"]["revision"] == runner_outcome["revision"] == \
            plan["generation"] + (0 if runner_outcome["changed"]["noop"] or plan["action"] == "repair" else 1)
        assert runner_outcome["version"] == plan["version"]
    else:  # abort: nothing filled, the registry is where the plan found it
        assert built == runner_outcome


@pytest.mark.parametrize("name", RECORDED)
def test_recorded_steps_are_the_plans_in_its_order(name):
    case = recorded(name)
    plan = case["plan"]
    # the table the plan carried is pigeon_steps' (what orch/steps.jinja took the IDs from)
    # (less "cancellable" in the recordings made before steps had it)
    assert plan["steps"] == [{k: v for k, v in s.items() if k != "cancellable" or name in
                              RECORDED_WITH_CONTAINERS} for s in steps_mod.steps(plan)]
    built = outcome.build(plan, case["ret"])
    assert [s["step"] for s in built["steps"]] == [s["step"] for s in plan["steps"]]
    for step in built["steps"]:
        assert set(step) == STEP_KEYS
        assert one_line(step["comment"])
        assert isinstance(step["seconds"], float) and step["seconds"] >= 0
        # a step that did not run has no result of its own
        assert (step["result"] is None) == step["skipped"]
    assert built["error"] is None or one_line(built["error"])


def test_recorded_release():
    built = outcome.build(recorded("release-first")["plan"], recorded("release-first")["ret"])
    assert built["ok"] is True and built["error"] is None and built["failed_step"] is None
    assert built["refused"] is False and built["cleaned"] == []
    assert built["steps"] == [
        {"step": "containers", "result": True, "skipped": False, "seconds": 4.145,
         "comment": "States ran successfully. Updating lab-minion."},
        {"step": "routes", "result": True, "skipped": False, "seconds": 0.284,
         "comment": "Function ran successfully. Function haproxy_runtime.set_routes ran on lab-minion."},
        # the onfail cleanup: nothing failed, it did not run
        {"step": "cleanup", "result": None, "skipped": True, "seconds": 0.0,
         "comment": "State was not run because onfail req did not change"},
    ]
    assert (built["action"], built["app"], built["version"]) == ("release", "app", "rec-1")


def test_recorded_unhealthy_release():
    case = recorded("release-unhealthy")
    built = outcome.build(case["plan"], case["ret"])
    assert built["ok"] is False and built["refused"] is False and built["failed_step"] == "containers"
    error = built["error"]
    assert error.startswith("step containers failed: lab-minion: app unhealthy not healthy (docker marked "
                            "it unhealthy after 3s): 0 of 4 containers healthy; app-unhealthy-api-1 unhealthy")
    assert one_line(error)
    assert [(s["step"], s["result"], s["skipped"]) for s in built["steps"]] == [
        ("containers", False, False),
        ("routes", None, True),  # never ran: it requires the containers
        ("cleanup", True, False)]  # ran: the containers failed
    # the failed step's comment is the reason (the minion's state), not Salt's "Run failed on minions"
    assert built["steps"][0]["comment"] == error[len("step containers failed: "):]
    assert built["steps"][0]["seconds"] == 5.852
    assert built["steps"][1]["comment"].startswith("One or more requisite failed")
    assert built["changed"] is None and built["cleaned"] == []


def test_recorded_unhealthy_release_kept():
    case = recorded("release-unhealthy-kept")
    assert case["plan"]["keep_failed"] is True
    built = outcome.build(case["plan"], case["ret"])
    assert built["failed_step"] == "containers" and built["ok"] is False
    assert [s["step"] for s in built["steps"]] == ["containers", "routes"]  # no cleanup step at all
    assert built["error"] == outcome.build(recorded("release-unhealthy")["plan"],
                                           recorded("release-unhealthy")["ret"])["error"]


def test_recorded_release_names_the_leftovers_it_removed():
    case = recorded("release-cleans-leftovers")
    built = outcome.build(case["plan"], case["ret"])
    assert built["ok"] is True and built["cleaned"] == ["unhealthy"]
    assert outcome.build(recorded("release-third")["plan"], recorded("release-third")["ret"])["cleaned"] == []


@pytest.mark.parametrize("name, steps", [
    ("activate-first", ["routes"]),
    ("activate", ["routes"]),
    ("activate-remove-inactive", ["routes", "remove rec-1"]),
    ("rollback", ["routes"]),
    ("deactivate-release", ["routes", "remove rec-3"]),
    ("deactivate-active-forced", ["routes", "drain rec-2", "remove rec-2"]),
    ("deactivate-unknown", ["remove rec-9"]),  # nothing in the registry: its containers removed anyway
])
def test_recorded_actions_steps(name, steps):
    case = recorded(name)
    built = outcome.build(case["plan"], case["ret"])
    assert built["ok"] is True and built["error"] is None
    assert [s["step"] for s in built["steps"]] == steps
    assert all(s["result"] is True and not s["skipped"] for s in built["steps"])


def test_a_planned_step_missing_from_the_result_fails_the_outcome():
    case = recorded("activate-remove-inactive")
    ret = copy.deepcopy(case["ret"])
    states = next(iter(ret["data"].values()))
    removal = next(s["id"] for s in case["plan"]["steps"] if s["step"].startswith("remove"))
    for key in [k for k, v in states.items() if v["__id__"] == removal]:
        del states[key]  # an SLS that lost the step (out of sync with the plan's table)
    built = outcome.build(case["plan"], ret)
    assert built["ok"] is False and built["failed_step"] == "remove rec-1"
    assert built["error"].startswith("step remove rec-1 failed: not in the orchestration's result (no state "
                                     f"{removal} in orch/activate.sls)")
    assert one_line(built["error"]) and "saltutil.sync_all" in built["error"]
    assert [(s["step"], s["result"]) for s in built["steps"]] == [("routes", True), ("remove rec-1", False)]


# ---------------------------------------------------------------------------
# a step is known by the plan's table
def test_a_step_is_named_by_the_plans_table_never_by_its_id():
    plan = {"action": "release", "app": "app", "version": "1.0", "generation": 3, "steps": [
        {"step": "containers", "kind": "containers", "id": "s1"},
        {"step": "routes", "kind": "routes", "id": "pigeon-release-cleanup"}]}  # an ID that says otherwise
    ret = _orch(_state("s1", 0), _state("pigeon-release-cleanup", 1, kind="function"),
                # not in the table (an orchestration run by hand): its ID as it is, or "?"
                _state("pigeon-release-refused", 2), _state(None, 3))
    assert [s["step"] for s in outcome.build(plan, ret)["steps"]] == [
        "containers", "routes", "pigeon-release-refused", "?"]


def test_the_table_names_steps_with_versions():
    plan = _plan("deactivate", version="1.0-rc-2", stop=[{"version": "1.0-rc-2", "state": "active"}])
    assert [s["step"] for s in plan["steps"]] == ["routes", "drain 1.0-rc-2", "remove 1.0-rc-2"]
    ret = _orch(_step("deactivate", "routes", 0, name="haproxy_runtime.set_routes"),
                _step("deactivate", "drain 1.0-rc-2", 1, name="haproxy_runtime.wait_drained"),
                _step("deactivate", "remove 1.0-rc-2", 2, kind="state"))
    assert [s["step"] for s in outcome.build(plan, ret)["steps"]] == [
        "routes", "drain 1.0-rc-2", "remove 1.0-rc-2"]


def test_nothing_ran_and_refused():
    plan = _plan("release", noop=True, message="app 1.0 is released already")
    assert plan["steps"] == []
    assert outcome.nothing_ran(plan) == {
        "action": "release", "app": "app", "version": "1.0", "ok": True, "refused": False, "error": None,
        "failed_step": None, "steps": [], "cleaned": [], "containers": {}, "changed": None, "revision": 7}
    refused = outcome.refused({"action": "activate", "app": "app", "version": None}, "no release to activate")
    assert set(refused) == OUTCOME_KEYS
    assert (refused["ok"], refused["refused"], refused["error"], refused["steps"], refused["revision"]) == (
        False, True, "no release to activate", [], None)


# ---------------------------------------------------------------------------
# hand-made orchestration returns, shaped like the master's (Salt 3008), for what the lab
# did not record; the IDs are pigeon_steps'
def _plan(action, **extra):
    """A plan of ``action`` with its step table (pigeon_steps.steps)."""
    plan = dict({"action": action, "app": "app", "version": "1.0", "generation": 7, "noop": False,
                 "converge_loadbal": False, "keep_failed": False, "stop": []}, **extra)
    plan["steps"] = steps_mod.steps(plan)
    return plan


def _state(sid, run_num, kind="state", name=None, result=True, comment=None, changes=None, duration=100.0,
           sls="orch.release"):
    """One state's return in an orchestration, keyed the way Salt keys it."""
    name = name or sid
    if comment is None:
        comment = {"function": f"Function ran successfully. Function {name} ran on {MINION}.",
                   "state": f"States ran successfully. Updating {MINION}."}[kind]
    value = {"name": name, "result": result, "comment": comment, "changes": changes or {},
             "__run_num__": run_num, "__sls__": sls, "start_time": "12:00:00.000000", "duration": duration}
    if sid is not None:
        value["__id__"] = sid
    return f"salt_|-{sid}_|-{name}_|-{kind}", value


def _step(action, step, run_num, kind="function", **values):
    """The return of the step ``step`` of ``action``'s orchestration (salt.function or salt.state)."""
    return _state(steps_mod.state_id(action, step), run_num, kind=kind, sls=f"orch.{action}", **values)


def _skipped(action, step, run_num):
    """An onfail step that did not run because nothing failed (as the lab records it)."""
    key, value = _step(action, step, run_num, kind="state", duration=0.01,
                       comment="State was not run because onfail req did not change")
    value["__state_ran__"] = False
    return key, value


def _requisite_failed(action, step, run_num, *failed, kind="function", name=None):
    """A step that did not run because a step it requires failed."""
    refs = ", ".join(f"orch.{action}.{steps_mod.state_id(action, f)}" for f in failed or ("containers",))
    key, value = _step(action, step, run_num, kind=kind, name=name, result=False, duration=0.01,
                       comment=f"One or more requisite failed: {refs}")
    value["__state_ran__"] = False
    return key, value


def _orch(*states, retcode=0):
    return {"data": {MASTER: dict(states)}, "outputter": "highstate", "retcode": retcode}


def _minion_state(sid, name, fun, run_num, result=True, comment="", changes=None):
    """One state of a salt.state step on the minion: (key, return)."""
    module, function = fun.split(".")
    return (f"{module}_|-{sid}_|-{name}_|-{function}",
            {"__id__": sid, "name": name, "result": result, "comment": comment, "changes": changes or {},
             "__run_num__": run_num, "duration": 10.0})


STACK_KEY = "stack_containers_|-stacks-running-stack-containers-running_|-app 1.0_|-running"
CREATED = {f"app-1.0-{service}-{replica}": "created" for service in ("web", "api") for replica in (1, 2)}
ROUTES_RETURN = {"changes": {"app/internal": {"old": "app_a", "new": "app_b"}},
                 "map": {"app/production": "app_a", "app/internal": "app_b"}}


def _containers(result=True, comment="4 of 4 containers healthy", changes=None, extra=()):
    """The changes of the containers step (stacks.running on the app minion)."""
    states = dict(extra)
    states.update([_minion_state(
        "stacks-running-stack-containers-running", "app 1.0", "stack_containers.running", 9,
        result=result, comment=comment, changes={"containers": CREATED} if changes is None else changes)])
    return {"out": "highstate", "ret": {MINION: states}}


def _routes(run_num, action="release", **values):
    values.setdefault("changes", {"ret": {MINION: ROUTES_RETURN}})
    values.setdefault("duration", 180.0)
    return _step(action, "routes", run_num, name="haproxy_runtime.set_routes", **values)


def _cleanup_ran(run_num):
    """The release's cleanup after a failure: stacks.absent removed what the release started."""
    return _step("release", "cleanup", run_num, kind="state", duration=3100.0,
                 changes={"out": "highstate", "ret": {MINION: dict([_minion_state(
                     "stacks-absent-stack-containers-absent", "app 1.0", "stack_containers.absent", 0,
                     comment="4 containers of app 1.0 removed",
                     changes={"removed": sorted(CREATED)})])}})


def success_payload(loadbal=False):
    """A release that went through (with the loadbal step when the app is new): (plan, ret)."""
    first = []
    if loadbal:
        first = [_step("release", "loadbal", 0, kind="state", duration=1800.0,
                       comment=f"States ran successfully. No changes made to {MINION}.")]
    n = len(first)
    return _plan("release", converge_loadbal=loadbal), _orch(
        *first,
        _step("release", "containers", n, kind="state", duration=2604.0, changes=_containers()),
        _routes(n + 1),
        _skipped("release", "cleanup", n + 2),
    )


def activate_payload():
    """An activate: production to the release's slot, the old inactive stack (0.8) removed."""
    return _plan("activate", stop=[{"version": "0.8", "state": "inactive"}]), _orch(
        _routes(0, action="activate", duration=40.0, changes={"ret": {MINION: {
            "changes": {"app/production": {"old": "app_a", "new": "app_b"}},
            "map": {"app/production": "app_b", "app/internal": "app_b"}}}}),
        _step("activate", "remove 0.8", 1, kind="state", duration=1500.0),
    )


# docker's health gate, in the containers step (stack_containers.running with healthy_timeout)
UNHEALTHY = ("app 1.0 not healthy (docker marked it unhealthy after 3s): 3 of 4 containers healthy; "
             "app-1.0-web-1 unhealthy (curl: (22) The requested URL returned error: 500)")


def containers_failure_payload(leftovers=None):
    """A release whose containers docker marked unhealthy: routes never ran, cleanup did."""
    changes = {"containers": CREATED}
    if leftovers:
        changes["leftovers_removed"] = leftovers
    return _plan("release"), _orch(
        _step("release", "containers", 0, kind="state", result=False, duration=3420.7,
              comment=f"Run failed on minions: {MINION}",
              changes=_containers(result=False, comment=UNHEALTHY, changes=changes)),
        _requisite_failed("release", "routes", 1, "containers", name="haproxy_runtime.set_routes"),
        _cleanup_ran(2),
        retcode=1,
    )


# HAProxy's gate, in the routes step (haproxy_runtime.set_routes with require_up and wait)
GATE_ERROR = ("backend app_b: 1 of 2 servers UP and checked after 30s (s2 172.18.0.7:8080 DOWN L7STS); "
              "that stack is not healthy (see ./stacks.py status)")


def routes_failure_payload():
    """A release whose containers docker found healthy, but not all of them UP in HAProxy."""
    return _plan("release"), _orch(
        _step("release", "containers", 0, kind="state", duration=2604.0, changes=_containers()),
        _routes(1, result=False, duration=30012.0,
                comment=(f"Running function haproxy_runtime.set_routes failed on minions: {MINION} "
                         f"Function haproxy_runtime.set_routes ran on {MINION}."),
                changes={"ret": {MINION: f"ERROR: {GATE_ERROR}"}}),
        _cleanup_ran(2),
        retcode=1,
    )


REFUSAL = "app 1.0 is already active; release a new version, or deactivate it first"
LOCK_HELD = ("app is locked by release 2.0 of alice since 2024-05-01T12:00:00Z; try again when it ends, "
             "or add --wait SECONDS")
RELEASE_STEPS = ["containers", "routes", "cleanup"]


def test_outcome_success():
    out = outcome.build(*success_payload())
    assert out["ok"] is True
    assert out["error"] is None and out["failed_step"] is None
    assert [s["step"] for s in out["steps"]] == RELEASE_STEPS
    assert [s["skipped"] for s in out["steps"]] == [False, False, True]
    assert [s["result"] for s in out["steps"]] == [True, True, None]
    assert out["steps"][0] == {"step": "containers", "result": True, "skipped": False,
                               "comment": "States ran successfully. Updating lab-minion.", "seconds": 2.604}
    assert out["steps"][1]["seconds"] == 0.18
    assert not out["refused"]
    assert out["cleaned"] == []
    # the runner fills these after its commit
    assert out["changed"] is None and out["revision"] == 7 and out["version"] == "1.0"


def test_outcome_success_with_loadbal_step():
    out = outcome.build(*success_payload(loadbal=True))
    assert out["ok"] is True
    assert [s["step"] for s in out["steps"]] == ["loadbal"] + RELEASE_STEPS
    assert out["steps"][0]["seconds"] == 1.8


def test_outcome_activate():
    out = outcome.build(*activate_payload())
    assert out["ok"] is True
    assert [s["step"] for s in out["steps"]] == ["routes", "remove 0.8"]
    assert [s["seconds"] for s in out["steps"]] == [0.04, 1.5]


def test_outcome_steps_follow_run_num_not_dict_order():
    plan, ret = success_payload(loadbal=True)
    ret["data"][MASTER] = dict(reversed(list(ret["data"][MASTER].items())))
    assert [s["step"] for s in outcome.build(plan, ret)["steps"]] == ["loadbal"] + RELEASE_STEPS
    # and not the plan's order either: the run decides
    swapped = {steps_mod.state_id("release", "loadbal"): 1, steps_mod.state_id("release", "containers"): 0}
    for value in ret["data"][MASTER].values():
        value["__run_num__"] = swapped.get(value["__id__"], value["__run_num__"])
    assert [s["step"] for s in outcome.build(plan, ret)["steps"]] == ["containers", "loadbal", "routes",
                                                                      "cleanup"]


def test_outcome_nonzero_retcode_without_failed_step():
    plan, ret = success_payload()
    ret["retcode"] = 2
    out = outcome.build(plan, ret)
    assert out["ok"] is False
    assert out["failed_step"] is None
    assert out["error"] == "the orchestration returned retcode 2; see the master's log"


@pytest.mark.parametrize("action, message", [
    ("release", REFUSAL),
    ("release", LOCK_HELD),  # the runner takes the lock: another action holding it is a refusal
    ("deactivate", "app 1.0 is active: deactivating it leaves production answering 503; add --force to do it "
                   "anyway, or activate another version first"),
])
def test_outcome_refused(action, message):
    for given in ({"action": action, "app": "app", "version": "1.0"}, _plan(action)):  # request or plan
        out = outcome.refused(given, message)
        assert out["ok"] is False
        assert out["refused"] is True
        assert out["error"] == message
        assert out["steps"] == []
        assert out["changed"] is None and out["failed_step"] is None
        assert (out["action"], out["app"], out["version"]) == (action, "app", "1.0")


def test_outcome_containers_failure():
    out = outcome.build(*containers_failure_payload())
    assert out["ok"] is False
    assert out["error"] == f"step containers failed: {MINION}: {UNHEALTHY}"
    assert out["failed_step"] == "containers"
    assert out["changed"] is None
    assert [(s["step"], s["result"], s["skipped"]) for s in out["steps"]] == [
        ("containers", False, False), ("routes", None, True), ("cleanup", True, False)]
    assert out["steps"][0]["comment"] == f"{MINION}: {UNHEALTHY}"
    assert out["steps"][0]["seconds"] == 3.421
    assert out["steps"][1]["comment"].startswith("One or more requisite failed")
    assert out["steps"][2]["seconds"] == 3.1


def test_outcome_containers_failure_after_removing_leftovers():
    # the leftovers removed before the failure are still found (stacks.py names them only on success)
    leftovers = {"0.8": ["app-0.8-web-1"], "0.7-rc-1": ["app-0.7-rc-1-api-1", "app-0.7-rc-1-web-1"]}
    out = outcome.build(*containers_failure_payload(leftovers=leftovers))
    assert out["ok"] is False and out["failed_step"] == "containers"
    assert out["cleaned"] == ["0.7-rc-1", "0.8"]


def test_outcome_routes_failure():
    out = outcome.build(*routes_failure_payload())
    assert out["ok"] is False
    assert out["error"] == f"step routes failed: {MINION}: {GATE_ERROR}"
    assert out["failed_step"] == "routes"
    assert out["changed"] is None
    assert [(s["step"], s["result"]) for s in out["steps"]] == [
        ("containers", True), ("routes", False), ("cleanup", True)]
    assert out["steps"][1]["comment"] == f"{MINION}: {GATE_ERROR}"
    assert out["steps"][1]["seconds"] == 30.012


def test_outcome_requisite_failure_is_never_the_reported_step():
    plan, ret = containers_failure_payload()
    # even when a requisite failure comes first in the run order
    for value in ret["data"][MASTER].values():
        if value["__id__"] == steps_mod.state_id("release", "routes"):
            value["__run_num__"] = 0
        elif value["__id__"] == steps_mod.state_id("release", "containers"):
            value["__run_num__"] = 1
    out = outcome.build(plan, ret)
    assert out["steps"][0]["step"] == "routes" and out["steps"][0]["skipped"] is True
    assert out["steps"][0]["result"] is None
    assert out["error"] == f"step containers failed: {MINION}: {UNHEALTHY}"
    assert out["failed_step"] == "containers"
    assert "requisite" not in out["error"]


def test_outcome_function_failure_no_minions_matched():
    # activate: its first step is the routes switch, on the load balancer
    plan = _plan("activate", stop=[{"version": "0.8", "state": "inactive"}])
    ret = _orch(
        _routes(0, action="activate", result=False, changes={},
                comment="No minions matched the target. No command was sent, no jid was assigned."),
        _requisite_failed("activate", "remove 0.8", 1, "routes", kind="state"),
        retcode=1,
    )
    out = outcome.build(plan, ret)
    assert out["error"] == ("step routes failed: No minions matched the target. No command was sent, "
                            "no jid was assigned.; is the minion up? (salt-run manage.status)")
    assert [(s["step"], s["skipped"]) for s in out["steps"]] == [("routes", False), ("remove 0.8", True)]


def test_outcome_function_failure_from_comment_only():
    # no usable changes.ret (minion answered True/None): the ERROR line of the comment, as
    # a Salt that lists the failures in the comment gives it (rollback's gate, checked once)
    error = ("backend app_a: 1 of 2 servers UP and checked (s1 172.18.0.5:8080 DOWN L4CON); "
             "that stack is not healthy (see ./stacks.py status)")
    ret = _orch(
        _routes(0, action="rollback", result=False, changes={"ret": {MINION: True, "other-minion": None}},
                comment=(f"Running function haproxy_runtime.set_routes failed on minions: {MINION} "
                         f"Function haproxy_runtime.set_routes ran on {MINION}, other-minion.\n"
                         f"Failures:\n    {MINION}:\n        ERROR: {error}\n")),
        retcode=1,
    )
    out = outcome.build(_plan("rollback"), ret)
    assert out["error"] == f"step routes failed: {error}"
    assert out["failed_step"] == "routes"


def test_outcome_minion_returned_false():
    # salt.state: a minion that gave no state result (Salt puts False in changes.ret)
    ret = _orch(
        _step("release", "containers", 0, kind="state", result=False,
              comment=f"Run failed on minions: {MINION}\nMinion {MINION} did not return a state result.",
              changes={"out": "highstate", "ret": {MINION: False}}),
        _requisite_failed("release", "routes", 1, "containers", name="haproxy_runtime.set_routes"),
        _cleanup_ran(2),
        retcode=1,
    )
    out = outcome.build(_plan("release"), ret)
    assert out["error"] == (f"step containers failed: {MINION} did not return a result; is the minion up? "
                            "(salt-run manage.status)")


def test_outcome_state_failure():
    # the config formula's image failed to build: the minion's first real failure (by
    # __run_num__, not dict order) is named, not the states that only required it
    build_failed = ("Encountered error building pigeon/demoapp:1.0 as pigeon/demoapp:1.0: "
                    "The command '/bin/sh -c apk add curl' returned a non-zero code: 1")
    formula_failed = "One or more requisite failed: demoapp.image.build.demoapp-image-build-docker-image-present"
    ret = _orch(
        _step("release", "containers", 0, kind="state", result=False, comment=f"Run failed on minions: {MINION}",
              changes=_containers(result=False, comment=formula_failed, changes={}, extra=[
                  # the minion's states come in no particular order: __run_num__ tells
                  _minion_state("demoapp-config-file-cleanup-file-absent", "/srv/demoapp/0.9",
                                "file.absent", 8, result=False,
                                comment="Failed to remove /srv/demoapp/0.9: Device or resource busy"),
                  _minion_state("demoapp-config-file-build-dir-file-directory", "/srv/demoapp/1.0",
                                "file.directory", 0, comment="The directory /srv/demoapp/1.0 is in the correct state"),
                  _minion_state("demoapp-image-build-docker-image-present", "pigeon/demoapp",
                                "docker_image.present", 3, result=False,
                                comment=f"{build_failed}\nfetch https://dl-cdn.alpinelinux.org/...: temporary error"),
              ])),
        _requisite_failed("release", "routes", 1, "containers", name="haproxy_runtime.set_routes"),
        _cleanup_ran(2),
        retcode=1,
    )
    out = outcome.build(_plan("release"), ret)
    assert out["ok"] is False
    assert out["error"] == f"step containers failed: {MINION}: {build_failed}"
    assert out["cleaned"] == []
    # a state that only required the failed one is never named, even numbered first
    states = ret["data"][MASTER][f"salt_|-{steps_mod.state_id('release', 'containers')}_|-"
                                 f"{steps_mod.state_id('release', 'containers')}_|-state"]
    states["changes"]["ret"][MINION][STACK_KEY]["__run_num__"] = 1
    assert outcome.build(_plan("release"), ret)["error"] == out["error"]


def test_outcome_minion_render_error():
    # salt.state: the minion could not render stacks.running (Salt puts its list of errors in changes.ret)
    errors_list = ["Rendering SLS 'base:stacks.running' failed: Jinja variable 'dict object' has no "
                   "attribute 'network'\n/srv/salt/stacks/running.sls(12):\n---\n..."]
    ret = _orch(
        _step("release", "containers", 0, kind="state", result=False,
              comment=(f"Run failed on minions: {MINION}\nMinion {MINION} returned errors: "
                       f"{errors_list[0]}"),
              changes={"out": "highstate", "ret": {MINION: errors_list}}),
        _requisite_failed("release", "routes", 1, "containers", name="haproxy_runtime.set_routes"),
        retcode=1,
    )
    out = outcome.build(_plan("release", keep_failed=True), ret)
    assert out["error"] == (f"step containers failed: {MINION}: Jinja variable 'dict object' has no "
                            "attribute 'network'")


@pytest.mark.parametrize("per_master", [
    ["Rendering SLS 'base:orch.release' failed: Jinja variable 'dict object' has no attribute 'start'\n"
     "/srv/salt/orch/release.sls(22):\n---\n..."],
    "Rendering SLS 'base:orch.release' failed: Jinja variable 'dict object' has no attribute 'start'",
])
def test_outcome_render_error(per_master):
    ret = {"data": {MASTER: per_master}, "outputter": "highstate", "retcode": 1}
    out = outcome.build(_plan("release"), ret)
    assert out["ok"] is False
    assert out["steps"] == []
    assert out["changed"] is None and out["failed_step"] is None
    assert out["error"] == ("the orchestration could not be rendered: Jinja variable 'dict object' has no "
                            "attribute 'start'; see the master's log")


@pytest.mark.parametrize("ret, shown", [
    ("'state.orchestrate' is not available.", "'state.orchestrate' is not available."),
    (None, "null"),
    (["a", "b"], '["a", "b"]'),
    ({"return": "no data key"}, '{"return": "no data key"}'),
    ("ERROR: something broke\nTraceback ...", "something broke"),
])
def test_outcome_not_an_orchestration(ret, shown):
    out = outcome.build(_plan("release"), ret)
    assert out["ok"] is False
    assert out["steps"] == []
    assert out["changed"] is None
    assert out["error"] == f"unexpected answer from the orchestration: {shown}"


def test_outcome_names_the_leftovers_a_release_removed():
    """A release whose containers step first removed what interrupted actions left: on two
    minions, containers of 1.1-rc-1 and of 0.7 (stack_containers.running's changes)."""
    plan, ret = success_payload()
    key = next(k for k in ret["data"][MASTER] if steps_mod.state_id("release", "containers") in k)
    step = ret["data"][MASTER][key]
    step["changes"] = _containers(changes={"containers": CREATED, "leftovers_removed": {
        "1.1-rc-1": ["app-1.1-rc-1-api-1", "app-1.1-rc-1-web-1"]}})
    other = copy.deepcopy(step["changes"]["ret"][MINION])
    other[STACK_KEY]["changes"]["leftovers_removed"] = {"0.7": ["app-0.7-web-1"],
                                                        "1.1-rc-1": ["app-1.1-rc-1-web-2"]}
    step["changes"]["ret"]["other-minion"] = other
    result = outcome.build(plan, ret)
    assert result["ok"] is True
    assert result["cleaned"] == ["0.7", "1.1-rc-1"]
    assert outcome.build(*success_payload())["cleaned"] == []


def test_first_line():
    assert outcome.first_line("ERROR: it broke\nTraceback...") == "it broke"
    assert outcome.first_line("Passed invalid arguments: bad\n") == "bad"
    assert outcome.first_line("\n\n  second line  \nthird") == "second line"
    assert outcome.first_line("") == "(no comment)"


# ---------------------------------------------------------------------------
# renaming the state IDs changes nothing stacks.py shows
JID = "20261203225048000001"
RENAMED_FORMAT = "{action}_{step}_step"  # nothing like pigeon-<action>-<step>


def _renamed(case, monkeypatch):
    """(plan, ret) of ``case`` as they would be with pigeon_steps.ID_FORMAT = RENAMED_FORMAT: the
    plan's step table made again, every state ID of the orchestration's return changed (its key,
    __id__, the name salt.state takes from its ID, the requisites its comments name)."""
    plan, ret = copy.deepcopy(case["plan"]), copy.deepcopy(case["ret"])
    old = {s["step"]: s["id"] for s in plan["steps"]}
    with monkeypatch.context() as patch:
        patch.setattr(steps_mod, "ID_FORMAT", RENAMED_FORMAT)
        plan["steps"] = steps_mod.steps(plan)
    new_ids = {old[s["step"]]: s["id"] for s in plan["steps"]}
    assert sorted(new_ids) == sorted(old.values()) and not set(new_ids) & set(new_ids.values())
    action = plan["action"]
    refs = re.compile("|".join(re.escape(f"orch.{action}.{sid}") + r"(?=,|$)"
                               for sid in sorted(new_ids, key=len, reverse=True)))

    def renamed_state(key, value):
        module, sid, name, function = key.split("_|-")
        assert value["__id__"] == sid and sid in new_ids  # every state of the run is a step of the plan
        value = dict(value, __id__=new_ids[sid], name=new_ids.get(value["name"], value["name"]))
        value["comment"] = refs.sub(lambda m: f"orch.{action}.{new_ids[m.group(0)[len(action) + 6:]]}",
                                    value["comment"])
        return "_|-".join((module, new_ids[sid], new_ids.get(name, name), function)), value

    ret["data"] = {master: dict(renamed_state(k, v) for k, v in states.items())
                   for master, states in ret["data"].items()}
    return plan, ret


def _runner_answer(case, plan, ret):
    """What deploy._run returns for that run: build(), then what its commit fills."""
    done = outcome.build(plan, ret)
    if done["ok"]:
        done.update({k: case["outcome"][k] for k in FILLED_AFTER_COMMIT})
    return {"outcome": done}


class ScriptedStream:
    """salt-api's /events as SaltApi.deploy reads them: the events of one action."""

    def __init__(self, events):
        self.events, self.status = list(events), 200

    def next(self, until):
        return self.events.pop(0) if self.events else None

    def close(self):
        pass


def _events(plan, ret, answer):
    """What the master publishes for one action: the runner's table of steps (salt/run/<jid>/steps),
    the orchestration's progress (salt/job/<jid>/prog/<master>/<n>, as the steps end), the runner's
    return (salt/run/<jid>/ret)."""
    def event(tag, data):
        return tag, {"tag": tag, "data": dict(data, _stamp="2026-12-03T22:50:48.000000")}

    states = sorted(ret["data"][MASTER].values(), key=lambda s: s["__run_num__"])
    return [event(f"salt/run/{JID}/steps", {"steps": {s["id"]: s["step"] for s in plan["steps"]}}),
            *(event(f"salt/job/{JID}/prog/{MASTER}/{s['__run_num__']}", {"ret": s, "len": len(states)})
              for s in states),
            event(f"salt/run/{JID}/ret", {"fun": f"runner.deploy.{plan['action']}", "jid": JID,
                                          "user": "deployer", "success": True, "return": answer})]


def _stacks_py(monkeypatch, capsys, plan, ret, answer, *flags, calls=None):
    """./stacks.py's output for one action whose runner returned ``answer`` after running ``ret``:
    (stdout lines, stderr lines, exit code), through SaltApi.deploy (events, or the runner client);
    ``calls``: the salt-api clients it asked (runner_async, runner)."""
    client = saltapi.SaltApi("https://salt.example:8000", "deployer", "pw", "pam", timeout=30)
    client.token = "t"

    def post(path, payload):
        if calls is not None:
            calls.append(payload[0]["client"])
        if payload[0]["client"] == "runner_async":
            return {"return": [{"jid": JID, "tag": f"salt/run/{JID}/new"}]}
        return {"return": [copy.deepcopy(answer)]}

    with monkeypatch.context() as patch:
        patch.setattr(client, "_post", post)
        patch.setattr(saltapi, "EventStream", lambda api: ScriptedStream(_events(plan, ret, copy.deepcopy(answer))))
        patch.setattr(cli, "make_client", lambda args: client)
        argv = [plan["action"], "--app-name", plan["app"]]
        if plan["action"] in ("release", "deactivate"):  # activate and rollback: the runner's choice
            argv += ["--version", plan["version"]]
        argv += ["--force"] * bool(plan.get("force")) + ["--keep-failed"] * bool(plan.get("keep_failed"))
        code = cli.main(argv + list(flags))
    captured = capsys.readouterr()
    return captured.out.splitlines(), captured.err.splitlines(), code


def _json(out):
    doc = json.loads("\n".join(out))
    assert isinstance(doc.pop("seconds"), float)
    return doc


@pytest.mark.parametrize("name", RECORDED)
def test_renaming_the_state_ids_changes_no_line(name, monkeypatch, capsys):
    case = recorded(name)
    plan, ret = _renamed(case, monkeypatch)
    assert plan["steps"] != case["plan"]["steps"] and json.dumps(ret) != json.dumps(case["ret"])
    assert not re.search(r"pigeon-(release|activate|deactivate|rollback)", json.dumps([plan["steps"], ret]))
    original = (case["plan"], case["ret"], _runner_answer(case, case["plan"], case["ret"]))
    renamed = (plan, ret, _runner_answer(case, plan, ret))
    for flags, client in (((), "runner_async"), (("--no-progress",), "runner")):
        # the lines as the steps end (progress events), or at the end (the runner client)
        calls = []
        before = _stacks_py(monkeypatch, capsys, *original, *flags, calls=calls)
        after = _stacks_py(monkeypatch, capsys, *renamed, *flags, calls=calls)
        assert after == before
        assert calls == [client, client]
        out, err, code = before
        assert code == (0 if case["outcome"]["ok"] else 1)
        shown = [s for s in case["outcome"]["steps"] if not s["skipped"]]
        assert out[1:1 + len(shown)] == [cli.step_line(s) for s in shown]
        assert len(err) == (0 if case["outcome"]["ok"] else 1)


# the steps skipped because a step they require failed: Salt's comment names state IDs
# (One or more requisite failed: orch.release.<id>); the outcome names the steps instead
NAMES_STATE_IDS = {"release-unhealthy", "release-unhealthy-kept"}


@pytest.mark.parametrize("name", RECORDED)
def test_renaming_the_state_ids_changes_no_json(name, monkeypatch, capsys):
    case = recorded(name)
    original = (case["plan"], case["ret"], _runner_answer(case, case["plan"], case["ret"]))
    plan, ret = _renamed(case, monkeypatch)
    renamed = (plan, ret, _runner_answer(case, plan, ret))
    before, err_before, code = _stacks_py(monkeypatch, capsys, *original, "--json")
    after, err_after, _ = _stacks_py(monkeypatch, capsys, *renamed, "--json")
    assert (err_after, _json(after)) == (err_before, _json(before))
    assert code == (0 if case["outcome"]["ok"] else 1)


def test_a_requisite_failure_names_the_step_not_its_state_id():
    for name in sorted(NAMES_STATE_IDS):
        case = recorded(name)
        comments = [s["comment"] for s in outcome.build(case["plan"], case["ret"])["steps"]
                    if s["comment"].startswith("One or more requisite failed: ")]
        assert comments == ["One or more requisite failed: containers"], comments


def test_the_cli_reads_no_state_id():
    """pigeon/ (stacks.py's package) never spells, parses or matches a state ID: it shows the
    outcome the runner made, and maps progress events to steps through the runner's table."""
    sources = {path.name: path.read_text() for path in sorted((REPO / "pigeon").glob("*.py"))}
    assert {"cli.py", "saltapi.py", "errors.py"} <= set(sources)
    assert "outcome.py" not in sources
    for name, text in sources.items():
        assert "_|-" not in text, name  # Salt's state keys
        assert "ID_FORMAT" not in text and "state_id" not in text, name
        for action in cli.ACTIONS:
            assert f"pigeon-{action}" not in text, name
        # no regular expression about state IDs (STEP_RE, LEFTOVER_RE were)
        for pattern in re.findall(r"re\.(?:compile|match|fullmatch|search|findall|sub|split)\(\s*r?(['\"])(.*?)\1",
                                  text):
            assert "pigeon-" not in pattern[1] and "_|-" not in pattern[1], (name, pattern[1])
        assert "STEP_RE" not in text and "LEFTOVER_RE" not in text, name
        assert "from pigeon.outcome" not in text and "import outcome" not in text, name


def test_progress_steps_are_the_outcomes_steps():
    """SaltApi.deploy's lines as the steps end (saltapi.progress_step) judge a step as the
    outcome does: the same result, skipped and seconds, for every state the lab recorded."""
    for name in RECORDED:
        case = recorded(name)
        table = {s["id"]: s["step"] for s in case["plan"]["steps"]}
        states = sorted(case["ret"]["data"][MASTER].values(), key=lambda s: s["__run_num__"])
        progress = [saltapi.progress_step(table[s["__id__"]], s) for s in states]
        assert progress == [{k: v for k, v in s.items() if k != "comment"} for s in case["outcome"]["steps"]]


def test_errors_first_line():
    assert errors.first_line("\n  one \ntwo") == "one"
    assert errors.first_line("") == "(empty)"


def test_a_cancelled_action_says_what_was_done_and_what_not():
    plan = {"action": "release", "app": "app", "version": "1.0", "generation": 3, "steps": [
        {"step": s, "id": f"pigeon-release-{s}"} for s in ("containers", "routes", "cleanup")]}

    def state(step, n, result, comment, changes=None):
        return {"__id__": f"pigeon-release-{step}", "__run_num__": n, "result": result, "comment": comment,
                "changes": changes or {}, "duration": 10}

    ret = {"retcode": 1, "data": {"master": {
        "a": state("containers", 0, True, "States ran successfully."),
        "b": state("routes", 1, False, "not run: cancelled by alice at t"),
        "c": state("cleanup", 2, True, "States ran successfully.", {"ret": {}})}}}
    built = outcome.build(plan, ret)
    assert built["ok"] is False and built["failed_step"] == "routes"
    assert built["error"] == ("cancelled by alice at t before step routes; done: containers, cleanup; "
                              "not run: routes")
