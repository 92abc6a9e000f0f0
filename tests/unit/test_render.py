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

``__salt__`` of the renderers is Salt's real ``pillar.get`` (the execution module, loaded by
Salt's loader over the same pillar) and nothing else: no file here calls Salt, docker or the
registry while it renders, and a call to any other function fails the render
(test_renderers_call_nothing_but_pillar_get). The pillar of the SLS files that run on the app
minion is wrapped as Salt's RemotePillar wraps it (``salt.utils.secret.hide``).

What drives each file:

- ``orch/<action>.sls`` reads pillar ``pigeon_plan`` only: the plan as the deploy runner makes it
  under the app's lock (``pigeon_plan.make``), here from the real pure modules loaded by path:
  the state machine's plan (_utils/pigeon_statemachine.py) on a registry entry made here,
  ``pigeon_definition.expand`` with the lab's stack definition (srv/pillar/stacks.sls),
  ``keep_failed``, and the step table ``pigeon_steps.steps`` (test_the_plans_are_the_runners
  checks that composition against ``pigeon_plan.make`` itself). A refused plan, or one with no
  steps, never reaches an orchestration (the runner stops before): those are not rendered, but
  an orchestration rendered without a plan must give exactly its one refusal state
  (``steps.without_plan``).
- ``stacks/running.sls`` and ``stacks/absent.sls`` read pillar ``pigeon_stack``, as the
  orchestrations' steps pass it (taken from the expected orchestrations, which the renders check).
- ``reactor/deploy.sls`` reads the event's tag and data; the demoapp formula reads
  ``pigeon_stack`` and ``demoapp:``.

Hostile copies: each hostile string replaces every string and number of a plan (booleans and
None stay: they select branches, as do the plan's action and ``stop[].state``, which has a test
of its own), and every key of the free-form maps (routes, states, labels, docker_config, ...).
The step table is then made from the hostile plan as the runner would make it, so the state IDs
that embed a version (``pigeon-activate-remove-<version>``) embed the hostile one; a variant
also makes the step IDs themselves hostile (the orchestrations take them from the plan:
test_orch_hostile_step_ids, on shapes with every kind of step and requisite).

What is asserted, for each file and shape: the rendered data equals, type for type (``"on"`` is
not ``True``, ``"1.0"`` not ``1.0``, ``"null"`` not ``None``), the data the file is meant to
give, built below from the same values (``expected_*``): for an orchestration, one state per
step of the plan, in the plan's order, with the step's ID from the plan and requisites naming
the IDs of the steps the plan has; every hostile value comes back as the same string wherever it
is rendered (no Jinja evaluated in it).

Fails closed (``fails_closed``): for the values Pigeon's door (pigeon_schema) never lets through,
Salt's renderer may refuse the file instead (the failure message names the line of Jinja's
output that YAML refused), never give another structure:
- a character beyond the BMP ("\U0001F600"): ``tojson`` writes it as a surrogate pair
  ("\ud83d\ude00"), which libyaml (Salt's CSafeLoader) refuses, in every file;
- a key of more than 1024 characters once escaped ("x" * 5000): YAML's limit on a simple key,
  in the state IDs that embed a version and in the flow mappings' keys (routes, require_up,
  states, labels, docker_config, the event data); long values render (``*_long_values``).
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

from srv_modules import SALT_DIR, load, utils_dunder

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


def _functions(opts, pillar):
    """__salt__ of the renderers: Salt's real pillar.get (over ``pillar``), and nothing else.
    The jinja renderer copies it into ``salt``: a call to any other function there is a call
    of Jinja's Undefined, which fails the render (test_renderers_call_nothing_but_pillar_get)."""
    mods = salt.loader.minion_mods(opts, whitelist=["pillar"], pillar=pillar)
    return {"pillar.get": mods["pillar.get"]}


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


@pytest.mark.parametrize("call", ["salt['docker.ps'](all=True)", "salt.docker.ps(all=True)",
                                  "salt['pigeon_runner.call']('stacks.plan', app='app')",
                                  "salt['cmd.run']('id')"])
def test_renderers_call_nothing_but_pillar_get(opts, call):
    """__salt__ as every render here has it: Salt's pillar.get answers, a call to anything else
    fails the render. So a file that renders above called nothing else while it rendered."""
    pillar = {"a": "b"}
    rend = salt.loader.render(opts, _functions(opts, pillar), pillar=pillar)

    def compile_text(text):
        return salt.template.compile_template(
            ":string:", rend, opts["renderer"], opts["renderer_blacklist"], opts["renderer_whitelist"],
            "base", "t", input_data=text)

    assert compile_text("a: {{ salt['pillar.get']('a') | tojson }}") == {"a": "b"}
    with pytest.raises(SaltRenderError):
        compile_text("a: {{ " + call + " | tojson }}")


# ---------------------------------------------------------------------------
# the plans: as the deploy runner makes them (pigeon_plan.make), on registries made here
sm = load("_utils/pigeon_statemachine.py", "pigeon_statemachine_render")
definition_utils = load("_utils/pigeon_definition.py", "pigeon_definition_render")
steps_utils = load("_utils/pigeon_steps.py", "pigeon_steps_render")
schema = load("_utils/pigeon_schema.py", "pigeon_schema_render")
plan_utils = load("_utils/pigeon_plan.py", "pigeon_plan_render")
DEFINITION = yaml.safe_load((REPO / "srv" / "pillar" / "stacks.sls").read_text())["stacks"]["app"]
APP = "app"


