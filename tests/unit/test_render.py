"""
Render test: the orchestrations, the reactor and the SLS files through Salt's own renderer
pipeline, with hostile values.

How Salt is driven (as the master does it, no daemon):

- ``salt.loader.render(opts, functions, pillar=...)`` builds Salt's renderer modules (jinja,
  yaml, ...) with ``functions`` as their ``__salt__`` and the pillar as their ``__pillar__``;
- ``salt.template.compile_template`` runs a file through the render pipe of ``opts["renderer"]``
  (``jinja|yaml``) with the arguments ``HighState.render_state`` gives it (saltenv ``base``, the
  sls name, ``rendered_sls``); the reactor file goes through ``salt.state.Compiler.render_template``
  with ``tag`` and ``data``, as ``salt.utils.reactor.Reactor.render_reaction`` does;
- ``opts`` are Salt's master defaults with ``file_client: local`` and ``file_roots`` srv/salt,
  so Jinja's ``import 'orch/steps.jinja'`` / ``import_yaml`` go through Salt's SaltCacheLoader and
  its local file client (files cached under a temporary cachedir).

``__salt__`` holds only what the files call at render time: ``pigeon_runner.call`` (returns the
plan built here, and records its arguments), ``docker.ps`` (fake containers) and Salt's real
``pillar.get`` (the execution module, loaded by Salt's loader over the same pillar). The pillar of
the SLS files that run on the app minion is wrapped as Salt's RemotePillar wraps it
(``salt.utils.secret.hide``).

The plans are the real ones: the state machine (_utils/pigeon_statemachine.py) and
``stacks._expand`` (_runners/stacks.py) on registry entries made here, with the lab's stack
definition (srv/pillar/stacks.sls). Each hostile string then replaces every string and number of
a plan (booleans and None stay: they select branches, as does ``stop[].state``, which has a test
of its own), and every key of the free-form maps (routes, states, labels, docker_config, ...).

What is asserted, for each file and shape: the rendered data equals, type for type (``"on"`` is
not ``True``, ``"1.0"`` not ``1.0``, ``"null"`` not ``None``), the data the file is meant to
give, built below from the same values (``expected_*``): so the state IDs and their functions are
exactly those of the non-hostile plan, with the version in the IDs that embed one, and every
hostile value comes back as the same string wherever it is rendered (no Jinja evaluated in it).

Cases that fail on purpose (SLS defects, left unfixed; see the failure messages, which name the
line of Jinja's output that YAML refused):
- a character beyond the BMP ("\U0001F600"): ``tojson`` writes it as a surrogate pair
  ("\ud83d\ude00"), which libyaml (Salt's CSafeLoader) refuses, in every file; reachable through a
  stack definition that passes pigeon_schema (test_release_with_definition_that_passes_the_schema);
- a key of more than 1024 characters once escaped ("x" * 5000, 200 x "\u00fc"): YAML's limit on
  a simple key, in the state IDs that embed a version and in the flow mappings' keys (routes,
  require_up, states, labels, docker_config, the event data);
- an empty plan.error: the refused branch is not taken, the render fails on plan.noop/lb.target.
"""

import copy
import functools
import hashlib
import json
import re

import pytest
import salt.config
import salt.loader
import salt.state
import salt.template
import salt.utils.secret
import yaml
from salt.exceptions import SaltRenderError

from srv_modules import SALT_DIR, load

REPO = SALT_DIR.parents[1]

HOSTILE = [
    "x\nevil:\n  salt.function:\n    - name: cmd.run\n    - tgt: '*'\n    - arg: ['touch /tmp/pwned']",
    "'; touch /tmp/pwned; '",
    '"',
    "'",
    "{{ 7*7 }}",
    "{% raw %}",
    "- a",
    ": b",
    "# c",
    "&a",
    "*a",
    "!!python/object/apply:os.system ['id']",
    "|",
    ">",
    "on",
    "no",
    "null",
    "~",
    "0x1f",
    "1_000",
    "1.0",
    "",
    "\x00",
    "\x1b[31m",
    "\t",
    "\r\n",
    "\u2028",
    "\u202e",
    "ünï",
    "x" * 5000,
    # beyond the brief's corpus: a character outside the BMP (an emoji), which ASCII-escaped
    # JSON writes as a surrogate pair
    "\U0001F600",
]


def _hid(value):
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:16]}...len{len(value)}"


class RenderRefused(AssertionError):
    """Salt's renderer refused the file: nothing of it runs (it fails closed)."""


def _door_refuses(value):
    """Values the one door (pigeon_schema) never lets reach an SLS: empty, over 1000
    characters (YAML's limit for a key is 1024), or outside the BMP (ASCII-escaped JSON
    writes those as a surrogate pair, which YAML refuses). Rendering them must fail closed:
    a render error, never another structure."""
    return value == "" or len(value) > 1000 or any(ord(c) > 0xFFFF for c in value)


HOSTILE_PARAMS = [pytest.param(h, id=_hid(h)) for h in HOSTILE]


def fails_closed(test):
    """A test over HOSTILE_PARAMS: each value renders to exactly the expected structure, or,
    for a value the door refuses (_door_refuses), Salt's renderer refuses it (fails closed).
    Any other structure fails the test."""
    @functools.wraps(test)
    def run(*args, **kwargs):
        try:
            test(*args, **kwargs)
        except RenderRefused:
            if not _door_refuses(kwargs["h"]):
                raise
    return run


USER = "root"  # the master's `user` (bootstrap/salt-master.conf)


# ---------------------------------------------------------------------------
# Salt: options, renderers, the pipeline
@pytest.fixture(scope="module")
def opts(tmp_path_factory):
    cache = tmp_path_factory.mktemp("salt-cache")
    opts = copy.deepcopy(salt.config.DEFAULT_MASTER_OPTS)
    opts.update(
        file_client="local",
        file_roots={"base": [str(SALT_DIR)]},
        pillar_roots={"base": [str(cache / "pillar")]},
        cachedir=str(cache),
        extension_modules=str(cache / "extmods"),
        __role="master",
        user=USER,
        grains={},
    )
    return opts


