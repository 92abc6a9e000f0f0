"""
The outcome of an action, in the shape ``stacks.py`` prints and documents
(docs/cli.md, "--json of an action"): made on the master by the deploy runner from the
plan and the return of ``state.orchestrate``, so that no client reads state IDs.

    {"action", "app", "version", "ok": bool, "refused": bool, "error": one line or None,
     "failed_step": the step that failed or None,
     "steps": [{"step", "result": True/False/None, "skipped": bool, "seconds", "comment"}],
     "cleaned": versions whose leftovers the release removed,
     "containers": {name: "created" | "started"} what the steps started (a repair's work),
     "changed": what the registry recorded (stacks.commit's return) or None,
     "revision": the registry's revision after the action}

A step is known by its name in the plan's step table (``plan["steps"]``, from
``pigeon_steps``): the state IDs are looked up there, never parsed.

Pure Python, no Salt: ``__utils__["pigeon_outcome.build"]``; imported by path in
the unit tests.
"""

import json
import re

RENDER_PREFIX = r"^Rendering SLS '[^']+' failed: "
# the comment of a step a cancel stopped, before the reason (pigeon_orchestrate.CANCELLED)
CANCELLED = "not run: "
REQUISITE_FAILED = "One or more requisite failed: "


def first_line(text):
    """The first non-empty line of ``text``, without Salt's "ERROR: " prefixes."""
    text = str(text).strip()
    for prefix in ("ERROR: ", "Passed invalid arguments: "):
        if text.startswith(prefix):
            text = text[len(prefix):]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else "(no comment)"


def failed(plan_or_request, message):
    """The outcome of an action that failed outside its steps (an error on the master)."""
    return _base(plan_or_request, ok=False, error=message)


def nothing_ran(plan):
    """The outcome of a plan with no step to run (the registry alone changes, or nothing)."""
    return _base(plan)


def refused(plan_or_request, message):
    """The outcome of an action refused before any step ran."""
    return _base(plan_or_request, ok=False, refused=True, error=message)


def _base(plan, **values):
    outcome = {"action": plan.get("action"), "app": plan.get("app"), "version": plan.get("version"),
               "ok": True, "refused": False, "error": None, "failed_step": None, "steps": [],
               "cleaned": [], "containers": {}, "changed": None, "revision": plan.get("generation")}
    outcome.update(values)
    return outcome


def _minion_failure(step):
    """The one useful line of a failed salt.function / salt.state step."""
    ret = (step.get("changes") or {}).get("ret")
    if isinstance(ret, dict):
        for minion, value in ret.items():
            if isinstance(value, dict):  # salt.state: the failed states of that minion
                failed = [v for v in value.values() if isinstance(v, dict) and v.get("result") is False]
                failed.sort(key=lambda v: v.get("__run_num__", 0))
                real = [v for v in failed if not str(v.get("comment", "")).startswith("One or more requisite")]
                if real or failed:
                    return f"{minion}: {first_line((real or failed)[0].get('comment', ''))}"
            elif isinstance(value, (list, tuple)):  # errors before any state ran (render, pillar)
                message = first_line(next((str(x) for x in value if x), ""))
                return f"{minion}: {re.sub(RENDER_PREFIX, '', message)}"
            elif value is False:  # salt.state: the minion returned no state result
                return f"{minion} did not return a result; is the minion up? (salt-run manage.status)"
            elif value not in (None, True) and value != "":
                return f"{minion}: {first_line(str(value))}"
    comment = str(step.get("comment", ""))
    if "No minions matched" in comment or "No minions responded" in comment or "did not respond" in comment:
        return f"{first_line(comment)}; is the minion up? (salt-run manage.status)"
    match = re.search(r"ERROR: (.+)", comment)
    if match:
        return match.group(1).strip()
    return first_line(comment)


def _minion_changes(state, key):
    """The ``key`` changes of every minion state of a salt.state step (stack_containers.running's
    ``leftovers_removed``, ``containers``), those that are dicts."""
    ret = (state.get("changes") or {}).get("ret")
    for states in ret.values() if isinstance(ret, dict) else []:
        for result in states.values() if isinstance(states, dict) else []:
            found = ((result or {}).get("changes") or {}).get(key) if isinstance(result, dict) else None
            if isinstance(found, dict):
                yield found


def _leftovers(state):
    """Versions whose leftovers a step's minions removed (stack_containers.running's changes)."""
    return {str(v) for removed in _minion_changes(state, "leftovers_removed") for v in removed}


def _started(state):
    """{container: "created" | "started"} of what a step's minions started."""
    return {str(k): str(v) for started in _minion_changes(state, "containers") for k, v in started.items()}


