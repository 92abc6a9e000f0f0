"""
What an orchestration's result says: ``orchestration_outcome`` turns the return of
``deploy.<action>`` (``state.orchestrate``'s, or ``{"refused": ...}``) into ok, the
error line, the steps in the order they ran, and the registry's result.

Used by ``pigeon.cli`` to print an action's end and its ``--json`` report.
"""

import json
import re

STEP_RE = re.compile(r"^pigeon-[a-z]+-(.+?)-(runner|function|state)$")


def step_name(state_id):
    """'pigeon-release-routes-function' -> 'routes'."""
    match = STEP_RE.match(state_id or "")
    return match.group(1) if match else (state_id or "?")


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
                    comment = str((real or failed)[0].get("comment", "")).strip()
                    return f"{minion}: {first_line(comment)}"
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


def first_line(text):
    text = text.strip()
    for prefix in ("ERROR: ", "Passed invalid arguments: "):
        if text.startswith(prefix):
            text = text[len(prefix):]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else "(no comment)"


def orchestration_outcome(ret):
    """
    Read the runner client's return of state.orchestrate.

    Returns {"ok": bool, "steps": [{"step", "result", "skipped", "comment", "duration_ms"}],
    "error": one line or None, "result": the commit step's return or None,
    "cleaned": versions whose leftovers were removed}; a refusal (the plan's
    ``pigeon-<action>-refused`` state) gives "refused": True and no steps.
    """
    if isinstance(ret, dict) and isinstance(ret.get("refused"), str):
        # the deploy runner's door refused the request (pigeon_schema): nothing ran
        return {"ok": False, "steps": [], "error": ret["refused"], "refused": True, "result": None}
    if not isinstance(ret, dict) or "data" not in ret:
        text = ret if isinstance(ret, str) else json.dumps(ret)[:300]
        return {"ok": False, "steps": [], "error": f"unexpected answer from the master: {first_line(text)}",
                "result": None}
    data = ret["data"]
    per_master = next(iter(data.values())) if isinstance(data, dict) and data else data
    if isinstance(per_master, list):  # render errors come as a list of strings
        message = first_line(" ".join(str(x) for x in per_master))
        message = re.sub(r"^Rendering SLS '[^']+' failed: ", "", message)
        return {"ok": False, "steps": [], "result": None,
                "error": f"the orchestration could not be rendered: {message}; check the pillar "
                         "(salt-run pillar.show_pillar) and the master's log"}
    steps = []
    for key, step in sorted(per_master.items(), key=lambda kv: kv[1].get("__run_num__", 0)):
        comment = str(step.get("comment", ""))
        skipped = comment.startswith("State was not run because")
        steps.append({
            "step": step_name(step.get("__id__", key.split("_|-")[1] if "_|-" in key else key)),
            "result": step.get("result"),
            "skipped": skipped,
            "comment": comment,
            "duration_ms": step.get("duration"),
            "raw": step,
        })
    failed = [s for s in steps if s["result"] is False]
    error = None
    if failed:
        real = [s for s in failed if not s["comment"].startswith("One or more requisite failed")]
        first = (real or failed)[0]
        raw = first["raw"]
        fun = raw.get("name", "")
        if first["step"].endswith("refused"):
            # the plan refused the action (the lock held by another action, the state machine,
            # the pillar): the orchestration is that one state, nothing ran
            return {"ok": False, "steps": [], "error": first["comment"], "refused": True, "result": None}
        if isinstance((raw.get("changes") or {}).get("return"), dict) and "Error" in raw["changes"]["return"]:
            error = str(raw["changes"]["return"]["Error"])
        elif fun.startswith("stacks."):
            error = first_line(json.dumps((raw.get("changes") or {}).get("return")) or first["comment"])
        else:
            error = _minion_failure(raw)
        error = f"step {first['step']} failed: {error}"
    result = None
    for s in steps:
        if s["step"] == "commit" and s["result"]:
            result = (s["raw"].get("changes") or {}).get("return")
    ok = not failed and ret.get("retcode", 0) in (0, None)
    cleaned = leftovers_removed(steps)
    if not ok and error is None:
        error = f"the orchestration returned retcode {ret.get('retcode')}; see the master's log"
    for s in steps:
        del s["raw"]
    return {"ok": ok, "steps": steps, "error": error, "result": result, "cleaned": cleaned}


# the leftover removal states of srv/salt/stacks/running.sls, keyed
# docker_container_|-stacks-running-leftover-<version>-docker-container-absent_|-<container>_|-absent
LEFTOVER_RE = re.compile(r"_\|-stacks-running-leftover-(.+?)-docker-container-absent_\|-")


def leftovers_removed(steps):
    """Versions whose leftover containers (of an interrupted action) a release removed."""
    found = set()
    for step in steps:
        ret = ((step.get("raw") or {}).get("changes") or {}).get("ret")
        for states in (ret or {}).values() if isinstance(ret, dict) else []:
            for key, state in (states or {}).items() if isinstance(states, dict) else []:
                match = LEFTOVER_RE.search(key)
                if match and isinstance(state, dict) and state.get("changes"):
                    found.add(match.group(1))
    return sorted(found)