def _functions(opts, pillar, plan=None, containers=None, calls=None):
    """__salt__ of the renderers: the fakes and Salt's real pillar.get (over ``pillar``)."""
    calls = [] if calls is None else calls
    mods = salt.loader.minion_mods(opts, whitelist=["pillar"], pillar=pillar)

    def call(fun, **kwargs):
        calls.append(("pigeon_runner.call", fun, kwargs))
        return copy.deepcopy(plan)

    def ps(**kwargs):
        calls.append(("docker.ps", kwargs))
        return copy.deepcopy(containers or {})

    return {"pillar.get": mods["pillar.get"], "pigeon_runner.call": call, "docker.ps": ps}


def _sls(relpath):
    return relpath[: -len(".sls")].replace("/", ".")


def _diagnose(exc, opts, rend, path, sls, **kwargs):
    """The render error, with the place in Jinja's output that YAML refused."""
    text = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    try:
        out = salt.template.compile_template(path, rend, "jinja", [], [], "base", sls,
                                             rendered_sls=[sls], **kwargs).read()
    except Exception as jexc:  # pylint: disable=broad-except
        return f"{text}\n(jinja stage failed too: {str(jexc)[:300]})"
    mark = getattr(getattr(exc, "error", None), "problem_mark", None)
    line, column = (mark.line + 1, mark.column) if mark else (getattr(exc, "line_num", None), 0)
    lines = out.splitlines()
    if line and 0 < line <= len(lines):
        shown = lines[line - 1]
        surrogate = re.search(r"\\ud[89ab][0-9a-f]{2}", shown)
        if not column and surrogate:  # libyaml's escape error: show the surrogate pair
            column = surrogate.start() + 40
        start = max(0, column - 160)
        text += (f"\nYAML refused line {line} (column {column}) of Jinja's output, "
                 f"{len(shown)} characters, starting {shown[:48]!r}: "
                 f"...{shown[start:column + 40]!r}...")
    return text


def render_file(opts, relpath, pillar, funcs):
    """The high data of srv/salt/<relpath> as HighState.render_state compiles it."""
    rend = salt.loader.render(opts, funcs, pillar=pillar)
    sls, path = _sls(relpath), str(SALT_DIR / relpath)
    try:
        return salt.template.compile_template(
            path, rend, opts["renderer"], opts["renderer_blacklist"], opts["renderer_whitelist"],
            "base", sls, rendered_sls=[sls])
    except SaltRenderError as exc:
        raise RenderRefused(f"{relpath} did not render: {_diagnose(exc, opts, rend, path, sls)}") from None


def render_reaction(opts, relpath, tag, data, funcs):
    """The reaction of srv/salt/<relpath> as the reactor renders it (Compiler.render_template)."""
    rend = salt.loader.render(opts, funcs)
    path = str(SALT_DIR / relpath)
    try:
        return salt.state.Compiler(opts, rend).render_template(path, tag=tag, data=data)
    except SaltRenderError as exc:
        raise RenderRefused(f"{relpath} did not render: "
                            f"{_diagnose(exc, opts, rend, path, '', tag=tag, data=data)}") from None


# ---------------------------------------------------------------------------
# comparison: data, type for type
def assert_same(got, want, path="$"):
    if isinstance(want, dict):
        assert isinstance(got, dict), f"{path}: {type(got).__name__} {_short(got)}, not a mapping"
        gk = {(type(k), k) for k in got}
        wk = {(type(k), k) for k in want}
        assert gk == wk, (f"{path}: keys {sorted(map(_short, got))} "
                          f"instead of {sorted(map(_short, want))}")
        for key, value in want.items():
            assert_same(got[key], value, f"{path}[{_short(key)}]")
    elif isinstance(want, list):
        assert isinstance(got, list), f"{path}: {type(got).__name__} {_short(got)}, not a list"
        assert len(got) == len(want), f"{path}: {len(got)} items instead of {len(want)}: {_short(got)}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{path}[{i}]")
    else:
        assert type(got) is type(want) and got == want, (
            f"{path}: {type(got).__name__} {_short(got)} instead of {type(want).__name__} {_short(want)}")


def _short(value):
    text = repr(value)
    return text if len(text) <= 120 else f"{text[:100]}... ({len(text)} characters)"


def functions_of(high):
    """{state ID: its state function(s)}; `include` as its own entry."""
    out = {}
    for sid, body in high.items():
        if sid == "include":
            out[sid] = "include"
        elif isinstance(body, dict):
            out[sid] = sorted(k for k in body if not str(k).startswith("__"))
        else:
            out[sid] = type(body).__name__
    return out


def check(high, want):
    assert isinstance(high, dict), f"rendered {type(high).__name__}: {_short(high)}"
    assert functions_of(high) == functions_of(want), (
        f"state IDs/functions\n got: {_short(functions_of(high))}\nwant: {_short(functions_of(want))}")
    assert_same(high, want)


# ---------------------------------------------------------------------------
# the plans: the state machine and stacks._expand, on registries made here
sm = load("_utils/pigeon_statemachine.py", "pigeon_statemachine_render")
definition_utils = load("_utils/pigeon_definition.py", "pigeon_definition_render")
stacks_runner = load("_runners/stacks.py", "stacks_runner_render")
stacks_runner.__utils__ = {
    **{f"pigeon_statemachine.{n}": getattr(sm, n) for n in ("plan", "backend", "check_version", "empty", "routes")},
    **{f"pigeon_definition.{n}": getattr(definition_utils, n) for n in ("services", "containers", "expand")}}