def _entry(stacks, loadbal_seen, traffic=None):
    stacks = {v: {"state": s, "slot": slot, "since": "2024-01-01T00:00:00.000+00:00", "by": "ci"}
              for v, (s, slot) in stacks.items()}
    entry = {"app": APP, "generation": 3, "stacks": stacks, "routes": sm.routes(APP, stacks, traffic=traffic)}
    if traffic:
        entry["traffic"] = traffic
    if loadbal_seen:
        entry["loadbal_hash"] = hashlib.sha256(json.dumps(
            DEFINITION["loadbal"], sort_keys=True, default=str).encode()).hexdigest()[:16]
    return entry


def real_plan(action, version, stacks, force=False, loadbal_seen=True, keep_failed=False, definition=None,
              balancers=("lb-minion",), asked=None, traffic=None):
    """The plan the deploy runner makes (pigeon_plan.make, under the app's lock) on this registry:
    the state machine's plan, expanded with the stack definition, ``keep_failed``, the steps."""
    entry = _entry(stacks, loadbal_seen, traffic)
    definition = copy.deepcopy(DEFINITION if definition is None else definition)
    try:
        planned = sm.plan(copy.deepcopy(entry), action, version=version, force=force, asked=asked)
    except sm.TransitionError as exc:
        return {"error": str(exc)}
    planned = definition_utils.expand(APP, action, version, definition, entry, planned, sm.backend,
                                      slots=sm.slots(), balancers=list(balancers))
    if planned.get("error"):
        return planned
    planned["keep_failed"] = keep_failed
    planned["steps"] = steps_utils.steps(planned)
    return planned


# (action, request version, registry, force, loadbal seen, keep_failed)
# the plans the runner orchestrates: no error, at least one step
ORCH_SHAPES = {
    "release-new-app": ("release", "1.0", {}, False, False, False),
    "release-keep-failed": ("release", "2.0", {"1.0": ("active", "a")}, False, True, True),
    "release-loadbal-keep-failed": ("release", "3.0", {"1.0": ("inactive", "a"), "2.0": ("active", "b")},
                                    False, False, True),
    "release-cleanup": ("release", "3.0", {"1.0": ("inactive", "a"), "2.0": ("active", "b")},
                        False, True, False),
    "activate-first": ("activate", None, {"1.0": ("release", "a")}, False, True, False),
    "activate-remove-inactive": ("activate", "3.0", {"1.0": ("inactive", "a"), "2.0": ("active", "b"),
                                                     "3.0": ("release", "c")}, False, True, False),
    "deactivate-release": ("deactivate", "2.0", {"1.0": ("active", "a"), "2.0": ("release", "b")},
                           False, True, False),
    "deactivate-active-forced": ("deactivate", "1.0", {"1.0": ("active", "a")}, True, True, False),
    "deactivate-inactive": ("deactivate", "1.0", {"1.0": ("inactive", "a"), "2.0": ("active", "b")},
                            False, True, False),
    "deactivate-noop": ("deactivate", "9.9", {"1.0": ("active", "a")}, False, True, False),
    "rollback": ("rollback", None, {"1.0": ("inactive", "a"), "2.0": ("active", "b")}, False, True, False),
    "repair": ("repair", None, {"1.0": ("inactive", "a"), "2.0": ("active", "b"), "3.0": ("release", "c")},
               False, True, False),
    "repair-one": ("repair", "2.0", {"1.0": ("inactive", "a"), "2.0": ("active", "b")}, False, True, False),
    "canary": ("canary", None, {"1.0": ("active", "a"), "2.0": ("release", "b")}, False, True, False),
    "canary-zero": ("canary", None, {"1.0": ("active", "a"), "2.0": ("release", "b")}, False, True, False),
    "abort": ("abort", None, {"1.0": ("active", "a"), "2.0": ("release", "b")}, False, True, False),
    "maintenance-on": ("maintenance", None, {"1.0": ("active", "a")}, False, True, False),
}
# what a traffic action asks (the deploy runner's ``asked``), and the registry's traffic before it
ASKED = {"canary": {"percent": 10}, "canary-zero": {"percent": 0}, "maintenance-on": {
    "enable": True, "message": "{{ 7*7 }} ${x} %[src] \"'; - x", "retry_after": 60}}
TRAFFIC = {"canary-zero": {"canary": 20}, "abort": {"canary": 20}}
# plans with no steps: the runner records them without an orchestration
NOT_ORCHESTRATED = {
    "release-noop": ("release", "2.0", {"1.0": ("active", "a"), "2.0": ("release", "b")}, False, True, False),
    "activate-noop": ("activate", "2.0", {"2.0": ("active", "a")}, False, True, False),
    "repair-nothing": ("repair", None, {}, False, True, False),
}
# refused plans: the runner records the refusal, nothing is orchestrated
REFUSED_SHAPES = {
    "refused-release": ("release", "1.0", {"1.0": ("active", "a")}, False, True, False),
    "refused-activate": ("activate", None, {}, False, True, False),
    "refused-deactivate": ("deactivate", "1.0", {"1.0": ("active", "a")}, False, True, False),
    "refused-rollback": ("rollback", None, {"1.0": ("active", "a")}, False, True, False),
    "refused-repair": ("repair", "9.9", {"1.0": ("active", "a")}, False, True, False),
}
SHAPES = {**ORCH_SHAPES, **NOT_ORCHESTRATED, **REFUSED_SHAPES}
ACTIONS = ["release", "activate", "deactivate", "rollback", "repair", "canary", "abort", "maintenance"]


def plan_of(shape):
    action, version, stacks, force, seen, keep_failed = SHAPES[shape]
    return action, real_plan(action, version, stacks, force=force, loadbal_seen=seen, keep_failed=keep_failed,
                             asked=ASKED.get(shape), traffic=TRAFFIC.get(shape))


