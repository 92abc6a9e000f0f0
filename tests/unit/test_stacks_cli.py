"""
Unit tests for stacks.py, the command line client of salt-api (the pigeon package behind it).

The salt-api side is FakeSaltApi: a real HTTP server (http.server, plain http
on 127.0.0.1, an ephemeral port) in a thread, answering /login and / like
rest_cherrypy does, with canned state.orchestrate returns shaped like the ones
the master gives for the orch.* SLS files.
"""

import atexit
import copy
import http.server
import json
import os
import pathlib
import socket
import sys
import tempfile
import threading
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pigeon import cli, errors, outcome, saltapi  # noqa: E402  pylint: disable=wrong-import-position

ENV_VARS = ("SALTAPI_URL", "SALTAPI_USER", "SALTAPI_PASS", "SALTAPI_EAUTH", "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE", "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
            "all_proxy", "ALL_PROXY")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No salt-api settings or proxies from the environment of whoever runs the tests."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


# ---------------------------------------------------------------------------
# canned orchestration returns, shaped like the master's (Salt 3008) for the orch.* SLS
# files: a release is containers -> routes -> commit, with cleanup and abort on failure
MASTER = "lab"
MINION = "lab-minion"


def _step(sid, run_num, kind="runner", name=None, result=True, comment=None, changes=None,
          duration=100.0, module="salt"):
    """One state's return in an orchestration, keyed the way Salt keys it."""
    name = name or sid
    if comment is None:
        comment = {"runner": f"Runner function '{name}' executed.",
                   "function": f"Function ran successfully. Function {name} ran on {MINION}.",
                   "state": f"States ran successfully. Updating {MINION}."}.get(kind, "Success!")
    value = {"name": name, "result": result, "comment": comment, "changes": changes or {},
             "__run_num__": run_num, "__id__": sid, "__sls__": "orch." + sid.split("-")[1],
             "start_time": "12:00:00.000000", "duration": duration}
    return f"{module}_|-{sid}_|-{name}_|-{kind}", value


def _skipped(sid, run_num, name=None, kind="state"):
    """An onfail step that did not run because nothing failed."""
    key, value = _step(sid, run_num, kind=kind, name=name,
                       comment="State was not run because none of the onfail reqs changed",
                       duration=0.01)
    value["__state_ran__"] = False
    return key, value


def _requisite_failed(sid, run_num, *failed, name=None, kind="runner"):
    """A step that did not run because a step it requires failed."""
    sls = "orch." + sid.split("-")[1]
    failed = failed or ("pigeon-release-containers-state",)
    key, value = _step(sid, run_num, kind=kind, name=name, result=False, duration=0.02,
                       comment="One or more requisite failed: " + ", ".join(f"{sls}.{f}" for f in failed))
    value["__state_ran__"] = False
    return key, value


def _orch(*steps, retcode=0):
    return {"data": {MASTER: dict(steps)}, "outputter": "highstate", "retcode": retcode}


def _minion_state(sid, name, fun, run_num, result=True, comment="", changes=None):
    """One state of a salt.state step on the minion: (key, return)."""
    module, function = fun.split(".")
    return (f"{module}_|-{sid}_|-{name}_|-{function}",
            {"__id__": sid, "name": name, "result": result, "comment": comment, "changes": changes or {},
             "__run_num__": run_num, "duration": 10.0})


STACK_KEY = "stack_containers_|-stacks-running-stack-containers-running_|-app 1.0_|-running"


def _containers(result=True, comment="4 of 4 containers healthy", changes=None, extra=()):
    """The changes of the containers step (stacks.running on the app minion)."""
    states = dict(extra)
    states.update([_minion_state(
        "stacks-running-stack-containers-running", "app 1.0", "stack_containers.running", 9,
        result=result, comment=comment,
        changes={} if changes is None else changes)])
    return {"out": "highstate", "ret": {MINION: states}}


CREATED = {f"app-1.0-{service}-{replica}": "created" for service in ("web", "api") for replica in (1, 2)}
COMMIT_RETURN = {
    "app": "app", "version": "1.0", "message": "app 1.0 released in slot b", "noop": False,
    "stacks": {"0.9": {"state": "active", "slot": "a", "since": "2024-05-01T11:00:00Z", "by": "deployer"},
               "1.0": {"state": "release", "slot": "b", "since": "2024-05-01T12:00:03Z", "by": "deployer"}},
    "routes": {"app/production": "app_a", "app/internal": "app_b"},
}
ROUTES_RETURN = {"changes": {"app/internal": {"old": "app_a", "new": "app_b"}},
                 "map": {"app/production": "app_a", "app/internal": "app_b"}}


def success_payload(commit_return=None, loadbal=False):
    """A release that went through (with the loadbal step when the app is new)."""
    first = []
    if loadbal:
        first = [_step("pigeon-release-loadbal-state", 0, kind="state", duration=1800.0,
                       comment=f"States ran successfully. No changes made to {MINION}.")]
    n = len(first)
    return _orch(
        *first,
        _step("pigeon-release-containers-state", n, kind="state", duration=2603.5,
              changes=_containers(changes=CREATED)),
        _step("pigeon-release-routes-function", n + 1, kind="function", name="haproxy_runtime.set_routes",
              duration=180.0, changes={"ret": {MINION: ROUTES_RETURN}}),
        _skipped("pigeon-release-cleanup-state", n + 2),
        _step("pigeon-release-commit-runner", n + 3, name="stacks.commit", duration=60.0,
              changes={"return": commit_return or COMMIT_RETURN}),
        _skipped("pigeon-release-abort-runner", n + 4, name="stacks.abort", kind="runner"),
    )


def activate_payload(commit_return):
    """An activate: production to the release's slot, the old inactive stack (0.8) removed."""
    return _orch(
        _step("pigeon-activate-routes-function", 0, kind="function", name="haproxy_runtime.set_routes",
              duration=40.0, changes={"ret": {MINION: {
                  "changes": {"app/production": {"old": "app_a", "new": "app_b"}},
                  "map": {"app/production": "app_b", "app/internal": "app_b"}}}}),
        _step("pigeon-activate-remove-0.8-state", 1, kind="state", duration=1500.0),
        _step("pigeon-activate-commit-runner", 2, name="stacks.commit", duration=60.0,
              changes={"return": commit_return}),
        _skipped("pigeon-activate-abort-runner", 3, name="stacks.abort", kind="runner"),
    )


def _cleanup_ran(run_num):
    """The release's cleanup after a failure: stacks.absent removed what the release started."""
    return _step("pigeon-release-cleanup-state", run_num, kind="state", duration=3100.0,
                 changes={"out": "highstate", "ret": {MINION: dict([
                     _minion_state("stacks-absent-docker-container-absent", "app-1.0-web-1",
                                   "docker_container.absent", 2, comment="Removed container 'app-1.0-web-1'",
                                   changes={"removed": {"comment": "Removed container 'app-1.0-web-1'"}}),
                     _minion_state("stacks-absent-docker-network-absent", "pigeon-app-1.0",
                                   "docker_network.absent", 6, comment="Removed network 'pigeon-app-1.0'",
                                   changes={"removed": True}),
                 ])}})