DEFINITION = yaml.safe_load((REPO / "srv" / "pillar" / "stacks.sls").read_text())["stacks"]["app"]
APP = "app"


def _entry(stacks, loadbal_seen):
    stacks = {v: {"state": s, "slot": slot, "since": "2024-01-01T00:00:00.000+00:00", "by": "ci"}
              for v, (s, slot) in stacks.items()}
    entry = {"app": APP, "generation": 3, "stacks": stacks, "routes": sm.routes(APP, stacks)}
    if loadbal_seen:
        entry["loadbal_hash"] = hashlib.sha256(json.dumps(
            DEFINITION["loadbal"], sort_keys=True, default=str).encode()).hexdigest()[:16]
    return entry


def real_plan(action, version, stacks, force=False, loadbal_seen=True):
    """The plan stacks.plan returns (without its lock) for this registry."""
    entry = _entry(stacks, loadbal_seen)
    definition = copy.deepcopy(DEFINITION)
    try:
        result = sm.plan(copy.deepcopy(entry), action, version=version, force=force)
    except sm.TransitionError as exc:
        return {"error": str(exc)}
    return stacks_runner._expand(APP, action, version, definition, entry, result)


# (shape, action, request version, registry, force, loadbal seen, keep_failed)
ORCH_SHAPES = {
    "release-new-app": ("release", "1.0", {}, False, False, False),
    "release-keep-failed": ("release", "2.0", {"1.0": ("active", "a")}, False, True, True),
    "release-loadbal-keep-failed": ("release", "3.0", {"1.0": ("inactive", "a"), "2.0": ("active", "b")},
                                    False, False, True),
    "release-cleanup": ("release", "3.0", {"1.0": ("inactive", "a"), "2.0": ("active", "b")},
                        False, True, False),
    "release-noop": ("release", "2.0", {"1.0": ("active", "a"), "2.0": ("release", "b")}, False, True, False),
    "activate-first": ("activate", None, {"1.0": ("release", "a")}, False, True, False),
    "activate-remove-inactive": ("activate", "3.0", {"1.0": ("inactive", "a"), "2.0": ("active", "b"),
                                                     "3.0": ("release", "c")}, False, True, False),
    "activate-noop": ("activate", "2.0", {"2.0": ("active", "a")}, False, True, False),
    "deactivate-release": ("deactivate", "2.0", {"1.0": ("active", "a"), "2.0": ("release", "b")},
                           False, True, False),
    "deactivate-active-forced": ("deactivate", "1.0", {"1.0": ("active", "a")}, True, True, False),
    "deactivate-inactive": ("deactivate", "1.0", {"1.0": ("inactive", "a"), "2.0": ("active", "b")},
                            False, True, False),
    "deactivate-noop": ("deactivate", "9.9", {"1.0": ("active", "a")}, False, True, False),
    "rollback": ("rollback", None, {"1.0": ("inactive", "a"), "2.0": ("active", "b")}, False, True, False),
    "refused-release": ("release", "1.0", {"1.0": ("active", "a")}, False, True, False),
    "refused-activate": ("activate", None, {}, False, True, False),
    "refused-deactivate": ("deactivate", "1.0", {"1.0": ("active", "a")}, False, True, False),
    "refused-rollback": ("rollback", None, {"1.0": ("active", "a")}, False, True, False),
}


def orch_case(shape):
    action, version, stacks, force, seen, keep_failed = ORCH_SHAPES[shape]
    plan = real_plan(action, version, stacks, force=force, loadbal_seen=seen)
    assert bool(plan.get("error")) == shape.startswith("refused"), plan
    args = {"app": APP, "version": version, "force": force, "wait": 0, "source": "cli",
            "keep_failed": keep_failed, "expect_revision": 3}
    return action, plan, args


def test_the_shapes_are_what_they_say():
    def plan(shape):
        return orch_case(shape)[1]
    assert plan("release-new-app")["converge_loadbal"] is True
    assert plan("release-keep-failed")["converge_loadbal"] is False
    assert plan("release-loadbal-keep-failed")["converge_loadbal"] is True
    assert plan("release-noop")["noop"] is True
    assert plan("activate-first")["stop"] == []
    assert [s["state"] for s in plan("activate-remove-inactive")["stop"]] == ["inactive"]
    assert plan("activate-noop")["noop"] is True
    assert [s["state"] for s in plan("deactivate-release")["stop"]] == ["release"]
    assert [s["state"] for s in plan("deactivate-active-forced")["stop"]] == ["active"]
    assert plan("deactivate-noop")["noop"] is True and plan("deactivate-noop")["stop"][0]["state"] is None


# ---------------------------------------------------------------------------
# hostile copies
# maps whose keys are data (not a structure the SLS reads); their keys become hostile too
MAP_KEYS = {"routes", "routes_before", "states", "labels", "docker_config", "networks[]"}


def hkey(h, i):
    """Distinct keys of one map, all made of the hostile string."""
    return h if i == 0 else f"{h}-{i}"