def build(plan, ret):
    """The outcome of running ``plan``'s orchestration, which returned ``ret``."""
    if not isinstance(ret, dict) or "data" not in ret:
        text = ret if isinstance(ret, str) else json.dumps(ret, default=str)[:300]
        return _base(plan, ok=False, error=f"unexpected answer from the orchestration: {first_line(text)}")
    data = ret["data"]
    per_master = next(iter(data.values())) if isinstance(data, dict) and data else data
    if isinstance(per_master, list) or not isinstance(per_master, dict):  # render errors: strings
        message = first_line(" ".join(str(x) for x in per_master) if isinstance(per_master, list)
                             else str(per_master))
        message = re.sub(RENDER_PREFIX, "", message)
        return _base(plan, ok=False, error=f"the orchestration could not be rendered: {message}; "
                                           "see the master's log")
    names = {s["id"]: s["step"] for s in plan.get("steps") or []}
    order = {s["id"]: n for n, s in enumerate(plan.get("steps") or [])}
    states = sorted(per_master.values(), key=lambda s: (s.get("__run_num__", 0), order.get(s.get("__id__"), 0)))
    steps, cleaned, started, failures = [], set(), {}, []
    for state in states:
        name = names.get(state.get("__id__"), state.get("__id__") or "?")
        comment = _requisites_named(str(state.get("comment", "")), state.get("__sls__"), names)
        # did not run: its onfail had nothing to do, or a step it requires failed
        skipped = comment.startswith(("State was not run because", REQUISITE_FAILED))
        step = {"step": name, "result": None if skipped else state.get("result"), "skipped": skipped,
                "seconds": round((state.get("duration") or 0) / 1000, 3), "comment": first_line(comment)}
        if state.get("result") is False:
            if not skipped:
                step["comment"] = _error(state)
            failures.append((skipped, step))
        cleaned |= _leftovers(state)
        started.update(_started(state))
        steps.append(step)
    # a step of the plan with no state in the result never ran: the SLS does not have it
    ran = {state.get("__id__") for state in states}
    for planned in plan.get("steps") or []:
        if planned["id"] not in ran:
            step = {"step": planned["step"], "result": False, "skipped": False, "seconds": 0.0,
                    "comment": f"not in the orchestration's result (no state {planned['id']} in "
                               f"orch/{plan.get('action')}.sls): the SLS files and the synced modules "
                               "may not match; run salt-run saltutil.sync_all on the master"}
            failures.append((False, step))
            steps.append(step)
    # the step that failed first for a reason of its own (not because another failed)
    failed = min(failures, key=lambda f: f[0])[1] if failures else None
    ok = failed is None and ret.get("retcode", 0) in (0, None)
    error = None
    if failed is not None and failed["comment"].startswith(CANCELLED):
        error = _cancelled(failed, steps)
    elif failed is not None:
        error = f"step {failed['step']} failed: {failed['comment']}"
    elif not ok:
        error = f"the orchestration returned retcode {ret.get('retcode')}; see the master's log"
    return _base(plan, ok=ok, error=error, failed_step=failed["step"] if failed else None,
                 steps=steps, cleaned=sorted(cleaned), containers=dict(sorted(started.items())))


def _cancelled(stopped, steps):
    """'cancelled by alice at <when> before step routes; done: containers, cleanup; not run:
    routes' (the outcome's error of an action a cancel stopped between steps)."""
    done = [s["step"] for s in steps if s["result"] is True and not s["skipped"]]
    not_run = [s["step"] for s in steps if s is stopped or s["comment"].startswith(CANCELLED) or (
        s["skipped"] and s["comment"].startswith(REQUISITE_FAILED))]
    return (f"{stopped['comment'][len(CANCELLED):]} before step {stopped['step']}; done: "
            f"{', '.join(done) or 'nothing'}; not run: {', '.join(not_run)}")


def _requisites_named(comment, sls, names):
    """Salt's "One or more requisite failed: orch.release.<state ID>, ..." with the steps'
    names instead of their state IDs (looked up in the plan's table)."""
    if not comment.startswith(REQUISITE_FAILED):
        return comment
    named = []
    for ref in comment[len(REQUISITE_FAILED):].split(","):
        ref = ref.strip()
        state_id = ref[len(sls) + 1:] if sls and ref.startswith(f"{sls}.") else ref
        named.append(names.get(state_id, ref))
    return REQUISITE_FAILED + ", ".join(named)


def _error(state):
    """Why a step failed, on one line."""
    ret = (state.get("changes") or {}).get("return")
    if isinstance(ret, dict) and "Error" in ret:
        return first_line(str(ret["Error"]))
    return _minion_failure(state)