def _aborted(run_num, action="release"):
    return _step(f"pigeon-{action}-abort-runner", run_num, name="stacks.abort",
                 changes={"return": {"app": "app", "lock": "released"}})


def _after_failed_containers():
    """What a release runs after its containers step failed: routes and commit skipped on
    their requisites, cleanup and abort on their onfail."""
    return (
        _requisite_failed("pigeon-release-routes-function", 1, name="haproxy_runtime.set_routes", kind="function"),
        _cleanup_ran(2),
        _requisite_failed("pigeon-release-commit-runner", 3, "pigeon-release-containers-state",
                          "pigeon-release-routes-function", name="stacks.commit"),
        _aborted(4),
    )


# docker's health gate, in the containers step (stack_containers.wait_healthy)
UNHEALTHY = ("app 1.0 not healthy (docker marked it unhealthy after 3s): 3 of 4 containers healthy; "
             "app-1.0-web-1 unhealthy (curl: (22) The requested URL returned error: 500)")


def containers_failure_payload():
    """A release whose containers docker marked unhealthy: routes and commit never ran."""
    return _orch(
        _step("pigeon-release-containers-state", 0, kind="state", result=False, duration=3420.7,
              comment=f"Run failed on minions: {MINION}",
              changes=_containers(result=False, comment=UNHEALTHY, changes=CREATED)),
        *_after_failed_containers(),
        retcode=1,
    )


# HAProxy's gate, in the routes step (haproxy_runtime.set_routes with require_up and wait)
GATE_ERROR = ("backend app_b: 1 of 2 servers UP and checked after 30s (s2 172.18.0.7:8080 DOWN L7STS); "
              "that stack is not healthy (see ./stacks.py status)")


def routes_failure_payload():
    """A release whose containers docker found healthy, but not all of them UP in HAProxy."""
    return _orch(
        _step("pigeon-release-containers-state", 0, kind="state", duration=2603.5,
              changes=_containers(changes=CREATED)),
        _step("pigeon-release-routes-function", 1, kind="function", name="haproxy_runtime.set_routes",
              result=False, duration=30012.5,
              comment=(f"Running function haproxy_runtime.set_routes failed on minions: {MINION} "
                       f"Function haproxy_runtime.set_routes ran on {MINION}."),
              changes={"ret": {MINION: f"ERROR: {GATE_ERROR}"}}),
        _cleanup_ran(2),
        _requisite_failed("pigeon-release-commit-runner", 3, "pigeon-release-routes-function", name="stacks.commit"),
        _aborted(4),
        retcode=1,
    )


REFUSAL = "app 1.0 is already active; release a new version, or deactivate it first"
LOCK_HELD = ("app is locked by release 2.0 of alice since 2024-05-01T12:00:00Z; try again when it ends, "
             "or add --wait SECONDS")


def refused_payload(message=REFUSAL, action="release"):
    """The plan refused (made at render time): the orchestration is one failed test state."""
    return _orch(
        _step(f"pigeon-{action}-refused", 0, kind="configurable_test_state", module="test",
              name=f"{action} refused", result=False, comment=message, duration=0.5),
        retcode=1,
    )


# ---------------------------------------------------------------------------
# orchestration_outcome
RELEASE_STEPS = ["containers", "routes", "cleanup", "commit", "abort"]


def test_outcome_success():
    out = outcome.orchestration_outcome(success_payload())
    assert out["ok"] is True
    assert out["error"] is None
    assert out["result"] == COMMIT_RETURN
    assert [s["step"] for s in out["steps"]] == RELEASE_STEPS
    assert [s["skipped"] for s in out["steps"]] == [False, False, True, False, True]
    assert all(s["result"] is True for s in out["steps"])
    assert out["steps"][0] == {"step": "containers", "result": True, "skipped": False,
                               "comment": "States ran successfully. Updating lab-minion.", "duration_ms": 2603.5}
    assert out["steps"][1]["duration_ms"] == 180.0
    assert "raw" not in out["steps"][0]
    assert not out.get("refused")
    assert out["cleaned"] == []


def test_outcome_success_with_loadbal_step():
    out = outcome.orchestration_outcome(success_payload(loadbal=True))
    assert out["ok"] is True
    assert [s["step"] for s in out["steps"]] == ["loadbal"] + RELEASE_STEPS
    assert out["steps"][0]["duration_ms"] == 1800.0


def test_outcome_activate():
    done = {"app": "app", "version": "1.0", "message": "app 1.0 is active; 0.9 is inactive"}
    out = outcome.orchestration_outcome(activate_payload(done))
    assert out["ok"] is True
    assert [s["step"] for s in out["steps"]] == ["routes", "remove-0.8", "commit", "abort"]
    assert out["result"] == done


def test_outcome_steps_follow_run_num_not_dict_order():
    ret = success_payload()
    ret["data"][MASTER] = dict(reversed(list(ret["data"][MASTER].items())))
    out = outcome.orchestration_outcome(ret)
    assert [s["step"] for s in out["steps"]] == RELEASE_STEPS


def test_outcome_step_name_from_key_without_id():
    ret = success_payload()
    for value in ret["data"][MASTER].values():
        del value["__id__"]
    out = outcome.orchestration_outcome(ret)
    assert [s["step"] for s in out["steps"]] == RELEASE_STEPS


@pytest.mark.parametrize("sid, name", [
    ("pigeon-release-loadbal-state", "loadbal"),
    ("pigeon-release-containers-state", "containers"),
    ("pigeon-release-routes-function", "routes"),
    ("pigeon-release-cleanup-state", "cleanup"),
    ("pigeon-release-abort-runner", "abort"),
    ("pigeon-activate-routes-function", "routes"),
    ("pigeon-activate-remove-0.9-state", "remove-0.9"),
    ("pigeon-deactivate-drain-1.0-function", "drain-1.0"),
    ("pigeon-deactivate-remove-1.0-rc-2-state", "remove-1.0-rc-2"),
    ("pigeon-rollback-commit-runner", "commit"),
    ("pigeon-release-refused", "pigeon-release-refused"),
    ("something-else", "something-else"),
    (None, "?"),
])
def test_step_name(sid, name):
    assert outcome.step_name(sid) == name


def test_outcome_nonzero_retcode_without_failed_step():
    ret = success_payload()
    ret["retcode"] = 2
    out = outcome.orchestration_outcome(ret)
    assert out["ok"] is False
    assert out["error"] == "the orchestration returned retcode 2; see the master's log"


@pytest.mark.parametrize("action, message", [
    ("release", REFUSAL),
    ("release", LOCK_HELD),  # the plan takes the lock: another action holding it is a refusal
    ("deactivate", "app 1.0 is active: deactivating it leaves production answering 503; add --force to do it "
                   "anyway, or activate another version first"),
])
def test_outcome_refused(action, message):
    out = outcome.orchestration_outcome(refused_payload(message, action))
    assert out["ok"] is False
    assert out["refused"] is True
    assert out["error"] == message
    assert out["steps"] == []
    assert out["result"] is None