def hostile(value, h, where=None, keep_enums=True, keep_keys=False):
    """``value`` with every string and number replaced by ``h`` (booleans and None kept).
    ``keep_keys``: ``h`` only where a value is rendered, never in a YAML key (the keys of the
    maps and stop[].version, which the state IDs embed, stay)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (str, int, float)):
        return h
    if isinstance(value, list):
        item = "networks[]" if where == "networks" else None
        return [hostile(v, h, item, keep_enums, keep_keys) for v in value]
    if isinstance(value, dict):
        if where in MAP_KEYS:
            return {(k if keep_keys else hkey(h, i)): hostile(v, h, None, keep_enums, keep_keys)
                    for i, (k, v) in enumerate(value.items())}
        out = {}
        for k, v in value.items():
            if where == "stop[]" and (keep_enums and k == "state" or keep_keys and k == "version"):
                out[k] = v  # state selects the drain step (see test_orch_hostile_stop_state)
            elif keep_keys and where in ("start", "gate") and k == "backend":
                out[k] = v  # the key of require_up
            else:
                out[k] = hostile(v, h, "stop" if k == "stop" else k, keep_enums, keep_keys)
        return out
    raise TypeError(type(value))


def hostile_plan(plan, h, keep_enums=True, keep_keys=False):
    out = hostile(plan, h, keep_enums=keep_enums, keep_keys=keep_keys)
    if "stop" in plan:
        out["stop"] = [hostile(s, h, "stop[]", keep_enums, keep_keys) for s in plan["stop"]]
    return out


def hostile_args(args, h):
    return {k: (v if isinstance(v, bool) or v is None else h) for k, v in args.items()}


# ---------------------------------------------------------------------------
# what the orchestrations are meant to render (orch/*.sls, orch/steps.jinja), from their values
def _requires(key, ids):
    return [{key: [{"salt": r} for r in ids]}] if ids else []


def exp_refused(action, plan):
    return {f"pigeon-{action}-refused": {"test.configurable_test_state": [
        {"name": f"{action} refused"}, {"changes": False}, {"result": False},
        {"comment": plan["error"]}]}}


def exp_routes(action, lb, plan, requires=(), gate=None, wait=0):
    kwarg = {"routes": plan["routes"]}
    if gate:
        kwarg["require_up"] = {gate["backend"]: gate["expected_up"]}
        if wait:
            kwarg["wait"] = wait
    return {f"pigeon-{action}-routes-function": {"salt.function": [
        {"name": "haproxy_runtime.set_routes"}, {"tgt": lb["target"]}, {"tgt_type": lb["target_type"]},
        {"kwarg": kwarg}] + _requires("require", list(requires))}}


def exp_remove(action, app, lb, cfg, stops, require):
    out = {}
    for stop in stops:
        remove_id = f"pigeon-{action}-remove-{stop['version']}-state"
        if stop["state"] in ("active", "release"):
            out[f"pigeon-{action}-drain-{stop['version']}-function"] = {"salt.function": [
                {"name": "haproxy_runtime.wait_drained"}, {"tgt": lb["target"]},
                {"tgt_type": lb["target_type"]}, {"arg": [stop["backend"]]},
                {"kwarg": {"timeout": lb["drain_timeout"]}}]
                + _requires("require", [require] if require else [])
                + [{"require_in": [{"salt": remove_id}]}]}
        out[remove_id] = {"salt.state": [
            {"tgt": cfg["target"]}, {"tgt_type": cfg["target_type"]}, {"sls": "stacks.absent"},
            {"concurrent": True},
            {"pillar": {"pigeon_stack": {"app": app, "version": stop["version"], "network": stop["network"]}}}]
            + _requires("require", [require] if require else [])}
    return out


def exp_commit(action, app, plan, source, requires, user):
    commit_id = f"pigeon-{action}-commit-runner"
    return {
        commit_id: {"salt.runner": [
            {"name": "stacks.commit"}, {"app": app}, {"planned": plan}, {"source": source},
            {"user": user}] + _requires("require", requires)},
        f"pigeon-{action}-abort-runner": {"salt.runner": [
            {"name": "stacks.abort"}, {"app": app},
            {"planned": {"action": plan["action"], "version": plan["version"]}}, {"source": source},
            {"user": user}, {"onfail_any": [{"salt": r} for r in requires + [commit_id]]}]},
    }


def expected_orch(action, plan, args, user=USER):
    app, source = args.get("app"), args.get("source", "cli")
    lb, cfg = plan.get("loadbal", {}), plan.get("config", {})
    if plan.get("error"):
        return exp_refused(action, plan)
    out, done = {}, []
    if action == "release":
        if not plan["noop"]:
            start = plan["start"]
            if plan["converge_loadbal"]:
                out["pigeon-release-loadbal-state"] = {"salt.state": [
                    {"tgt": lb["target"]}, {"tgt_type": lb["target_type"]}, {"sls": ["docker", "haproxy"]},
                    {"parallel": True}, {"concurrent": True}]}
            out["pigeon-release-containers-state"] = {"salt.state": [
                {"tgt": cfg["target"]}, {"tgt_type": cfg["target_type"]}, {"sls": "stacks.running"},
                {"concurrent": True},
                {"pillar": {"pigeon_stack": {
                    "app": app, "version": plan["version"], "formula": cfg["formula"],
                    "network": start["network"], "containers": start["containers"], "keep": start["keep"],
                    "healthy_timeout": lb["healthcheck_timeout"]}}}]}
            requires = ["pigeon-release-containers-state"] + (
                ["pigeon-release-loadbal-state"] if plan["converge_loadbal"] else [])
            out.update(exp_routes(action, lb, plan, requires,
                                  gate={"backend": start["backend"], "expected_up": start["expected_up"]},
                                  wait=lb["healthcheck_timeout"]))
            if not args.get("keep_failed"):
                out["pigeon-release-cleanup-state"] = {"salt.state": [
                    {"tgt": cfg["target"]}, {"tgt_type": cfg["target_type"]}, {"sls": "stacks.absent"},
                    {"concurrent": True},
                    {"pillar": {"pigeon_stack": {"app": app, "version": plan["version"],
                                                 "network": start["network"]}}},
                    {"onfail_any": [{"salt": "pigeon-release-containers-state"},
                                    {"salt": "pigeon-release-routes-function"}]}]}
            done = ["pigeon-release-containers-state", "pigeon-release-routes-function"] + (
                ["pigeon-release-loadbal-state"] if plan["converge_loadbal"] else [])
    elif action == "activate":
        if not plan["noop"]:
            out.update(exp_routes(action, lb, plan, gate=plan["gate"]))
            out.update(exp_remove(action, app, lb, cfg, plan["stop"], "pigeon-activate-routes-function"))
            done = ["pigeon-activate-routes-function"] + [
                f"pigeon-activate-remove-{s['version']}-state" for s in plan["stop"]]
    elif action == "deactivate":
        if not plan["noop"]:
            out.update(exp_routes(action, lb, plan))
            out.update(exp_remove(action, app, lb, cfg, plan["stop"], "pigeon-deactivate-routes-function"))
            done = ["pigeon-deactivate-routes-function"]
        else:
            out.update(exp_remove(action, app, lb, cfg, plan["stop"], None))
        done += [f"pigeon-deactivate-remove-{s['version']}-state" for s in plan["stop"]]
    elif action == "rollback":
        out.update(exp_routes(action, lb, plan, gate=plan["gate"]))
        done = ["pigeon-rollback-routes-function"]
    out.update(exp_commit(action, app, plan, source, done, user))
    return out


def _render_orch(opts, action, plan, args, user=USER):
    pillar = {"pigeon": args, "stacks": {args["app"]: copy.deepcopy(DEFINITION)}}
    calls = []
    funcs = _functions(opts, pillar, plan=plan, calls=calls)
    high = render_file(dict(opts, user=user), f"orch/{action}.sls", pillar, funcs)
    # the plan was asked with the pillar's values, as they are
    assert calls == [("pigeon_runner.call", "stacks.plan", {
        "app": args["app"], "action": action, "version": args["version"], "force": args["force"],
        "wait": args["wait"], "source": args["source"], "expect_revision": args.get("expect_revision"),
        "user": user, "definition": pillar["stacks"][args["app"]]})]
    return high


@pytest.mark.parametrize("shape", list(ORCH_SHAPES))
def test_orch_plain(opts, shape):
    """The realistic plans: the steps each action is meant to have."""
    action, plan, args = orch_case(shape)
    high = _render_orch(opts, action, plan, args)
    check(high, expected_orch(action, plan, args))


def test_orch_plain_ids():
    """The expected step sets themselves, spelled out for a few shapes (guards expected_orch)."""
    def ids(shape):
        action, plan, args = orch_case(shape)
        return {k: list(v)[0] for k, v in expected_orch(action, plan, args).items()}
    assert ids("release-new-app") == {
        "pigeon-release-loadbal-state": "salt.state", "pigeon-release-containers-state": "salt.state",
        "pigeon-release-routes-function": "salt.function", "pigeon-release-cleanup-state": "salt.state",
        "pigeon-release-commit-runner": "salt.runner", "pigeon-release-abort-runner": "salt.runner"}
    assert ids("release-keep-failed") == {
        "pigeon-release-containers-state": "salt.state", "pigeon-release-routes-function": "salt.function",
        "pigeon-release-commit-runner": "salt.runner", "pigeon-release-abort-runner": "salt.runner"}
    assert ids("activate-remove-inactive") == {
        "pigeon-activate-routes-function": "salt.function", "pigeon-activate-remove-1.0-state": "salt.state",
        "pigeon-activate-commit-runner": "salt.runner", "pigeon-activate-abort-runner": "salt.runner"}
    assert ids("deactivate-release") == {
        "pigeon-deactivate-routes-function": "salt.function",
        "pigeon-deactivate-drain-2.0-function": "salt.function",
        "pigeon-deactivate-remove-2.0-state": "salt.state",
        "pigeon-deactivate-commit-runner": "salt.runner", "pigeon-deactivate-abort-runner": "salt.runner"}
    assert ids("deactivate-noop") == {
        "pigeon-deactivate-remove-9.9-state": "salt.state",
        "pigeon-deactivate-commit-runner": "salt.runner", "pigeon-deactivate-abort-runner": "salt.runner"}
    assert ids("refused-rollback") == {"pigeon-rollback-refused": "test.configurable_test_state"}


def _orch_ids_with(shape, version):
    """The state IDs and functions of the plain shape, its version replaced by ``version``."""
    action, plan, args = orch_case(shape)
    out = {}
    for sid, body in expected_orch(action, plan, args).items():
        for stop in plan.get("stop", []):
            sid = sid.replace(f"-{stop['version']}-", f"-{version}-")
        out[sid] = sorted(body)
    return out


@pytest.mark.parametrize("h", HOSTILE_PARAMS)
@pytest.mark.parametrize("shape", list(ORCH_SHAPES))
@fails_closed
def test_orch_hostile(opts, shape, h):
    """Every string and number of the plan, the pillar and the master's user replaced by ``h``."""
    action, plain, args = orch_case(shape)
    plan, hargs = hostile_plan(plain, h), hostile_args(args, h)
    high = _render_orch(opts, action, plan, hargs, user=h)
    # the steps of the plain plan, the versions in their IDs being ``h``
    assert functions_of(high) == _orch_ids_with(shape, h)
    check(high, expected_orch(action, plan, hargs, user=h))