def orch_case(shape):
    """(action, plan) of a shape the runner orchestrates."""
    assert shape in ORCH_SHAPES, shape
    action, plan = plan_of(shape)
    assert not plan.get("error") and plan["steps"], plan
    return action, plan


@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_plans_are_the_runners(monkeypatch, shape):
    """real_plan is pigeon_plan.make (what the deploy runner calls), its __utils__ built as Salt's
    loader builds it from the same pure modules, the registry being the entry made here: same
    data, type for type."""
    action, version, stacks, force, seen, keep_failed = SHAPES[shape]
    entry = _entry(stacks, seen, TRAFFIC.get(shape))

    def registry_load(app):
        assert app == APP
        return copy.deepcopy(entry)

    loader = utils_dunder(schema, definition_utils, sm, steps_utils)
    loader["pigeon_registry.load"] = registry_load
    loader["pigeon_minions.expected"] = lambda tgt, tgt_type: ["lb-minion"]
    monkeypatch.setattr(plan_utils, "_LOADER", loader)
    made = plan_utils.make(APP, action, version=version, force=force, definition=copy.deepcopy(DEFINITION),
                           expect_revision=3, keep_failed=keep_failed, asked=ASKED.get(shape))
    assert_same(made, plan_of(shape)[1])
    if shape in REFUSED_SHAPES:
        assert list(made) == ["error"] and made["error"], made
    else:
        assert bool(made["steps"]) == (shape in ORCH_SHAPES), made["steps"]


def test_the_shapes_are_what_they_say():
    def plan(shape):
        return plan_of(shape)[1]
    assert plan("release-new-app")["converge_loadbal"] is True
    assert plan("release-new-app")["keep_failed"] is False
    assert plan("release-keep-failed")["converge_loadbal"] is False
    assert plan("release-keep-failed")["keep_failed"] is True
    assert plan("release-loadbal-keep-failed")["converge_loadbal"] is True
    assert plan("release-loadbal-keep-failed")["keep_failed"] is True
    assert plan("release-cleanup")["start"]["keep"] == ["1.0", "2.0"]
    assert plan("activate-first")["stop"] == []
    assert [r["version"] for r in plan("repair")["repair"]] == ["1.0", "2.0", "3.0"]
    assert [r["keep"] for r in plan("repair")["repair"]] == [["1.0", "2.0", "3.0"], None, None]
    assert plan("repair")["gates"] == {"app_a": 2, "app_b": 2, "app_c": 2}
    assert [r["version"] for r in plan("repair-one")["repair"]] == ["2.0"]
    assert [s["state"] for s in plan("activate-remove-inactive")["stop"]] == ["inactive"]
    assert [s["state"] for s in plan("deactivate-release")["stop"]] == ["release"]
    assert [s["state"] for s in plan("deactivate-active-forced")["stop"]] == ["active"]
    assert [s["state"] for s in plan("deactivate-inactive")["stop"]] == ["inactive"]
    assert plan("deactivate-noop")["noop"] is True and plan("deactivate-noop")["stop"][0]["state"] is None
    assert plan("release-noop")["noop"] is True
    assert plan("activate-noop")["noop"] is True
    for shape in REFUSED_SHAPES:
        assert list(plan(shape)) == ["error"], shape


@pytest.mark.parametrize("shape", list(NOT_ORCHESTRATED))
def test_plans_without_steps_are_not_orchestrated(shape):
    """A plan that changes nothing has no step: the runner records it and runs no orchestration
    (test_deploy_runner), so no orchestration ever renders it."""
    action, plan = plan_of(shape)
    assert not plan.get("error") and plan["noop"] is True
    assert plan["steps"] == []
    assert steps_utils.steps(plan) == []


# ---------------------------------------------------------------------------
# hostile copies
# maps whose keys are data (not a structure the SLS reads); their keys become hostile too
MAP_KEYS = {"routes", "routes_before", "states", "labels", "docker_config", "networks[]", "gates"}


def hkey(h, i):
    """Distinct keys of one map, all made of the hostile string."""
    return h if i == 0 else f"{h}-{i}"


def hostile(value, h, where=None, keep_keys=False):
    """``value`` with every string and number replaced by ``h`` (booleans and None kept).
    ``keep_keys``: ``h`` only where a value is rendered, never in a YAML key (the keys of the
    maps and stop[].version, which the state IDs embed, stay)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (str, int, float)):
        return h
    if isinstance(value, list):
        item = "networks[]" if where == "networks" else None
        return [hostile(v, h, item, keep_keys) for v in value]
    if isinstance(value, dict):
        if where in MAP_KEYS:
            return {(k if keep_keys else hkey(h, i)): hostile(v, h, None, keep_keys)
                    for i, (k, v) in enumerate(value.items())}
        out = {}
        for k, v in value.items():
            if where == "stop[]" and (k == "state" or keep_keys and k == "version"):
                out[k] = v  # state selects the drain step (see test_orch_hostile_stop_state)
            elif where == "repair[]" and keep_keys and k == "version":
                out[k] = v  # a repair step's name embeds its version
            elif keep_keys and where in ("start", "gate") and k == "backend":
                out[k] = v  # the key of require_up
            else:
                out[k] = hostile(v, h, k, keep_keys)
        return out
    raise TypeError(type(value))


def with_steps(plan):
    """``plan`` with its step table made from it, as pigeon_plan.make makes it."""
    return dict(plan, steps=steps_utils.steps(plan))


def hostile_plan(plan, h, keep_keys=False):
    """The plan made of ``h``; its action stays (the runner's, which names the orchestration and
    its steps), and its step table is made again from the hostile plan, as the runner would."""
    plan = {k: v for k, v in plan.items() if k != "steps"}
    out = hostile(plan, h, keep_keys=keep_keys)
    out["action"] = plan["action"]
    out["stop"] = [hostile(s, h, "stop[]", keep_keys) for s in plan["stop"]]
    if "repair" in plan:
        out["repair"] = [hostile(s, h, "repair[]", keep_keys) for s in plan["repair"]]
    return with_steps(out)


def hostile_ids(plan, h):
    """The plan with hostile step IDs: distinct strings made of ``h`` (and its steps' fields that
    no file reads, kind and does). The step names stay: the orchestrations look the steps up by
    name; the names that embed a version embed the plan's."""
    return dict(plan, steps=[dict(s, id=hkey(h, i), kind=h, does=h) for i, s in enumerate(plan["steps"])])