def test_outcome_runner_step_error():
    message = "app: this orchestration does not hold the lock; nothing recorded"
    ret = _orch(
        _step("pigeon-release-containers-state", 0, kind="state", changes=_containers(changes=CREATED)),
        _step("pigeon-release-routes-function", 1, kind="function", name="haproxy_runtime.set_routes",
              changes={"ret": {MINION: ROUTES_RETURN}}),
        _skipped("pigeon-release-cleanup-state", 2),
        _step("pigeon-release-commit-runner", 3, name="stacks.commit", result=False,
              comment="Runner function 'stacks.commit' failed.", changes={"return": {"Error": message}}),
        _aborted(4),
        retcode=1,
    )
    out = outcome.orchestration_outcome(ret)
    assert out["ok"] is False
    assert out["error"] == f"step commit failed: {message}"
    assert not out.get("refused")
    assert [s["result"] for s in out["steps"]] == [True, True, True, False, True]


def test_outcome_containers_failure():
    out = outcome.orchestration_outcome(containers_failure_payload())
    assert out["ok"] is False
    assert out["error"] == f"step containers failed: {MINION}: {UNHEALTHY}"
    assert out["result"] is None
    assert [(s["step"], s["result"], s["skipped"]) for s in out["steps"]] == [
        ("containers", False, False), ("routes", False, False), ("cleanup", True, False),
        ("commit", False, False), ("abort", True, False)]
    assert out["steps"][0]["comment"] == f"Run failed on minions: {MINION}"
    assert out["steps"][0]["duration_ms"] == 3420.7
    assert out["steps"][1]["comment"].startswith("One or more requisite failed")


def test_outcome_routes_failure():
    out = outcome.orchestration_outcome(routes_failure_payload())
    assert out["ok"] is False
    assert out["error"] == f"step routes failed: {MINION}: {GATE_ERROR}"
    assert out["result"] is None
    assert [(s["step"], s["result"]) for s in out["steps"]] == [
        ("containers", True), ("routes", False), ("cleanup", True), ("commit", False), ("abort", True)]
    assert out["steps"][1]["comment"].startswith(
        "Running function haproxy_runtime.set_routes failed on minions: lab-minion")
    assert out["steps"][1]["duration_ms"] == 30012.5


def test_outcome_requisite_failure_is_never_the_reported_step():
    ret = containers_failure_payload()
    # even when a requisite failure comes first in the run order
    for value in ret["data"][MASTER].values():
        if value["__id__"] == "pigeon-release-routes-function":
            value["__run_num__"] = 0
        elif value["__id__"] == "pigeon-release-containers-state":
            value["__run_num__"] = 1
    out = outcome.orchestration_outcome(ret)
    assert out["steps"][0]["step"] == "routes" and out["steps"][0]["result"] is False
    assert out["error"] == f"step containers failed: {MINION}: {UNHEALTHY}"
    assert "requisite" not in out["error"]


def test_outcome_function_failure_from_comment_only():
    # activate: its first step is the routes switch, on the load balancer
    ret = _orch(
        _step("pigeon-activate-routes-function", 0, kind="function", name="haproxy_runtime.set_routes",
              result=False, comment="No minions matched the target. No command was sent, no jid was assigned."),
        _requisite_failed("pigeon-activate-commit-runner", 1, "pigeon-activate-routes-function",
                          name="stacks.commit"),
        _aborted(2, action="activate"),
        retcode=1,
    )
    out = outcome.orchestration_outcome(ret)
    assert out["error"] == ("step routes failed: No minions matched the target. No command was sent, "
                            "no jid was assigned.; is the minion up? (salt-run manage.status)")


def test_outcome_function_failure_without_minion_return():
    # no usable changes.ret (minion answered True/None): the ERROR line of the comment, as
    # a Salt that lists the failures in the comment gives it (rollback's gate, checked once)
    error = ("backend app_a: 1 of 2 servers UP and checked (s1 172.18.0.5:8080 DOWN L4CON); "
             "that stack is not healthy (see ./stacks.py status)")
    ret = _orch(
        _step("pigeon-rollback-routes-function", 0, kind="function", name="haproxy_runtime.set_routes",
              result=False, changes={"ret": {MINION: True, "other-minion": None}},
              comment=(f"Running function haproxy_runtime.set_routes failed on minions: {MINION} "
                       f"Function haproxy_runtime.set_routes ran on {MINION}, other-minion.\n"
                       f"Failures:\n    {MINION}:\n        ERROR: {error}\n")),
        retcode=1,
    )
    out = outcome.orchestration_outcome(ret)
    assert out["error"] == f"step routes failed: {error}"


def test_outcome_state_failure():
    # the config formula's image failed to build: the minion's first real failure (by
    # __run_num__, not dict order) is named, not the states that only required it
    formula_failed = "One or more requisite failed: demoapp.image.build.demoapp-image-build-docker-image-present"
    ret = _orch(
        _step("pigeon-release-containers-state", 0, kind="state", result=False,
              comment=f"Run failed on minions: {MINION}",
              changes=_containers(result=False, comment=formula_failed, extra=[
                  # the minion's states come in no particular order: __run_num__ tells
                  _minion_state("stacks-running-leftover-0.8-docker-network-absent", "pigeon-app-0.8",
                                "docker_network.absent", 8, result=False,
                                comment="Failed to remove network 'pigeon-app-0.8': network has active endpoints"),
                  _minion_state("demoapp-config-file-build-dir-file-directory", "/srv/demoapp/1.0",
                                "file.directory", 0, comment="The directory /srv/demoapp/1.0 is in the correct state"),
                  _minion_state("demoapp-image-build-docker-image-present", "pigeon/demoapp",
                                "docker_image.present", 3, result=False,
                                comment=("Encountered error building pigeon/demoapp:1.0 as pigeon/demoapp:1.0: "
                                         "The command '/bin/sh -c apk add curl' returned a non-zero code: 1\n"
                                         "fetch https://dl-cdn.alpinelinux.org/...: temporary error")),
                  _minion_state("stacks-running-leftover-0.8-docker-container-absent", "app-0.8-web-1",
                                "docker_container.absent", 7, comment="Removed container 'app-0.8-web-1'",
                                changes={"removed": {"comment": "Removed container 'app-0.8-web-1'"}}),
              ])),
        *_after_failed_containers(),
        retcode=1,
    )
    out = outcome.orchestration_outcome(ret)
    assert out["ok"] is False
    assert out["error"] == (f"step containers failed: {MINION}: Encountered error building pigeon/demoapp:1.0 "
                            "as pigeon/demoapp:1.0: The command '/bin/sh -c apk add curl' returned a non-zero code: 1")
    # the leftovers removed before the failure are still found (stacks.py names them only on success)
    assert out["cleaned"] == ["0.8"]
    # a state that only required the failed one is never named, even numbered first
    states = ret["data"][MASTER]["salt_|-pigeon-release-containers-state_|-pigeon-release-containers-state_|-state"]
    states["changes"]["ret"][MINION][STACK_KEY]["__run_num__"] = 1
    assert outcome.orchestration_outcome(ret)["error"] == out["error"]