STOP_SHAPES = ["activate-remove-inactive", "deactivate-release", "deactivate-active-forced"]


@pytest.mark.parametrize("h", HOSTILE_PARAMS)
@pytest.mark.parametrize("shape", STOP_SHAPES)
@fails_closed
def test_orch_hostile_stop_state(opts, shape, h):
    """stop[].state is compared, never rendered: an unknown state is one that took no traffic
    (no drain step), and nothing of it reaches the rendered data."""
    action, plain, args = orch_case(shape)
    plan = hostile_plan(plain, "v")
    for stop in plan["stop"]:
        stop["state"] = h
    high = _render_orch(opts, action, plan, args)
    want = expected_orch(action, plan, args)
    assert not [sid for sid in want if "-drain-" in sid]
    check(high, want)


LONG = [pytest.param("x" * 5000, id="x*5000"),
        pytest.param("\u00fc" * 200, id="u-umlaut*200 (1200 characters as JSON)")]


@pytest.mark.parametrize("h", LONG)
@pytest.mark.parametrize("shape", list(ORCH_SHAPES))
def test_orch_long_values(opts, shape, h):
    """A long string renders anywhere a value goes: what YAML limits is a key (1024 characters
    of the escaped text, see test_orch_hostile with x*5000)."""
    action, plain, args = orch_case(shape)
    plan = hostile_plan(plain, h, keep_keys=True)
    hargs = dict(hostile_args(args, h), app=APP, version=args["version"])
    high = _render_orch(opts, action, plan, hargs, user=h)
    check(high, expected_orch(action, plan, hargs, user=h))