# ---------------------------------------------------------------------------
# what the orchestrations are meant to render (orch/*.sls, orch/steps.jinja), from their values
def step_ids(plan):
    """{step name: state ID}, from the plan's step table."""
    return {s["step"]: s["id"] for s in plan["steps"]}


def _requisites(kind, ids, names):
    present = [n for n in names if n in ids]  # as steps.jinja: a step the plan lacks is not required
    return [{kind: [{"salt": ids[n]} for n in present]}] if present else []


def exp_without_plan(action):
    return {f"{action} refused: no plan": {"test.configurable_test_state": [
        {"name": f"{action} refused"}, {"changes": False}, {"result": False},
        {"comment": f"run actions through the deploy runner (salt-run deploy.{action} app=...): "
                    "it takes the lock and makes the plan"}]}}


def exp_routes(ids, lb, plan, requires=(), gate=None, wait=0, gates=None):
    """The routes step: haproxy_runtime.set_routes on every load balancer; with two or more,
    the runner haproxy_switch.routes (all of them or none)."""
    gated = {}
    if gate or gates:
        gated["require_up"] = gates or {gate["backend"]: gate["expected_up"]}
        if wait:
            gated["wait"] = wait
    servers = {"servers": plan["servers"]} if plan["servers"] else {}
    if plan["two_phase"]:
        args = [{"name": "haproxy_switch.routes"}, {"balancers": lb["balancers"]}, {"routes": plan["routes"]},
                {"previous": plan["previous_routes"]}] + [{k: v} for k, v in dict(servers, **gated).items()]
        return {ids["routes"]: {"salt.runner": args + _requisites("require", ids, list(requires))}}
    return {ids["routes"]: {"salt.function": [
        {"name": "haproxy_runtime.set_routes"}, {"tgt": lb["target"]}, {"tgt_type": lb["target_type"]},
        {"expect_minions": True}, {"kwarg": dict({"routes": plan["routes"]}, **servers, **gated)}]
        + _requisites("require", ids, list(requires))}}


def exp_remove(ids, app, lb, cfg, plan, routed):
    """The stacks leaving: drained first when they took traffic, then removed; both after the
    routes step when there is one (``routed``), the removal after its drain."""
    out = {}
    before = ["routes"] if routed else []
    for stop in plan["stop"]:
        drained = stop["state"] in ("active", "release")
        drain = f"drain {stop['version']}"
        if drained:
            out[ids[drain]] = {"salt.function": [
                {"name": "haproxy_runtime.wait_drained"}, {"tgt": lb["target"]},
                {"tgt_type": lb["target_type"]}, {"arg": [stop["backend"]]},
                {"kwarg": {"timeout": lb["drain_timeout"]}}] + _requisites("require", ids, before)}
        out[ids[f"remove {stop['version']}"]] = {"salt.state": [
            {"tgt": cfg["target"]}, {"tgt_type": cfg["target_type"]}, {"sls": "stacks.absent"},
            {"concurrent": True},
            {"pillar": {"pigeon_stack": {"app": app, "version": stop["version"], "network": stop["network"]}}}]
            + _requisites("require", ids, before + ([drain] if drained else []))}
    return out


def exp_running(app, lb, cfg, version, stack):
    """The expected salt.state step of stacks.running for one stack (a release's containers,
    a repair's `repair V`)."""
    return {"salt.state": [
        {"tgt": cfg["target"]}, {"tgt_type": cfg["target_type"]}, {"sls": "stacks.running"},
        {"concurrent": True},
        {"pillar": {"pigeon_stack": {
            "app": app, "version": version, "formula": cfg["formula"], "build_dir": cfg["build_dir"],
            "network": stack["network"], "containers": stack["containers"], "keep": stack["keep"],
            "healthy_timeout": lb["healthcheck_timeout"], "addresses": stack.get("addresses")}}}]}