def test_outcome_render_error():
    ret = {"data": {MASTER: ["Rendering SLS 'base:orch.release' failed: Jinja variable 'dict object' "
                             "has no attribute 'start'\n/srv/salt/orch/release.sls(22):\n---\n..."]},
           "outputter": "highstate", "retcode": 1}
    out = outcome.orchestration_outcome(ret)
    assert out["ok"] is False
    assert out["steps"] == []
    assert out["result"] is None
    assert out["error"] == ("the orchestration could not be rendered: Jinja variable 'dict object' has no "
                            "attribute 'start'; check the pillar (salt-run pillar.show_pillar) and the "
                            "master's log")


@pytest.mark.parametrize("ret, shown", [
    ("'state.orchestrate' is not available.", "'state.orchestrate' is not available."),
    (None, "null"),
    (["a", "b"], '["a", "b"]'),
    ({"return": "no data key"}, '{"return": "no data key"}'),
    ("ERROR: something broke\nTraceback ...", "something broke"),
])
def test_outcome_not_an_orchestration(ret, shown):
    out = outcome.orchestration_outcome(ret)
    assert out["ok"] is False
    assert out["steps"] == []
    assert out["result"] is None
    assert out["error"] == f"unexpected answer from the master: {shown}"


# ---------------------------------------------------------------------------
# parse_args
def _usage_error(capsys, argv, *needles):
    with pytest.raises(SystemExit) as info:
        cli.parse_args(argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("stacks.py: ")
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def test_parse_args_action_first():
    args = cli.parse_args(["release", "--app-name", "a", "--version", "1"])
    assert (args.command, args.app, args.version) == ("release", "a", "1")
    assert args.force is False and args.json is False and args.wait == 0
    assert args.saltapi_url is None and args.saltapi_eauth == "auto" and args.timeout == 600


def test_parse_args_original_form():
    args = cli.parse_args(["--app-name", "a", "--version", "1", "--action", "release"])
    assert (args.command, args.app, args.version) == ("release", "a", "1")


def test_parse_args_both_forms_agreeing_and_short_flags():
    args = cli.parse_args(["deactivate", "-a", "shop", "-V", "2.0", "--action", "deactivate", "--force"])
    assert (args.command, args.app, args.version, args.force) == ("deactivate", "shop", "2.0", True)


@pytest.mark.parametrize("argv", [["activate", "--app-name", "a"], ["rollback", "-a", "a"],
                                  ["status"], ["status", "--app-name", "a", "--json"],
                                  ["history", "-a", "a", "--limit", "5"]])
def test_parse_args_accepts(argv):
    args = cli.parse_args(argv)
    assert args.command == argv[0]


def test_parse_args_disagreement(capsys):
    _usage_error(capsys, ["release", "--app-name", "a", "--version", "1", "--action", "activate"],
                 "ACTION release and --action activate disagree")


@pytest.mark.parametrize("argv, needle", [
    (["release", "--version", "1"], "release needs --app-name"),
    (["--action", "activate"], "activate needs --app-name"),
    (["history"], "history needs --app-name"),
    (["deactivate", "--app-name", "a"], "deactivate needs --version"),
    (["--app-name", "a", "--version", "1"], "name an ACTION"),
    ([], "name an ACTION"),
    (["deploy", "--app-name", "a"], "invalid choice: 'deploy'"),
    (["--action", "status"], "invalid choice: 'status'"),
    (["release", "--app-name", "a", "--bogus"], "unrecognized arguments: --bogus"),
    (["release", "--app-name"], "expected one argument"),
    (["release", "-a", "a", "--wait", "soon"], "--wait"),
])
def test_parse_args_usage_errors(capsys, argv, needle):
    line = _usage_error(capsys, argv, needle)
    assert line.endswith("(see ./stacks.py --help)")


def test_parse_args_env_defaults(monkeypatch):
    monkeypatch.setenv("SALTAPI_URL", "https://salt.example:8000")
    monkeypatch.setenv("SALTAPI_USER", "deployer")
    monkeypatch.setenv("SALTAPI_PASS", "s3cret")
    monkeypatch.setenv("SALTAPI_EAUTH", "pam")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/pigeon/ca.pem")
    args = cli.parse_args(["status"])
    assert args.saltapi_url == "https://salt.example:8000"
    assert args.saltapi_user == "deployer"
    assert args.saltapi_pass == "s3cret"
    assert args.saltapi_eauth == "pam"
    assert args.ca_file == "/etc/pigeon/ca.pem"


def test_parse_args_flags_override_env(monkeypatch):
    monkeypatch.setenv("SALTAPI_URL", "https://salt.example:8000")
    monkeypatch.setenv("SALTAPI_USER", "deployer")
    monkeypatch.setenv("SALTAPI_PASS", "s3cret")
    monkeypatch.setenv("SALTAPI_EAUTH", "pam")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/pigeon/ca.pem")
    args = cli.parse_args(["status", "--saltapi-url", "https://other:8000", "--saltapi-user", "bob",
                              "--saltapi-pass", "pw", "--saltapi-eauth", "sharedsecret",
                              "--ca-file", "/tmp/ca.pem", "--timeout", "5"])
    assert args.saltapi_url == "https://other:8000"
    assert args.saltapi_user == "bob"
    assert args.saltapi_pass == "pw"
    assert args.saltapi_eauth == "sharedsecret"
    assert args.ca_file == "/tmp/ca.pem"
    assert args.timeout == 5.0


def test_make_client_verify(monkeypatch):
    base = ["status", "--saltapi-url", "https://salt:8000/"]
    assert cli.make_client(cli.parse_args(base)).verify is True
    assert cli.make_client(cli.parse_args(base + ["--ca-file", "/x/ca.pem"])).verify == "/x/ca.pem"
    assert cli.make_client(cli.parse_args(base + ["--ca-file", "/x/ca.pem", "--insecure"])).verify is False
    assert cli.make_client(cli.parse_args(base)).url == "https://salt:8000"


# ---------------------------------------------------------------------------
# a fake salt-api
class FakeSaltApi:
    """rest_cherrypy's /login and / (low-state runs), plain http on an ephemeral port."""

    PASSWORD = "secret"
    TOKEN = "t"

    def __init__(self):
        self.reset()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, code, body, content_type="application/json"):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                body = json.loads(raw) if raw else None
                fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if self.path == "/login":
                    if isinstance(body, dict) and body.get("password") == fake.PASSWORD:
                        self._send(200, {"return": [{"token": fake.TOKEN, "user": body.get("username"),
                                                     "eauth": body.get("eauth"), "perms": ["@runner"],
                                                     "start": time.time(), "expire": time.time() + 43200}]})
                    else:
                        self._send(401, b"<html><body>401 Unauthorized</body></html>", "text/html")
                elif self.path == "/":
                    if self.headers.get("X-Auth-Token") != fake.TOKEN:
                        self._send(401, b"<html><body>401 Unauthorized</body></html>", "text/html")
                    elif isinstance(body, list) and body and body[0].get("client") == "runner_async":
                        # a master without runner_async: stacks.py falls back to the runner client
                        self._send(400, b"<html><body>400 Bad Request: Client disabled</body></html>",
                                   "text/html")
                    elif fake.not_json:
                        self._send(200, b"<html><body>500 Internal Server Error</body></html>", "text/html")
                    else:
                        self._send(200, {"return": [copy.deepcopy(fake.payload)]})
                else:
                    self._send(404, b"not found", "text/plain")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def reset(self):
        self.payload = success_payload()
        self.not_json = False
        self.requests = []

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=2)


