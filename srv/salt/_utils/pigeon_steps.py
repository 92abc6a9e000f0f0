"""
The steps of an action, named once: which steps an action's orchestration runs,
in which order, and the state ID each step has in ``orch/<action>.sls``.

``steps(plan)`` is called by the plan (``pigeon_plan.make``) and travels in it
(``plan["steps"]``): the orchestrations take each state's ID from there
(``orch/steps.jinja``), and the outcome (``pigeon_outcome.build``) reads the
orchestration's result through the same table. A step is known to everyone
else by its name (``containers``, ``routes``, ``remove 1.2``...); its state ID
is this module's business, so renaming one changes nothing the CLI shows
(``tests/unit/test_outcome.py`` shows it).

Pure Python, no Salt: ``__utils__["pigeon_steps.steps"]``; imported by path in
the unit tests.
"""

# the state ID of a step: the only place that spells one
ID_FORMAT = "pigeon-{action}-{step}"

# what each kind of step does, for the dry run and the docs
DOES = {
    "loadbal": "apply the docker and haproxy states on the load balancer (its loadbal: pillar is new)",
    "containers": "start the stack's containers (after removing leftovers); gate: docker health",
    "routes": "set HAProxy's routes at runtime",
    "cleanup": "on failure: remove what the release started",
    "drain": "wait until HAProxy's sessions on the stack's backend end",
    "remove": "stop the stack's containers gracefully and remove them",
    "repair": "start the stack's stopped containers, create its missing ones (after removing the "
              "containers of versions the registry does not know); gate: docker health",
}


def state_id(action, step):
    """The state ID of ``step`` (a step's name: 'routes', 'remove 1.2') in orch/<action>.sls."""
    return ID_FORMAT.format(action=action, step=step.replace(" ", "-"))


def _step(action, name, kind, **extra):
    return dict({"step": name, "kind": kind, "id": state_id(action, name), "does": DOES[kind]}, **extra)


def steps(plan):
    """
    The steps the orchestration of ``plan`` runs, in order: [{"step", "kind", "id",
    "does", "cancellable"}, ...]. An empty list: nothing to run (a plan that changes
    nothing, or only the registry). A cancel stops the action before a ``cancellable``
    step: those up to its routes (production and preview move there), never after them,
    nor a release's cleanup.
    """
    result = _steps(plan)
    routes = next((n for n, s in enumerate(result) if s["kind"] == "routes"), -1)
    for n, step in enumerate(result):
        step["cancellable"] = n <= routes and step["kind"] != "cleanup"
    return result


def _steps(plan):
    action = plan["action"]
    result = []
    if plan.get("noop") and not (action == "deactivate" and plan.get("stop")):
        return result
    if action == "release":
        if plan.get("converge_loadbal"):
            result.append(_step(action, "loadbal", "loadbal"))
        result.append(_step(action, "containers", "containers"))
        result.append(_step(action, "routes", "routes"))
        if not plan.get("keep_failed"):  # --keep-failed: a failed release stays for a look
            result.append(_step(action, "cleanup", "cleanup"))
        return result
    if action == "repair":  # HAProxy and every stack's containers back, then the registry's routes
        result.append(_step(action, "loadbal", "loadbal"))
        for stack in plan.get("repair") or []:
            result.append(_step(action, f"repair {stack['version']}", "repair", version=stack["version"]))
        result.append(_step(action, "routes", "routes"))
        return result
    if not plan.get("noop"):
        result.append(_step(action, "routes", "routes"))
    for stop in plan.get("stop") or []:
        version = stop["version"]
        if stop.get("state") in ("active", "release"):
            result.append(_step(action, f"drain {version}", "drain", version=version))
        result.append(_step(action, f"remove {version}", "remove", version=version))
    return result