def expected_orch(action, plan):
    """The states of orch/<action>.sls for ``plan``, in their order; which steps there are
    follows the plan's values (the IDs are the plan's: a step missing from its table fails)."""
    ids, app = step_ids(plan), plan["app"]
    lb, cfg = plan["loadbal"], plan["config"]
    out = {}
    if action == "release":
        start, converge = plan["start"], plan["converge_loadbal"]
        if converge:
            out[ids["loadbal"]] = {"salt.state": [
                {"tgt": lb["target"]}, {"tgt_type": lb["target_type"]}, {"sls": ["docker", "haproxy"]},
                {"parallel": True}, {"concurrent": True}]}
        out[ids["containers"]] = exp_running(app, lb, cfg, plan["version"], start)
        out.update(exp_routes(ids, lb, plan, ["containers"] + (["loadbal"] if converge else []),
                              gate={"backend": start["backend"], "expected_up": start["expected_up"]},
                              wait=lb["healthcheck_timeout"]))
        if not plan["keep_failed"]:
            out[ids["cleanup"]] = {"salt.state": [
                {"tgt": cfg["target"]}, {"tgt_type": cfg["target_type"]}, {"sls": "stacks.absent"},
                {"concurrent": True},
                {"pillar": {"pigeon_stack": {"app": app, "version": plan["version"], "network": start["network"]}}}]
                + _requisites("onfail_any", ids, ["containers", "routes"])}
    elif action == "activate":
        out.update(exp_routes(ids, lb, plan, gate=plan["gate"]))
        out.update(exp_remove(ids, app, lb, cfg, plan, routed=True))
    elif action == "deactivate":
        if not plan["noop"]:
            out.update(exp_routes(ids, lb, plan))
        out.update(exp_remove(ids, app, lb, cfg, plan, routed=not plan["noop"]))
    elif action == "rollback" or (action == "canary" and plan.get("gate")):
        out.update(exp_routes(ids, lb, plan, gate=plan["gate"]))
    elif action in ("canary", "abort", "maintenance"):  # only where production goes
        out.update(exp_routes(ids, lb, plan))
    elif action == "repair":  # HAProxy, then each stack's containers, then the routes after all
        out[ids["loadbal"]] = {"salt.state": [
            {"tgt": lb["target"]}, {"tgt_type": lb["target_type"]}, {"sls": ["docker", "haproxy"]},
            {"parallel": True}, {"concurrent": True}]}
        for stack in plan["repair"]:
            out[ids[f"repair {stack['version']}"]] = exp_running(app, lb, cfg, stack["version"], stack)
        out.update(exp_routes(ids, lb, plan, [s["step"] for s in plan["steps"] if s["step"] != "routes"],
                              gates=plan["gates"], wait=lb["healthcheck_timeout"]))
    return out


def _stack_of(state):
    """The pigeon_stack pillar a salt.state step passes."""
    return [a for a in state["salt.state"] if "pillar" in a][0]["pillar"]["pigeon_stack"]


def _render_orch(opts, action, plan):
    pillar = {"pigeon_plan": copy.deepcopy(plan)}
    return render_file(opts, f"orch/{action}.sls", pillar, _functions(opts, pillar))


def check_orch(high, plan, want):
    """``high`` is ``want``, type for type; its states are the plan's steps, one each, in the
    plan's order (what the runner announces and pigeon_outcome reads back)."""
    check(high, want)
    assert list(high) == list(want) == [s["id"] for s in plan["steps"]], (
        f"states {_short(list(high))}, steps {_short([s['id'] for s in plan['steps']])}")


@pytest.mark.parametrize("shape", list(ORCH_SHAPES))
def test_orch_plain(opts, shape):
    """The realistic plans: the steps each action is meant to have."""
    action, plan = orch_case(shape)
    check_orch(_render_orch(opts, action, plan), plan, expected_orch(action, plan))


# an app on several app minions behind two load balancers (loadbal:servers): the plan places
# it, its routes switch in two phases
TWO_LB_SHAPES = ["release-new-app", "release-cleanup", "activate-remove-inactive", "deactivate-release",
                 "rollback", "repair-one"]
ADDRESSED = dict(copy.deepcopy(DEFINITION), loadbal=dict(DEFINITION["loadbal"],
                 servers={"network": "10.0.0.0/24", "first_port": 21000}))


@pytest.mark.parametrize("shape", TWO_LB_SHAPES)
def test_orch_two_load_balancers(opts, shape):
    """Two load balancers: the routes step is the runner haproxy_switch.routes (all of them or
    none), with the servers by address and the routes to set back."""
    action, version, stacks, force, seen, keep_failed = SHAPES[shape]
    plan = definition_utils.expand(
        APP, action, version, copy.deepcopy(ADDRESSED), _entry(stacks, seen),
        sm.plan(copy.deepcopy(_entry(stacks, seen)), action, version=version, force=force), sm.backend,
        placement={"app1": "10.0.0.21", "app2": "10.0.0.22"}, slots=sm.slots(), balancers=["lb1", "lb2"])
    plan["keep_failed"] = keep_failed
    plan["steps"] = steps_utils.steps(plan)
    assert plan["two_phase"] is True
    high = _render_orch(opts, action, plan)
    check_orch(high, plan, expected_orch(action, plan))
    routes = dict(a for arg in high[steps_utils.state_id(action, "routes")]["salt.runner"] for a in arg.items())
    assert routes["name"] == "haproxy_switch.routes" and routes["balancers"] == ["lb1", "lb2"]
    assert routes["previous"] == {k: _entry(stacks, seen)["routes"].get(k) for k in plan["routes"]}
    if action == "release":
        start = plan["start"]
        assert start["addresses"] == {"app1": "10.0.0.21", "app2": "10.0.0.22"}
        assert routes["servers"] == {start["backend"]: start["servers"]}
        first = 21000 + 10 * "abc".index(start["slot"])
        assert start["servers"] == [["10.0.0.21", first], ["10.0.0.21", first + 1],
                                    ["10.0.0.22", first], ["10.0.0.22", first + 1]]
        assert start["expected_up"] == 4
        published = [c["publish"] for c in start["containers"] if c["registered"]]
        assert published == [{"host": first, "container": 8080}, {"host": first + 1, "container": 8080}]