@pytest.fixture(scope="module")
def _server():
    fake = FakeSaltApi()
    yield fake
    fake.close()


@pytest.fixture
def api(_server):
    _server.reset()
    return _server


@pytest.fixture
def closed_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def _client(url, password=FakeSaltApi.PASSWORD):
    return saltapi.SaltApi(url, "deployer", password, "pam", timeout=5)


def test_saltapi_login_and_runner(api):
    client = _client(api.url + "/")
    assert client.url == api.url
    ret = client.runner("state.orchestrate", arg=["orch.release"],
                        kwarg={"pillar": {"pigeon": {"app": "app", "version": "1.0"}}})
    assert ret == success_payload()
    assert client.token == "t"
    login, run = api.requests
    assert login["path"] == "/login"
    assert login["body"] == {"username": "deployer", "password": "secret", "eauth": "pam"}
    assert run["path"] == "/"
    assert run["headers"]["X-Auth-Token"] == "t"
    assert run["headers"]["Accept"] == "application/json"
    assert run["body"] == [{"client": "runner", "fun": "state.orchestrate", "arg": ["orch.release"],
                            "kwarg": {"pillar": {"pigeon": {"app": "app", "version": "1.0"}}}}]
    # logged in once: a second run reuses the token
    client.runner("stacks.status")
    assert [r["path"] for r in api.requests] == ["/login", "/", "/"]
    assert api.requests[2]["body"] == [{"client": "runner", "fun": "stacks.status", "arg": [], "kwarg": {}}]


def test_saltapi_wrong_password(api):
    with pytest.raises(errors.StacksError) as info:
        _client(api.url, password="wrong").runner("stacks.status")
    assert info.value.code == 3
    assert "refused the credentials" in str(info.value)
    assert "'deployer'" in str(info.value) and "pam" in str(info.value)
    assert [r["path"] for r in api.requests] == ["/login"]


def test_saltapi_unreachable(closed_port):
    url = f"http://127.0.0.1:{closed_port}"
    with pytest.raises(errors.StacksError) as info:
        _client(url).runner("stacks.status")
    assert info.value.code == 3
    assert str(info.value).startswith(f"cannot reach salt-api at {url} (connection refused)")


def test_saltapi_not_json(api):
    api.not_json = True
    with pytest.raises(errors.StacksError) as info:
        _client(api.url).runner("stacks.status")
    assert info.value.code == 3
    assert str(info.value) == "salt-api answered something that is not JSON on /"


def test_saltapi_http_error(api):
    with pytest.raises(errors.StacksError) as info:
        _client(api.url)._post("/nowhere", {})
    assert info.value.code == 3
    assert str(info.value) == "salt-api answered HTTP 404 on /nowhere: not found"


def test_saltapi_needs_url_and_credentials():
    with pytest.raises(errors.StacksError) as info:
        saltapi.SaltApi("", "u", "p")
    assert info.value.code == 2 and "SALTAPI_URL" in str(info.value)
    with pytest.raises(errors.StacksError) as info:
        saltapi.SaltApi("http://127.0.0.1:9", None, "p").login()
    assert info.value.code == 2 and "SALTAPI_USER" in str(info.value)


# ---------------------------------------------------------------------------
# main, end to end against the fake salt-api
def _password_file(password):
    """A file holding ``password`` (--saltapi-pass-file), removed at exit."""
    fd, path = tempfile.mkstemp(prefix="pigeon-test-pass-")
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    atexit.register(os.unlink, path)
    return path


PASSWORD_FILE = _password_file(FakeSaltApi.PASSWORD)


def _argv(api, *extra, action=("release", "--app-name", "app", "--version", "1.0")):
    return [*action, "--saltapi-url", api.url, "--saltapi-user", "deployer",
            "--saltapi-pass-file", PASSWORD_FILE, "--timeout", "5", *extra]


def test_main_success(api, capsys):
    assert cli.main(_argv(api)) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = captured.out.splitlines()
    assert lines[0] == f"release app 1.0 through {api.url}"
    assert lines[-2] == "app 1.0 released in slot b"
    assert lines[-1].startswith("Finished release app 1.0 in ")
    assert lines[-1].endswith(" s")
    step_lines = [ln.split() for ln in lines[1:-2]]
    # skipped steps (cleanup, abort) are not shown
    assert step_lines == [["containers", "ok", "2.6", "s"], ["routes", "ok", "0.2", "s"],
                          ["commit", "ok", "0.1", "s"]]
    run = api.requests[-1]
    # the deploy runner, with exactly the request's keys (its schema refuses any other)
    assert run["body"] == [{"client": "runner", "fun": "deploy.release", "arg": [],
                            "kwarg": {"app": "app", "version": "1.0"}}]


def test_main_settings_from_env_and_pillar_flags(api, capsys, monkeypatch):
    monkeypatch.setenv("SALTAPI_URL", api.url)
    monkeypatch.setenv("SALTAPI_USER", "deployer")
    monkeypatch.setenv("SALTAPI_PASS", FakeSaltApi.PASSWORD)
    api.payload = activate_payload({"app": "app", "version": "2.0", "message": "app 2.0 is active; 1.0 is inactive"})
    assert cli.main(["--app-name", "app", "--action", "release", "--wait", "30", "--keep-failed", "-q"]) == 0
    assert capsys.readouterr().out == ""
    kwarg = api.requests[-1]["body"][0]["kwarg"]
    assert kwarg == {"app": "app", "wait": 30, "keep_failed": True}
    assert api.requests[-1]["body"][0]["fun"] == "deploy.release"
    assert api.requests[0]["body"]["eauth"] == "auto"


def test_main_reports_the_version_the_orchestration_chose(api, capsys):
    api.payload = activate_payload({"app": "app", "version": "2.0", "message": "app 2.0 is active"})
    assert cli.main(_argv(api, action=("activate", "--app-name", "app"))) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"activate app through {api.url}"
    assert [ln.split()[:2] for ln in lines[1:-2]] == [["routes", "ok"], ["remove-0.8", "ok"], ["commit", "ok"]]
    assert lines[-2] == "app 2.0 is active"
    assert lines[-1].startswith("Finished activate app 2.0 in ")


FAILURES = [
    # docker's health gate: containers fails, routes and commit never run
    (containers_failure_payload, f"step containers failed: {MINION}: {UNHEALTHY}",
     [["containers", "FAILED", "3.4"], ["routes", "FAILED", "0.0"], ["cleanup", "ok", "3.1"],
      ["commit", "FAILED", "0.0"], ["abort", "ok", "0.1"]]),
    # HAProxy's gate: routes fails after its wait, commit never runs
    (routes_failure_payload, f"step routes failed: {MINION}: {GATE_ERROR}",
     [["containers", "ok", "2.6"], ["routes", "FAILED", "30.0"], ["cleanup", "ok", "3.1"],
      ["commit", "FAILED", "0.0"], ["abort", "ok", "0.1"]]),
]