schema = load("_utils/pigeon_schema.py", "pigeon_schema_render")


def _definition_with(change):
    definition = copy.deepcopy(DEFINITION)
    change(definition)
    schema.check_definition(APP, definition)  # the pillar passes Pigeon's door
    return definition


def _web(d):
    return d["task_definitions"]["web"]["docker_config"]


REACHABLE = {
    # BMP text: fine
    "environment-bmp": lambda d: _web(d).setdefault("environment", []).append("MOTD=h\u00e9llo \u2028 \u202e"),
}

# what Salt's YAML cannot carry back is refused at the door, in one line, before any render
REFUSED_AT_THE_DOOR = {
    # a character beyond the BMP (an emoji) in docker_config, a label value, a target
    "environment-emoji": lambda d: _web(d).setdefault("environment", []).append("MOTD=deployed \U0001F680"),
    "label-value-emoji": lambda d: _web(d)["labels"].append("com.example.note=\U0001F680"),
    "target-emoji": lambda d: d["config"].update(target="app-\U0001F680"),
    # a label key of 200 non-ASCII letters: 1200 characters once ASCII-escaped (a YAML key)
    "label-key-long": lambda d: _web(d)["labels"].append("com.example." + "\u00fc" * 200 + "=1"),
}


@pytest.mark.parametrize("case", list(REFUSED_AT_THE_DOOR))
def test_definition_salt_cannot_carry_is_refused_at_the_door(case):
    with pytest.raises(ValueError) as refused:
        _definition_with(REFUSED_AT_THE_DOOR[case])
    message = str(refused.value)
    assert "\n" not in message and message.startswith("broken pillar: stacks:app:"), message


@pytest.mark.parametrize("case", list(REACHABLE))
def test_release_with_definition_that_passes_the_schema(opts, case):
    """Stack definitions that pass pigeon_schema.check_definition, through the real plan, into
    orch/release.sls and then stacks/running.sls."""
    definition = _definition_with(REACHABLE[case])
    entry = _entry({"1.0": ("active", "a")}, loadbal_seen=True)
    plan = stacks_runner._expand(APP, "release", "2.0", definition, entry,
                                 sm.plan(copy.deepcopy(entry), "release", version="2.0"))
    assert not plan.get("error"), plan
    args = {"app": APP, "version": "2.0", "force": False, "wait": 0, "source": "cli", "keep_failed": False}
    high = _render_orch(opts, "release", plan, args)
    want = expected_orch("release", plan, args)
    check(high, want)
    state = want["pigeon-release-containers-state"]["salt.state"]
    stack = [a for a in state if "pillar" in a][0]["pillar"]["pigeon_stack"]
    _running(opts, stack, {})


# ---------------------------------------------------------------------------
# reactor/deploy.sls: the event's data and tag, as the reactor renders them
REACTOR_SHAPES = {
    "webhook": ("pigeon/webhook/deploy", {
        "body": json.dumps({"app": "app", "version": "1.4", "action": "release",
                            "timestamp": 1764662400, "nonce": "5f0c2a9e41d8b7c3a6e1"}),
        "headers": {"X-Pigeon-Signature": "sha256=" + "0" * 64, "Content-Type": "application/json"},
        "_stamp": "2025-12-02T08:00:00.000000"}),
    "ci-minion": ("pigeon/ci/deploy", {
        "id": "ci-1", "cmd": "_minion_event", "tag": "pigeon/ci/deploy", "pretag": None,
        "data": {"app": "app", "version": "1.4", "action": "release", "wait": 30, "force": False},
        "_stamp": "2025-12-02T08:00:00.000000"}),
}