def test_orch_plain_ids():
    """The expected states themselves, spelled out for a few shapes (guards expected_orch and
    the step table): their IDs and functions, and their requisites."""
    def want(shape):
        action, plan = orch_case(shape)
        return expected_orch(action, plan)

    def ids(shape):
        return {k: list(v)[0] for k, v in want(shape).items()}

    def requisites(shape):
        out = {}
        for sid, body in want(shape).items():
            for arg in list(body.values())[0]:
                kind = list(arg)[0]
                if kind in ("require", "onfail_any"):
                    out.setdefault(sid, {})[kind] = [r["salt"] for r in arg[kind]]
        return out

    assert ids("release-new-app") == {
        "pigeon-release-loadbal": "salt.state", "pigeon-release-containers": "salt.state",
        "pigeon-release-routes": "salt.function", "pigeon-release-cleanup": "salt.state"}
    assert requisites("release-new-app") == {
        "pigeon-release-routes": {"require": ["pigeon-release-containers", "pigeon-release-loadbal"]},
        "pigeon-release-cleanup": {"onfail_any": ["pigeon-release-containers", "pigeon-release-routes"]}}
    assert ids("release-keep-failed") == {
        "pigeon-release-containers": "salt.state", "pigeon-release-routes": "salt.function"}
    assert requisites("release-keep-failed") == {
        "pigeon-release-routes": {"require": ["pigeon-release-containers"]}}
    assert ids("release-loadbal-keep-failed") == {
        "pigeon-release-loadbal": "salt.state", "pigeon-release-containers": "salt.state",
        "pigeon-release-routes": "salt.function"}
    assert ids("release-cleanup") == {
        "pigeon-release-containers": "salt.state", "pigeon-release-routes": "salt.function",
        "pigeon-release-cleanup": "salt.state"}
    assert requisites("release-cleanup") == {
        "pigeon-release-routes": {"require": ["pigeon-release-containers"]},
        "pigeon-release-cleanup": {"onfail_any": ["pigeon-release-containers", "pigeon-release-routes"]}}
    assert ids("activate-first") == {"pigeon-activate-routes": "salt.function"}
    assert requisites("activate-first") == {}
    assert ids("activate-remove-inactive") == {
        "pigeon-activate-routes": "salt.function", "pigeon-activate-remove-1.0": "salt.state"}
    assert requisites("activate-remove-inactive") == {
        "pigeon-activate-remove-1.0": {"require": ["pigeon-activate-routes"]}}
    assert ids("deactivate-release") == {
        "pigeon-deactivate-routes": "salt.function", "pigeon-deactivate-drain-2.0": "salt.function",
        "pigeon-deactivate-remove-2.0": "salt.state"}
    assert requisites("deactivate-release") == {
        "pigeon-deactivate-drain-2.0": {"require": ["pigeon-deactivate-routes"]},
        "pigeon-deactivate-remove-2.0": {"require": ["pigeon-deactivate-routes", "pigeon-deactivate-drain-2.0"]}}
    assert ids("deactivate-active-forced") == {
        "pigeon-deactivate-routes": "salt.function", "pigeon-deactivate-drain-1.0": "salt.function",
        "pigeon-deactivate-remove-1.0": "salt.state"}
    assert ids("deactivate-inactive") == {
        "pigeon-deactivate-routes": "salt.function", "pigeon-deactivate-remove-1.0": "salt.state"}
    assert requisites("deactivate-inactive") == {
        "pigeon-deactivate-remove-1.0": {"require": ["pigeon-deactivate-routes"]}}
    assert ids("deactivate-noop") == {"pigeon-deactivate-remove-9.9": "salt.state"}
    assert requisites("deactivate-noop") == {}
    assert ids("rollback") == {"pigeon-rollback-routes": "salt.function"}
    assert requisites("rollback") == {}


# what an orchestration may be given besides the runner's plan: nothing, or an empty plan
WITHOUT_PLAN = {
    "no-pillar": {},
    "none": {"pigeon_plan": None},
    "empty": {"pigeon_plan": {}},
    "empty-string": {"pigeon_plan": ""},
    # the pillar the orchestrations read before the deploy runner made the plan
    "old-pillar": {"pigeon": {"app": APP, "version": "1.0", "force": True, "source": "cli"},
                   "stacks": {APP: DEFINITION}},
}


@pytest.mark.parametrize("pillar", list(WITHOUT_PLAN))
@pytest.mark.parametrize("action", ACTIONS)
def test_orch_without_plan_is_refused(opts, action, pillar):
    """Run without the deploy runner (no lock, no plan): one refusal state, nothing else runs."""
    pillar = copy.deepcopy(WITHOUT_PLAN[pillar])
    high = render_file(opts, f"orch/{action}.sls", pillar, _functions(opts, pillar))
    check(high, exp_without_plan(action))


@pytest.mark.parametrize("value", [pytest.param(v, id=_hid(v)) for v in (
    "x", "{{ 7*7 }}", True, 1, ["pigeon-release-routes"], [{"app": APP}])])
@pytest.mark.parametrize("action", ACTIONS)
def test_orch_plan_not_a_mapping_fails_closed(opts, action, value):
    """A pigeon_plan that is not a mapping (never the runner's): the render fails, or gives the
    refusal (an empty one), never a step."""
    pillar = {"pigeon_plan": value}
    try:
        high = render_file(opts, f"orch/{action}.sls", pillar, _functions(opts, pillar))
    except RenderRefused:
        return
    check(high, exp_without_plan(action))


def _orch_ids_with(shape, version):
    """The state IDs and functions of the plain shape, its stops' version being ``version``:
    each ID spelled here as pigeon-<action>-<step>, a step's spaces as dashes."""
    action, plan = orch_case(shape)
    plain = expected_orch(action, plan)
    out = {}
    for s in plan["steps"]:
        name = s["step"]
        if s.get("version") is not None:
            name = f"{s['kind']} {version}"
        out[f"pigeon-{action}-{name}".replace(" ", "-")] = sorted(plain[s["id"]])
    return out


# the shapes whose plan keeps one state per step when every value is the same hostile one
# (a repair of three stacks would give three states of one ID: the registry cannot hold that)
ONE_VERSION_SHAPES = [shape for shape in ORCH_SHAPES if shape != "repair"]