@pytest.mark.parametrize("payload, error, step_lines", FAILURES)
def test_main_failed_orchestration(api, capsys, payload, error, step_lines):
    api.payload = payload()
    assert cli.main(_argv(api)) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"stacks.py: release app 1.0 failed: {error}"]
    assert "Finished" not in captured.out
    assert [ln.split()[:3] for ln in captured.out.splitlines()[1:]] == step_lines


@pytest.mark.parametrize("message", [REFUSAL, LOCK_HELD])
def test_main_refused(api, capsys, message):
    api.payload = refused_payload(message)
    assert cli.main(_argv(api)) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"stacks.py: release app 1.0 refused: {message}"]
    assert captured.out.splitlines() == [f"release app 1.0 through {api.url}"]  # no step lines


class ProgressClient:
    """Stands for SaltApi in run_action: passes each step to on_step as salt-api's progress
    events would (in the order the steps end), then returns the orchestration's return."""

    url = "https://salt.example:8000"

    def __init__(self, ret, order=None):
        self.ret, self.order, self.calls = ret, order, []

    def deploy(self, action, kwarg, on_step=None):
        self.calls.append({"action": action, "kwarg": kwarg, "progress": on_step is not None})
        if on_step is not None:
            values = sorted(self.ret["data"][MASTER].values(), key=lambda v: v["__run_num__"])
            by_id = {v["__id__"]: v for v in values}
            for sid in self.order or [v["__id__"] for v in values]:
                on_step(copy.deepcopy(by_id[sid]))
        return copy.deepcopy(self.ret)


def _run(client, *extra, action=("release", "--app-name", "app", "--version", "1.0")):
    lines = []
    args = cli.parse_args([*action, "--saltapi-url", client.url, *extra])
    try:
        report = cli.run_action(client, args, lines.append)
    except errors.StacksError as exc:
        return lines, exc
    return lines, report


def test_progress_lines_as_steps_end():
    # loadbal runs in parallel with the containers and ends after them
    client = ProgressClient(success_payload(loadbal=True), order=[
        "pigeon-release-containers-state", "pigeon-release-loadbal-state", "pigeon-release-routes-function",
        "pigeon-release-cleanup-state", "pigeon-release-commit-runner", "pigeon-release-abort-runner"])
    lines, report = _run(client)
    assert client.calls[0]["progress"] is True and client.calls[0]["action"] == "release"
    assert lines[0] == "release app 1.0 through https://salt.example:8000"
    # one line per step that ran, as it ended; skipped onfail steps (cleanup, abort) not shown,
    # and no second list of the steps at the end
    assert [ln.split() for ln in lines[1:-2]] == [
        ["containers", "ok", "2.6", "s"], ["loadbal", "ok", "1.8", "s"], ["routes", "ok", "0.2", "s"],
        ["commit", "ok", "0.1", "s"]]
    assert lines[-2] == "app 1.0 released in slot b"
    assert [s["step"] for s in report["steps"]] == ["loadbal"] + RELEASE_STEPS  # run order


def test_progress_lines_of_a_failed_release():
    lines, error = _run(ProgressClient(routes_failure_payload()))
    assert [ln.split()[:3] for ln in lines[1:]] == FAILURES[1][2]
    assert str(error) == f"release app 1.0 failed: {FAILURES[1][1]}"
    assert error.code == errors.EXIT_FAILED


def test_progress_lines_of_a_refusal():
    lines, error = _run(ProgressClient(refused_payload(LOCK_HELD)))
    assert lines == ["release app 1.0 through https://salt.example:8000"]  # the refused state is no step
    assert str(error) == f"release app 1.0 refused: {LOCK_HELD}"
    assert error.report["steps"] == []


@pytest.mark.parametrize("flag", ["--no-progress", "--json", "--quiet"])
def test_no_progress_lines_asked(flag):
    client = ProgressClient(success_payload())
    lines, report = _run(client, flag)
    assert client.calls[0]["progress"] is False
    assert report["ok"] is True
    assert [ln.split()[0] for ln in lines[1:-2]] == ["containers", "routes", "commit"]  # at the end


def test_main_wrong_password(api, capsys):
    argv = _argv(api)
    argv[argv.index("--saltapi-pass-file") + 1] = _password_file("wrong")
    assert cli.main(argv) == 3
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "refused the credentials" in err[0]


def test_main_unreachable(closed_port, capsys):
    assert cli.main(["status", "--saltapi-url", f"http://127.0.0.1:{closed_port}",
                        "--saltapi-user", "u", "--saltapi-pass-file", PASSWORD_FILE, "--timeout", "5"]) == 3
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("stacks.py: cannot reach salt-api")