def hostile_event(value, h):
    """Every string and number, and every key, made of ``h`` (the data is opaque to the file)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (str, int, float)):
        return h
    if isinstance(value, list):
        return [hostile_event(v, h) for v in value]
    return {hkey(h, i): hostile_event(v, h) for i, v in enumerate(value.values())}


def expected_reaction(tag, data):
    # Compiler.pad_funcs turns `runner.deploy.ci_event` into `runner` + its function
    return {"pigeon-reactor-deploy": {"runner": [{"args": [{"event": data}, {"tag": tag}]},
                                                 "deploy.ci_event"]}}


def _reactor(opts, tag, data):
    high = render_reaction(opts, "reactor/deploy.sls", tag, data, _functions(opts, {}))
    check(high, expected_reaction(tag, data))


@pytest.mark.parametrize("shape", list(REACTOR_SHAPES))
def test_reactor_plain(opts, shape):
    tag, data = REACTOR_SHAPES[shape]
    _reactor(opts, tag, copy.deepcopy(data))


@pytest.mark.parametrize("h", HOSTILE_PARAMS)
@pytest.mark.parametrize("shape", list(REACTOR_SHAPES))
@fails_closed
def test_reactor_hostile(opts, shape, h):
    tag, data = REACTOR_SHAPES[shape]
    _reactor(opts, h, hostile_event(data, h))


@pytest.mark.parametrize("h", HOSTILE_PARAMS)
@fails_closed
def test_reactor_hostile_values_only(opts, h):
    """The webhook event with plain keys, ``h`` only in its values (the body, a header)."""
    tag, data = REACTOR_SHAPES["webhook"]
    data = copy.deepcopy(data)
    data["body"] = h
    data["headers"]["X-Pigeon-Signature"] = h
    _reactor(opts, tag, data)


# ---------------------------------------------------------------------------
# stacks/running.sls and stacks/absent.sls (the app minion): pillar pigeon_stack and docker.ps
def minion_pillar(pillar):
    """The pillar as a minion holds it (RemotePillar.compile_pillar wraps it)."""
    return salt.utils.secret.hide(copy.deepcopy(pillar))


def docker_container(name, app, version):
    return {"Id": f"id-{name}", "Names": ["/" + name], "Image": f"pigeon/demoapp:{version}",
            "State": "exited", "Labels": {"pigeon.managed": "true", "pigeon.app": app,
                                          "pigeon.version": version, "pigeon.slot": "c"}}


def running_case(shape):
    """(pigeon_stack as orch/release.sls passes it, docker.ps's containers)."""
    release = {"first": "release-new-app", "leftovers": "release-cleanup",
               "no-formula": "release-keep-failed"}[shape]
    action, plan, args = orch_case(release)
    state = expected_orch(action, plan, args)["pigeon-release-containers-state"]["salt.state"]
    stack = [a for a in state if "pillar" in a][0]["pillar"]["pigeon_stack"]
    found = {}
    if shape == "leftovers":  # a kept stack, this version's own leftovers, an unknown version's
        found = {f"c{i}": docker_container(n, APP, v) for i, (n, v) in enumerate([
            ("app-1.0-web-1", "1.0"), ("app-3.0-web-1", "3.0"), ("app-3.0-api-1", "3.0"),
            ("app-0.9-web-1", "0.9")])}
    if shape == "no-formula":
        stack = dict(stack, formula=None)
        del stack["healthy_timeout"]
    return stack, found


def hostile_running(stack, found, h):
    stack = hostile(stack, h, "pigeon_stack")
    # versions: the kept one is h, the leftovers are distinct versions made of h
    kept = sorted({c["Labels"]["pigeon.version"] for c in found.values()} & {"1.0", "2.0"})
    versions = sorted({c["Labels"]["pigeon.version"] for c in found.values()})
    rename = {v: (h if v in kept else hkey(h, i + 1)) for i, v in enumerate(versions)}
    stack["keep"] = [h] if stack.get("keep") else []
    out = {}
    for i, (cid, c) in enumerate(found.items()):
        v = rename[c["Labels"]["pigeon.version"]]
        out[hkey(h, i)] = docker_container(hkey(h, i), stack["app"], v)
    return stack, out


def _jsort(values):
    """Jinja's sort / dictsort (case-insensitive by default)."""
    return sorted(values, key=lambda s: s.lower() if isinstance(s, str) else s)


def expected_running(stack, found):
    out = {}
    if stack.get("formula"):
        out["include"] = [stack["formula"]]
    leftovers = {}
    for c in found.values():
        version = c["Labels"].get("pigeon.version")
        if version not in stack.get("keep", [stack["version"]]):
            leftovers.setdefault(version, []).append(c["Names"][0].lstrip("/"))
    for version in _jsort(leftovers):
        cid = f"stacks-running-leftover-{version}-docker-container-absent"
        out[cid] = {"docker_container.absent": [{"names": _jsort(leftovers[version])}, {"force": True}]}
        out[f"stacks-running-leftover-{version}-docker-network-absent"] = {"docker_network.absent": [
            {"name": f"pigeon-{stack['app']}-{version}"}, {"require": [{"docker_container": cid}]}]}
    args = [{"name": f"{stack['app']} {stack['version']}"}, {"app": stack["app"]},
            {"version": stack["version"]}, {"network": stack["network"]}, {"containers": stack["containers"]}]
    if stack.get("healthy_timeout"):
        args.append({"healthy_timeout": stack["healthy_timeout"]})
    if stack.get("formula"):
        args.append({"require": [{"sls": stack["formula"]}]})
    out["stacks-running-stack-containers-running"] = {"stack_containers.running": args}
    return out


def _running(opts, stack, found):
    pillar = minion_pillar({"pigeon_stack": stack})
    calls = []
    high = render_file(opts, "stacks/running.sls", pillar,
                       _functions(opts, pillar, containers=found, calls=calls))
    assert calls == [("docker.ps", {"all": True, "filters": {"label": [f"pigeon.app={stack['app']}"]}})]
    check(high, expected_running(stack, found))


@pytest.mark.parametrize("shape", ["first", "leftovers", "no-formula"])
def test_running_plain(opts, shape):
    _running(opts, *running_case(shape))


def test_running_plain_ids():
    stack, found = running_case("leftovers")
    assert set(expected_running(stack, found)) == {
        "include", "stacks-running-leftover-0.9-docker-container-absent",
        "stacks-running-leftover-0.9-docker-network-absent",
        "stacks-running-leftover-3.0-docker-container-absent",
        "stacks-running-leftover-3.0-docker-network-absent", "stacks-running-stack-containers-running"}


@pytest.mark.parametrize("h", HOSTILE_PARAMS)
@pytest.mark.parametrize("shape", ["first", "leftovers"])
@fails_closed
def test_running_hostile(opts, shape, h):
    stack, found = hostile_running(*running_case(shape), h)
    want = expected_running(stack, found)
    plain = expected_running(*running_case(shape))
    # the structure of the plain case (include only when the formula is not empty)
    assert len([k for k in want if k != "include"]) == len([k for k in plain if k != "include"])
    _running(opts, stack, found)


def absent_case(shape):
    action, plan, args = orch_case("deactivate-release")
    stop = plan["stop"][0]
    stack = {"app": APP, "version": stop["version"], "network": stop["network"]}
    found = {}
    if shape == "containers":
        found = {f"c{i}": docker_container(f"app-2.0-{s}-1", APP, "2.0") for i, s in enumerate(("web", "api"))}
    return stack, found


def expected_absent(stack, found):
    names = _jsort(c["Names"][0].lstrip("/") for c in found.values())
    out = {}
    if names:
        out["stacks-absent-docker-client-module-run"] = {
            "module.run": [{"stack_containers.forget_docker_client": []}]}
        out["stacks-absent-docker-container-stopped"] = {"docker_container.stopped": [
            {"names": names}, {"parallel": True},
            {"require": [{"module": "stacks-absent-docker-client-module-run"}]}]}
        out["stacks-absent-docker-container-absent"] = {"docker_container.absent": [
            {"names": names}, {"require": [{"docker_container": "stacks-absent-docker-container-stopped"}]},
            {"require_in": [{"docker_network": "stacks-absent-docker-network-absent"}]}]}
    out["stacks-absent-docker-network-absent"] = {"docker_network.absent": [{"name": stack["network"]}]}
    return out


def _absent(opts, stack, found):
    pillar = minion_pillar({"pigeon_stack": stack})
    calls = []
    high = render_file(opts, "stacks/absent.sls", pillar,
                       _functions(opts, pillar, containers=found, calls=calls))
    assert calls == [("docker.ps", {"all": True, "filters": {"label": [
        f"pigeon.app={stack['app']}", f"pigeon.version={stack['version']}"]}})]
    check(high, expected_absent(stack, found))


@pytest.mark.parametrize("shape", ["containers", "none"])
def test_absent_plain(opts, shape):
    _absent(opts, *absent_case(shape))


@pytest.mark.parametrize("h", HOSTILE_PARAMS)
@pytest.mark.parametrize("shape", ["containers", "none"])
@fails_closed
def test_absent_hostile(opts, shape, h):
    stack, found = absent_case(shape)
    stack = hostile(stack, h, "pigeon_stack")
    found = {hkey(h, i): docker_container(hkey(h, i), stack["app"], stack["version"])
             for i in range(len(found))}
    _absent(opts, stack, found)


# ---------------------------------------------------------------------------
# demoapp/config/file.sls and demoapp/image/build.sls: pillar pigeon_stack (and demoapp:)
DEMOAPP_DEFAULTS = yaml.safe_load((SALT_DIR / "demoapp" / "parameters" / "defaults.yaml").read_text())["demoapp"]
DEMOAPP_PILLAR = yaml.safe_load((REPO / "srv" / "pillar" / "demoapp.sls").read_text())["demoapp"]


def demoapp_pillar(build, h=None):
    stack = {"app": APP, "version": "2.0"}
    demoapp = dict(DEMOAPP_PILLAR, build=build, build_dir=DEMOAPP_DEFAULTS["build_dir"])
    if h is not None:
        stack = {"app": h, "version": h}
        demoapp = {k: (v if isinstance(v, bool) else h) for k, v in demoapp.items()}
    return {"pigeon_stack": stack, "demoapp": demoapp}


def expected_demoapp(relpath, pillar):
    demoapp = dict(DEMOAPP_DEFAULTS, **pillar.get("demoapp", {}))
    stack = pillar["pigeon_stack"]
    build_dir = f"{demoapp['build_dir']}/{stack['version']}"
    if relpath == "demoapp/config/file.sls":
        if not demoapp["build"]:
            return {}
        dir_id = "demoapp-config-file-build-dir-file-directory"
        need = {"require": [{"file": dir_id}]}
        return {
            dir_id: {"file.directory": [{"name": build_dir}, {"makedirs": True}]},
            "demoapp-config-file-nginx-conf-file-managed": {"file.managed": [
                {"name": f"{build_dir}/nginx.conf"}, {"source": "salt://demoapp/templates/nginx.conf.jinja"},
                {"template": "jinja"}, {"context": {"app": stack["app"], "version": stack["version"]}}, need]},
            "demoapp-config-file-dockerfile-file-managed": {"file.managed": [
                {"name": f"{build_dir}/Dockerfile"}, {"source": "salt://demoapp/templates/Dockerfile.jinja"},
                {"template": "jinja"}, {"context": {"base_image": demoapp["base_image"]}}, need]},
        }
    args = [{"name": demoapp["image"]}, {"tag": str(stack["version"])}]
    if demoapp["build"]:
        args += [{"build": build_dir}, {"require": [{"sls": "demoapp.config"}]}]
    return {"include": ["demoapp.config"], "demoapp-image-build-docker-image-present": {"docker_image.present": args}}


DEMOAPP_FILES = ["demoapp/config/file.sls", "demoapp/image/build.sls"]


def _demoapp(opts, relpath, pillar):
    mpillar = minion_pillar(pillar)
    high = render_file(opts, relpath, mpillar, _functions(opts, mpillar))
    check(high, expected_demoapp(relpath, pillar))


@pytest.mark.parametrize("build", [True, False])
@pytest.mark.parametrize("relpath", DEMOAPP_FILES)
def test_demoapp_plain(opts, relpath, build):
    _demoapp(opts, relpath, demoapp_pillar(build))


@pytest.mark.parametrize("h", HOSTILE_PARAMS)
@pytest.mark.parametrize("relpath", DEMOAPP_FILES)
@fails_closed
def test_demoapp_hostile(opts, relpath, h):
    _demoapp(opts, relpath, demoapp_pillar(True, h))


def test_pillar_get_is_salts_and_unmasked(opts):
    """map.jinja reads the pillar through Salt's pillar.get, which gives plain values while a
    template renders (3008 masks them elsewhere): the render above sees real values."""
    pillar = minion_pillar(demoapp_pillar(True, "secret-ish"))
    high = render_file(opts, "demoapp/image/build.sls", pillar, _functions(opts, pillar))
    assert high["demoapp-image-build-docker-image-present"]["docker_image.present"][0] == {"name": "secret-ish"}