@pytest.mark.parametrize("h", HOSTILE_PARAMS)
@pytest.mark.parametrize("shape", ONE_VERSION_SHAPES)
@fails_closed
def test_orch_hostile(opts, shape, h):
    """Every string and number of the plan replaced by ``h``, its step table made from it."""
    action, plain = orch_case(shape)
    plan = hostile_plan(plain, h)
    high = _render_orch(opts, action, plan)
    # the steps of the plain plan, the versions in their IDs being ``h``
    assert functions_of(high) == _orch_ids_with(shape, h)
    check_orch(high, plan, expected_orch(action, plan))


# every orchestration, every kind of step and requisite (routes after loadbal and containers,
# cleanup on their failure, drain and remove after routes, remove after its drain, remove alone)
ID_SHAPES = ["release-new-app", "activate-remove-inactive", "deactivate-release", "deactivate-noop", "rollback",
             "repair-one"]


@pytest.mark.parametrize("h", HOSTILE_PARAMS)
@pytest.mark.parametrize("shape", ID_SHAPES)
@fails_closed
def test_orch_hostile_step_ids(opts, shape, h):
    """The hostile plan with hostile step IDs: each renders as exactly that state ID, and the
    requisites name it as it is."""
    action, plain = orch_case(shape)
    plan = hostile_ids(hostile_plan(plain, h), h)
    high = _render_orch(opts, action, plan)
    assert list(high) == [hkey(h, i) for i in range(len(plan["steps"]))]
    check_orch(high, plan, expected_orch(action, plan))


STOP_SHAPES = ["activate-remove-inactive", "deactivate-release", "deactivate-active-forced"]


@pytest.mark.parametrize("h", HOSTILE_PARAMS)
@pytest.mark.parametrize("shape", STOP_SHAPES)
@fails_closed
def test_orch_hostile_stop_state(opts, shape, h):
    """stop[].state is compared, never rendered: an unknown state is one that took no traffic
    (no drain step in the plan's steps, so none rendered), and nothing of it reaches the
    rendered data."""
    action, plain = orch_case(shape)
    plan = hostile_plan(plain, "v")
    for stop in plan["stop"]:
        stop["state"] = h
    plan = with_steps(plan)
    assert [s["kind"] for s in plan["steps"]] == ["routes", "remove"]
    high = _render_orch(opts, action, plan)
    want = expected_orch(action, plan)
    assert not [sid for sid in want if "-drain-" in sid]
    check_orch(high, plan, want)


LONG = [pytest.param("x" * 5000, id="x*5000"),
        pytest.param("\u00fc" * 200, id="u-umlaut*200 (1200 characters as JSON)")]


@pytest.mark.parametrize("h", LONG)
@pytest.mark.parametrize("shape", ONE_VERSION_SHAPES)
def test_orch_long_values(opts, shape, h):
    """A long string renders anywhere a value goes: what YAML limits is a key (1024 characters
    of the escaped text, see test_orch_hostile with x*5000)."""
    action, plain = orch_case(shape)
    plan = hostile_plan(plain, h, keep_keys=True)
    assert step_ids(plan) == step_ids(plain)
    check_orch(_render_orch(opts, action, plan), plan, expected_orch(action, plan))


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
    plan = real_plan("release", "2.0", {"1.0": ("active", "a")}, definition=definition)
    assert not plan.get("error"), plan
    want = expected_orch("release", plan)
    check_orch(_render_orch(opts, "release", plan), plan, want)
    _running(opts, _stack_of(want[step_ids(plan)["containers"]]))


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
# stacks/running.sls and stacks/absent.sls (the app minion): pillar pigeon_stack only
def minion_pillar(pillar):
    """The pillar as a minion holds it (RemotePillar.compile_pillar wraps it)."""
    return salt.utils.secret.hide(copy.deepcopy(pillar))


def running_case(shape):
    """pigeon_stack as orch/release.sls passes it (its containers step)."""
    release = {"first": "release-new-app", "keep": "release-cleanup", "no-formula": "release-keep-failed"}[shape]
    action, plan = orch_case(release)
    stack = _stack_of(expected_orch(action, plan)[step_ids(plan)["containers"]])
    if shape == "no-formula":  # a pigeon_stack given by hand: no formula, timeout or keep
        stack = dict(stack, formula=None)
        del stack["healthy_timeout"], stack["keep"]
    return stack


def expected_running(stack):
    out = {}
    if stack.get("formula"):
        out["include"] = [stack["formula"]]
    args = [{"name": f"{stack['app']} {stack['version']}"}, {"app": stack["app"]},
            {"version": stack["version"]}, {"network": stack["network"]}, {"containers": stack["containers"]},
            {"keep": stack.get("keep", [])}]
    if stack.get("healthy_timeout"):
        args.append({"healthy_timeout": stack["healthy_timeout"]})
    if stack.get("formula"):
        args.append({"require": [{"sls": stack["formula"]}]})
    out["stacks-running-stack-containers-running"] = {"stack_containers.running": args}
    return out


def _running(opts, stack):
    pillar = minion_pillar({"pigeon_stack": stack})
    high = render_file(opts, "stacks/running.sls", pillar, _functions(opts, pillar))
    check(high, expected_running(stack))


RUNNING_SHAPES = ["first", "keep", "no-formula"]


@pytest.mark.parametrize("shape", RUNNING_SHAPES)
def test_running_plain(opts, shape):
    _running(opts, running_case(shape))