def test_main_without_url(capsys):
    assert cli.main(["status"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "no salt-api URL" in err[0]


JSON_KEYS = {"action", "app", "version", "ok", "error", "seconds", "steps"}


def test_main_json_success(api, capsys):
    assert cli.main(_argv(api, "--json")) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    doc = json.loads(captured.out)
    assert JSON_KEYS <= set(doc)
    assert (doc["action"], doc["app"], doc["version"], doc["ok"], doc["error"]) == (
        "release", "app", "1.0", True, None)
    assert isinstance(doc["seconds"], float) and 0 <= doc["seconds"] < 3
    assert doc["result"] == COMMIT_RETURN
    assert [s["step"] for s in doc["steps"]] == RELEASE_STEPS
    assert [s["duration_ms"] for s in doc["steps"]] == [2603.5, 180.0, 0.01, 60.0, 0.01]
    assert set(doc["steps"][0]) == {"step", "result", "comment", "duration_ms"}


@pytest.mark.parametrize("payload, error, step_lines", FAILURES)
def test_main_json_failure(api, capsys, payload, error, step_lines):
    api.payload = payload()
    assert cli.main(_argv(api, "--json")) == 1
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert JSON_KEYS <= set(doc)
    assert doc["ok"] is False
    assert (doc["action"], doc["app"], doc["version"]) == ("release", "app", "1.0")
    assert doc["error"] == f"release app 1.0 failed: {error}"
    assert doc["result"] is None
    # every step, skipped or not, with its result
    assert [(s["step"], s["result"]) for s in doc["steps"]] == [
        (line[0], line[1] == "ok") for line in step_lines]
    assert captured.err.splitlines() == [f"stacks.py: {doc['error']}"]


def test_main_json_refused(api, capsys):
    api.payload = refused_payload(LOCK_HELD)
    assert cli.main(_argv(api, "--json")) == 1
    doc = json.loads(capsys.readouterr().out)
    assert (doc["ok"], doc["steps"], doc["result"]) == (False, [], None)
    assert doc["error"] == f"release app 1.0 refused: {LOCK_HELD}"


def _with_leftovers():
    """A release whose containers step first removed what interrupted actions left: two
    containers of 1.1-rc-1 (one state per name), and a 0.7 whose containers were gone already
    (only its network was left)."""
    ret = success_payload()
    steps = ret["data"][MASTER]
    key = next(k for k in steps if "-containers-" in k)
    removed = {"removed": {"comment": "Forcibly removed container"}}
    steps[key]["changes"] = _containers(changes=CREATED, extra=[
        _minion_state("stacks-running-leftover-1.1-rc-1-docker-container-absent", "app-1.1-rc-1-api-1",
                      "docker_container.absent", 0, changes=removed),
        _minion_state("stacks-running-leftover-1.1-rc-1-docker-container-absent", "app-1.1-rc-1-web-1",
                      "docker_container.absent", 1, changes=removed),
        _minion_state("stacks-running-leftover-1.1-rc-1-docker-network-absent", "pigeon-app-1.1-rc-1",
                      "docker_network.absent", 2, changes={"removed": True}),
        _minion_state("stacks-running-leftover-0.7-docker-container-absent", "app-0.7-web-1",
                      "docker_container.absent", 3, comment="Container 'app-0.7-web-1' does not exist"),
        # a network alone is not named: what counts is containers removed
        _minion_state("stacks-running-leftover-0.7-docker-network-absent", "pigeon-app-0.7",
                      "docker_network.absent", 4, changes={"removed": True}),
    ])
    return ret


def test_outcome_names_the_leftovers_a_release_removed():
    result = outcome.orchestration_outcome(_with_leftovers())
    assert result["ok"] is True
    assert result["cleaned"] == ["1.1-rc-1"]
    assert outcome.orchestration_outcome(success_payload())["cleaned"] == []


def test_main_names_the_leftovers_a_release_removed(api, capsys):
    api.payload = _with_leftovers()
    assert cli.main(_argv(api)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-3] == "removed what interrupted actions left of 1.1-rc-1"
    assert cli.main(_argv(api, "--json")) == 0
    assert json.loads(capsys.readouterr().out)["cleaned"] == ["1.1-rc-1"]


def test_connect_timeout_is_unreachable_not_deadline(monkeypatch):
    api = saltapi.SaltApi("https://salt.invalid:8000", "u", "p", timeout=5)

    def refuse(*args, **kwargs):
        raise stacks.requests.exceptions.ConnectTimeout("connect timed out")

    monkeypatch.setattr(api.session, "post", refuse)
    with pytest.raises(errors.StacksError) as error:
        api.login()
    assert error.value.code == errors.EXIT_API
    assert "cannot reach salt-api" in str(error.value)


# ---------------------------------------------------------------------------
# the token cache
@pytest.fixture(autouse=True)
def _no_token_cache(monkeypatch):
    """main() would keep tokens in ~/.cache: unit tests keep none unless they ask for one."""
    monkeypatch.setenv("PIGEON_TOKEN_CACHE", "off")


def _cached_client(url, path, password=FakeSaltApi.PASSWORD):
    return saltapi.SaltApi(url, "deployer", password, "pam", timeout=5,
                          token_cache=saltapi.TokenCache(str(path)))


def test_token_cache_logs_in_once_across_runs(api, tmp_path):
    path = tmp_path / "pigeon" / "tokens.json"
    _cached_client(api.url, path).runner("stacks.status")
    _cached_client(api.url, path).runner("stacks.status")
    assert [r["path"] for r in api.requests] == ["/login", "/", "/"]
    assert (path.stat().st_mode & 0o777) == 0o600
    assert "secret" not in path.read_text()  # the password is not stored, only a derived key


def test_token_cache_other_credentials_log_in(api, tmp_path):
    path = tmp_path / "tokens.json"
    _cached_client(api.url, path).runner("stacks.status")
    with pytest.raises(errors.StacksError) as info:
        _cached_client(api.url, path, password="wrong").runner("stacks.status")
    assert info.value.code == 3 and "refused the credentials" in str(info.value)
    assert [r["path"] for r in api.requests] == ["/login", "/", "/login"]


def test_token_cache_refused_token_logs_in_again(api, tmp_path):
    path = tmp_path / "tokens.json"
    _cached_client(api.url, path).runner("stacks.status")
    api.TOKEN = "t2"  # salt-api no longer knows the cached token (a new master)
    try:
        assert _cached_client(api.url, path).runner("stacks.status") == success_payload()
        assert [r["path"] for r in api.requests] == ["/login", "/", "/", "/login", "/"]
        assert json.loads(path.read_text()).popitem()[1]["token"] == "t2"
    finally:
        api.TOKEN = FakeSaltApi.TOKEN


def test_token_cache_skips_expiring_tokens(tmp_path):
    cache = saltapi.TokenCache(str(tmp_path / "tokens.json"))
    key = cache.key("https://m:8000", "u", "pam", "p")
    assert key != cache.key("https://m:8000", "u", "pam", "q")
    assert key != cache.key("https://other:8000", "u", "pam", "p")
    cache.put(key, "soon", time.time() + 30)
    assert cache.get(key) is None
    cache.put(key, "later", time.time() + 3600)
    assert cache.get(key) == "later"
    cache.drop(key)
    assert cache.get(key) is None


def test_token_cache_unreadable_file_is_ignored(tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text("not json")
    cache = saltapi.TokenCache(str(path))
    assert cache.get(cache.key("u", "u", "pam", "p")) is None


def test_token_cache_path(tmp_path):
    assert saltapi.token_cache_path({"PIGEON_TOKEN_CACHE": "off"}) is None
    assert saltapi.token_cache_path({"PIGEON_TOKEN_CACHE": "/x/t.json"}) == "/x/t.json"
    assert saltapi.token_cache_path({"XDG_CACHE_HOME": str(tmp_path)}) == str(tmp_path / "pigeon" / "tokens.json")


# ---------------------------------------------------------------------------
# deploy(): an action whose process died while the event stream stays open

class SilentStream:
    """An /events stream that opened and then says nothing (a master whose processes died)."""

    def __init__(self, api):
        self.status = 200

    def next(self, until):
        return None

    def close(self):
        pass


def _deploy_with_locks(monkeypatch, locks):
    """Run deploy() against a silent stream; stacks.status answers the lock from ``locks``
    in turn (a dict or None), or raises a StacksError given in it. Returns (error, calls)."""
    client = saltapi.SaltApi("http://127.0.0.1:1", "deployer", "pw", "pam", timeout=3600)
    client.token = "t"
    monkeypatch.setattr(saltapi, "EventStream", SilentStream)
    monkeypatch.setattr(saltapi.SaltApi, "SILENCE", 0)
    calls, answers = [], iter(locks)

    def post(path, payload):
        calls.append(payload[0])
        if payload[0]["client"] == "runner_async":
            return {"return": [{"jid": "20261203000000000000", "tag": "salt/run/x/new"}]}
        answer = next(answers)
        if isinstance(answer, errors.StacksError):
            raise answer
        return {"return": [{"app": {"stacks": {}, "routes": {}, "generation": 1, "lock": answer}}]}

    monkeypatch.setattr(client, "_post", post)
    with pytest.raises(errors.StacksError) as raised:
        client.deploy("release", {"app": "app", "version": "1.0"}, on_step=lambda step: None)
    return raised.value, calls


def test_deploy_gives_up_on_an_action_whose_lock_is_gone(monkeypatch):
    held = {"action": "release", "version": "1.0", "user": "deployer"}
    error, calls = _deploy_with_locks(monkeypatch, [held, held, None, held, None, None])
    assert error.code == errors.EXIT_FAILED
    assert str(error).startswith("the action ended without a result")
    assert "\n" not in str(error)
    # asked of the registry alone (observe=False): cheap, and no minion needs to answer
    asks = [c for c in calls if c["client"] == "runner"]
    assert len(asks) == 6  # one free lock between held ones is not enough: two in a row are
    assert all(c["fun"] == "stacks.status" and c["kwarg"] == {"app": "app", "observe": False} for c in asks)


def test_deploy_names_a_master_that_stopped_answering(monkeypatch):
    down = errors.StacksError("salt-api answered HTTP 500 on /: master not responding", errors.EXIT_API)
    error, _ = _deploy_with_locks(monkeypatch, [{"action": "release"}, down])
    assert error.code == errors.EXIT_API
    assert str(error) == "lost the action: salt-api answered HTTP 500 on /: master not responding"


CHERRYPY_PAGE = """<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"
"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html>
<head>
    <meta http-equiv="Content-Type" content="text/html; charset=utf-8"></meta>
    <title>500 Internal Server Error</title>
</head>
    <body>
        <h2>500 Internal Server Error</h2>
        <p>The server encountered an unexpected condition
 which prevented it from fulfilling the request.</p>
    </body>
</html>
"""


class _Response:
    def __init__(self, status, text):
        self.status_code, self.text = status, text


def test_an_html_error_page_is_one_line():
    client = saltapi.SaltApi("http://127.0.0.1:1", "deployer", "pw")
    with pytest.raises(errors.StacksError) as info:
        client._answer("/", _Response(500, CHERRYPY_PAGE))
    assert str(info.value) == ("salt-api answered HTTP 500 on /: 500 Internal Server Error - The server "
                               "encountered an unexpected condition which prevented it from fulfilling "
                               "the request.")
    assert info.value.code == errors.EXIT_API


def test_503_says_the_master_does_not_answer():
    client = saltapi.SaltApi("http://127.0.0.1:1", "deployer", "pw")
    with pytest.raises(errors.StacksError) as info:
        client._answer("/", _Response(503, CHERRYPY_PAGE.replace("500 Internal Server Error", "503 x")))
    assert "\n" not in str(info.value)
    assert "the salt-master does not answer" in str(info.value) and "make lab" in str(info.value)


def test_one_request_primitive_logs_in_again_once_for_any_request(monkeypatch):
    """A cached token salt-api refuses: one new login, the same request again (the event
    stream's GET as much as a POST), and no loop when the new token is refused too."""
    client = saltapi.SaltApi("http://127.0.0.1:1", "deployer", "pw", "pam")
    client.cached, logins, sent = True, [], []

    def login(fresh=False):
        logins.append(fresh)
        client.cached = False

    def send(method, path, **kwargs):
        sent.append((method, path))
        return _Response(401 if len(sent) < 3 else 200, "")

    monkeypatch.setattr(client, "login", login)
    monkeypatch.setattr(client, "_send", send)
    assert client.request("GET", "/events", stream=True).status_code == 401
    assert logins == [True] and sent == [("GET", "/events")] * 2
    assert client.request("GET", "/events", stream=True).status_code == 200  # not cached: no login
    assert logins == [True]


# ---------------------------------------------------------------------------
# --dry-run and --expect-revision
DRY_PLAN = {
    "action": "release", "app": "app", "version": "1.5", "generation": 7, "force": False,
    "noop": False, "message": "app 1.5 released in slot b",
    "start": {"version": "1.5", "slot": "b", "backend": "app_b", "network": "pigeon-app-1.5",
              "expected_up": 2, "keep": ["1.4"],
              "containers": [{"name": "app-1.5-web-1", "image": "pigeon/demoapp:1.5", "registered": True},
                             {"name": "app-1.5-api-1", "image": "pigeon/demoapp:1.5", "registered": False}]},
    "stop": [], "states": {"1.5": "release"},
    "routes_before": {"app": "app_a", "app@internal": "app_a"},
    "routes": {"app": "app_a", "app@internal": "app_b"},
    "config": {"target": "app-*", "target_type": "glob", "formula": "demoapp"},
    "loadbal": {"target": "lb-*", "target_type": "glob", "healthcheck_timeout": 30, "drain_timeout": 10},
    "converge_loadbal": False,
}


def test_dry_run_prints_the_plan_and_sends_dry_run(api, capsys):
    api.payload = {"dry_run": DRY_PLAN}
    assert cli.main(_argv(api, "--dry-run", action=("release", "--app-name", "app", "--version", "1.5"))) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "dry run: release app 1.5 at registry revision 7"
    assert "  start 2 containers of 1.5 in slot b on app-* (glob), network pigeon-app-1.5:" in out
    assert "  route app@internal: app_a -> app_b" in out
    assert not any(line.startswith("  route app:") for line in out)  # production unchanged
    assert "  1.5: release" in out
    sent = [r["body"][0] for r in api.requests if r["path"] == "/"]
    assert sent == [{"client": "runner", "fun": "deploy.release", "arg": [],
                     "kwarg": {"app": "app", "version": "1.5", "dry_run": True}}]  # runner, not runner_async


def test_dry_run_refused_exits_1_with_the_actions_line(api, capsys):
    api.payload = {"refused": REFUSAL}
    assert cli.main(_argv(api, "--dry-run")) == 1
    assert capsys.readouterr().err.splitlines() == [f"stacks.py: release app 1.0 refused: {REFUSAL}"]


def test_dry_run_json(api, capsys):
    api.payload = {"dry_run": DRY_PLAN}
    assert cli.main(_argv(api, "--dry-run", "--json")) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True and doc["dry_run"] is True and doc["plan"] == DRY_PLAN and doc["error"] is None


def test_expect_revision_is_sent(api, capsys):
    assert cli.main(_argv(api, "--expect-revision", "12", "--no-progress")) == 0
    sent = [r["body"][0]["kwarg"] for r in api.requests if r["path"] == "/"]
    assert sent[-1] == {"app": "app", "version": "1.0", "expect_revision": 12}


@pytest.mark.parametrize("argv, needle", [
    (["status", "--dry-run"], "--dry-run applies to actions only"),
    (["history", "--app-name", "app", "--expect-revision", "3"], "--expect-revision applies to actions only"),
    (["rollback", "--app-name", "app", "--expect-revision", "-1"], "is not a revision"),
    (["rollback", "--app-name", "app", "--expect-revision", "x"], "is not a revision"),
    (["rollback", "--app-name", "app", "--expect-revision", "1.5"], "is not a revision"),
])
def test_dry_run_and_revision_usage_errors(capsys, argv, needle):
    _usage_error(capsys, argv, needle)


def test_plan_lines_of_a_deactivation_and_a_noop():
    plan = dict(DRY_PLAN, action="deactivate", version="1.4", start=None,
                stop=[{"version": "1.4", "slot": "a", "state": "active", "backend": "app_a"}],
                states={"1.4": None}, routes={}, message="")
    lines = cli.plan_lines(plan)
    assert "  drain backend app_a (up to 10 s), then stop and remove the containers of 1.4" in lines
    assert "  route app: app_a -> none (503)" in lines and "  1.4: deactivated" in lines
    assert cli.plan_lines(dict(DRY_PLAN, noop=True, message="app 1.5 is released already")) == [
        "dry run: release app 1.5 at registry revision 7", "  nothing to do: app 1.5 is released already"]