def test_running_plain_ids():
    """The expected states, spelled out (guards expected_running)."""
    def args(stack):
        return [list(a)[0] for a in expected_running(stack)["stacks-running-stack-containers-running"][
            "stack_containers.running"]]
    stack = running_case("keep")
    assert list(expected_running(stack)) == ["include", "stacks-running-stack-containers-running"]
    assert args(stack) == ["name", "app", "version", "network", "containers", "keep", "healthy_timeout",
                           "require"]
    assert stack["keep"] == ["1.0", "2.0"] and stack["version"] == "3.0"
    assert expected_running(stack)["include"] == ["demoapp"]
    stack = running_case("no-formula")
    assert list(expected_running(stack)) == ["stacks-running-stack-containers-running"]
    assert args(stack) == ["name", "app", "version", "network", "containers", "keep"]
    assert expected_running(stack)["stacks-running-stack-containers-running"][
        "stack_containers.running"][5] == {"keep": []}


@pytest.mark.parametrize("h", HOSTILE_PARAMS)
@pytest.mark.parametrize("shape", ["first", "keep"])
@fails_closed
def test_running_hostile(opts, shape, h):
    stack = hostile(running_case(shape), h, "pigeon_stack")
    # the structure of the plain case (include only when the formula is not empty)
    plain = set(expected_running(running_case(shape)))
    assert set(expected_running(stack)) == (plain - {"include"} if h == "" else plain)
    _running(opts, stack)


@pytest.mark.parametrize("h", LONG)
@pytest.mark.parametrize("shape", ["first", "keep"])
def test_running_long_values(opts, shape, h):
    """Long values everywhere a value goes (the maps' keys stay): they render."""
    _running(opts, hostile(running_case(shape), h, "pigeon_stack", keep_keys=True))


def absent_case(shape):
    """pigeon_stack as the orchestrations pass it: a stack leaving, a failed release cleaned."""
    action, plan = orch_case({"remove": "deactivate-release", "cleanup": "release-cleanup"}[shape])
    step = {"remove": "remove 2.0", "cleanup": "cleanup"}[shape]
    return _stack_of(expected_orch(action, plan)[step_ids(plan)[step]])


def expected_absent(stack):
    return {"stacks-absent-stack-containers-absent": {"stack_containers.absent": [
        {"name": f"{stack['app']} {stack['version']}"}, {"app": stack["app"]}, {"version": stack["version"]},
        {"network": stack["network"]}]}}


def _absent(opts, stack):
    pillar = minion_pillar({"pigeon_stack": stack})
    high = render_file(opts, "stacks/absent.sls", pillar, _functions(opts, pillar))
    check(high, expected_absent(stack))


ABSENT_SHAPES = ["remove", "cleanup"]


@pytest.mark.parametrize("shape", ABSENT_SHAPES)
def test_absent_plain(opts, shape):
    stack = absent_case(shape)
    assert stack == {"remove": {"app": APP, "version": "2.0", "network": "pigeon-app-2.0"},
                     "cleanup": {"app": APP, "version": "3.0", "network": "pigeon-app-3.0"}}[shape]
    _absent(opts, stack)


@pytest.mark.parametrize("h", HOSTILE_PARAMS)
@pytest.mark.parametrize("shape", ABSENT_SHAPES)
@fails_closed
def test_absent_hostile(opts, shape, h):
    _absent(opts, hostile(absent_case(shape), h, "pigeon_stack"))


@pytest.mark.parametrize("h", LONG)
@pytest.mark.parametrize("shape", ABSENT_SHAPES)
def test_absent_long_values(opts, shape, h):
    _absent(opts, hostile(absent_case(shape), h, "pigeon_stack", keep_keys=True))


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


# ---------------------------------------------------------------------------
# the docker formula: who starts dockerd
@pytest.mark.parametrize("start_daemon", [True, False])
def test_the_docker_formula_starts_dockerd_only_when_asked(opts, start_daemon):
    """docker:start_daemon False (the multi-host lab's hosts, whose daemons bootstrap/hosts.sh
    starts): a check of the minion's daemon, never a second dockerd; True: started when down."""
    pillar = {"docker": {"start_daemon": start_daemon, "pkg_refresh": False}}
    high = render_file(opts, "docker/service/running.sls", pillar, _functions(opts, pillar))
    started = "docker-service-running-cmd-run" in high
    checked = "docker-service-running-test-fail-without-changes" in high
    assert (started, checked) == (start_daemon, not start_daemon)
    if start_daemon:
        assert "nohup dockerd" in str(high["docker-service-running-cmd-run"])
    else:
        check = high["docker-service-running-test-fail-without-changes"]["test.fail_without_changes"]
        assert {"unless": [{"fun": "docker.version"}]} in check
    package = render_file(opts, "docker/package/install.sls", pillar, _functions(opts, pillar))
    assert {"refresh": False} in package["docker-package-install-pkg-installed"]["pkg.installed"]


@pytest.mark.parametrize("start_daemon", [True, False])
def test_on_systemd_the_docker_formula_manages_the_service_only_when_it_starts_the_daemon(opts, start_daemon):
    """The multi-host lab's hosts share this machine's PID 1: where that is systemd, their docker
    formula must still only check their own daemon, and docker.clean must stop nothing."""
    opts = dict(opts, grains=dict(opts.get("grains") or {}, init="systemd"))
    pillar = {"docker": {"start_daemon": start_daemon, "pkg_refresh": False}}
    high = render_file(opts, "docker/service/running.sls", pillar, _functions(opts, pillar))
    assert ("docker-service-running-service-running" in high) == start_daemon
    assert ("docker-service-running-test-fail-without-changes" in high) == (not start_daemon)
    clean = render_file(opts, "docker/clean.sls", pillar, _functions(opts, pillar)) or {}
    assert ("docker-clean-service-dead" in clean) == start_daemon and "docker-clean-cmd-run" not in clean
