"""
The plan of an action, and its end: what an action will do, checked against
the registry and the state machine; what the registry records when it ends.

Called by the deploy runner (``_runners/deploy.py``), which holds the app's
deploy lock from before ``make`` to after ``commit`` or ``abort``:

- ``make``: the definition checked (``pigeon_schema.check_definition``), the
  action checked against the state machine (``pigeon_statemachine.plan``) on
  the registry, expanded into what the steps need (``pigeon_definition.expand``)
  with the steps the orchestration runs (``pigeon_steps.steps``). Also the dry
  run: it writes nothing.
- ``commit``: the stacks' new states and routes recorded, a history entry.
- ``abort``: the failure recorded in the history, with the failed step's error.
- ``refused``: a refusal recorded in the history.

Reached as ``__utils__["pigeon_plan.<fun>"]``; unit tests load it by path and set ``_LOADER``.
"""

import difflib

_LOADER = None


def _utils(name):
    """A function of another utils module. Salt's loader gives utils modules no ``__utils__``:
    these share a utils loader of their own, made on first use (tests set ``_LOADER``)."""
    global _LOADER  # pylint: disable=global-statement
    if _LOADER is None:
        import salt.loader  # pylint: disable=import-outside-toplevel

        _LOADER = salt.loader.utils(__opts__)
    return _LOADER[name]


def _is_transition_error(exc):
    # TransitionError is defined in pigeon_statemachine, loaded by Salt's loader under
    # another module name: matched by name, in this one place
    return type(exc).__name__ == "TransitionError"


def check(app, action, version=None, definition=None, known=()):
    """
    What can be checked without the registry: the app's definition (the ``stacks:<app>``
    pillar, through the schema) and the version. Returns (version, None), the version to
    act on (a release without one takes the pillar's), or (None, why not: one line). The
    deploy runner asks this before it takes the lock, so that an unknown app or a broken
    pillar neither waits for a lock nor leaves a lock file. ``known``: the apps of the
    pillar, for the closest name when ``app`` is none of them.
    """
    try:
        _utils("pigeon_schema.check_app")(app)
        _utils("pigeon_schema.check_definition")(app, definition)
    except ValueError as exc:  # pigeon_schema.Invalid
        close = difflib.get_close_matches(app, sorted(set(known) - {app}), n=1) if definition is None else []
        if close:
            return None, f"unknown app {app!r}: no stacks:{app} in the master's pillar; did you mean {close[0]}?"
        return None, str(exc)
    try:
        count, services = _utils("pigeon_definition.services")(definition)
    except (TypeError, ValueError):
        return None, f"broken pillar: stacks:{app}:task_definitions:count is not a number"
    if not services or count < 1:
        return None, f"broken pillar: stacks:{app}:task_definitions has no service"
    if action == "release" and not version:
        version = str(definition.get("version") or "") or None
        if not version:
            return None, f"no version given and no stacks:{app}:version in pillar; add --version"
    version = str(version) if version is not None else None
    if version is not None:
        try:
            _utils("pigeon_schema.check_version")(version)
        except ValueError as exc:  # pigeon_schema.Invalid
            return None, str(exc)
    return version, None


def _overlap(app, definition, others):
    """Why the host ports of ``app`` (``loadbal:servers:first_port``) cannot be used: another
    app's range overlaps it (one line), or None."""
    span = _utils("pigeon_definition.port_span")
    slots = _utils("pigeon_statemachine.slots")()
    mine = span(definition["loadbal"], slots)
    for other, theirs in sorted((others or {}).items()):
        loadbal = theirs.get("loadbal") if isinstance(theirs, dict) and other != app else None
        if not isinstance(loadbal, dict) or not _utils("pigeon_definition.by_address")(loadbal):
            continue
        try:
            ports = span(loadbal, slots)
        except (KeyError, TypeError, ValueError):
            continue  # its own actions refuse it
        if mine.start < ports.stop and ports.start < mine.stop:
            return (f"broken pillar: stacks:{app}:loadbal:servers:first_port {mine.start} (ports "
                    f"{mine.start}-{mine.stop - 1}) overlaps stacks:{other}'s ({ports.start}-{ports.stop - 1}); "
                    "give each app its own range")
    return None


def _mixed(app, loadbal, entry, planned):
    """Why a release cannot start while the registry holds stacks HAProxy reaches the other way
    (by Docker's DNS, or by address: ``loadbal:servers`` added or removed since), or None. The
    load balancers' slots of an app are all of one kind; the pillar's change reloads them."""
    if not planned.get("start"):
        return None
    addressed = _utils("pigeon_definition.by_address")(loadbal)
    other = sorted(v for v, s in entry["stacks"].items() if bool(s.get("servers")) != addressed)
    if other:
        return (f"stacks:{app}:loadbal:servers was {'added' if addressed else 'removed'} while the registry holds "
                f"{', '.join(other)}, reached the other way; deactivate {'them' if len(other) > 1 else 'it'} "
                "first (docs/multi-host.md)")
    return None


def placement(app, definition):
    """({app minion: address}, None) for an app HAProxy reaches by address: the minions with an
    accepted key that ``config:target`` matches, each at its address in ``loadbal:servers:
    network``; or (None, one line) when one of them has no such address."""
    config, servers = definition["config"], definition["loadbal"]["servers"]
    minions = _utils("pigeon_minions.expected")(config["target"], config.get("target_type", "glob"))
    found, missing = _utils("pigeon_minions.addresses")(minions, servers["network"])
    if missing:
        return None, (f"{missing[0]}: no address in {servers['network']} among its ipv4 grains "
                      f"(stacks:{app}:loadbal:servers:network); check with salt {missing[0]} grains.get ipv4")
    return found, None


def make(app, action, version=None, force=False, definition=None, expect_revision=None, keep_failed=False,
         known=(), others=None, asked=None):
    """
    The plan of ``action`` on the registry as it is now, or {"error": one line}.
    ``definition`` is the app's ``stacks:<app>`` pillar; ``known``, the pillar's apps;
    ``others``, their definitions (an app whose host ports overlap another's, or that claims
    another's host name on its frontend, is refused); ``asked``, what a traffic action asks
    (canary: percent; maintenance: enable, message, retry_after).
    """
    version, refusal = check(app, action, version, definition, known)
    if refusal:
        return {"error": refusal}
    loadbal = definition["loadbal"]
    balancers = _utils("pigeon_minions.expected")(loadbal["target"], loadbal.get("target_type", "glob"))
    entry = _utils("pigeon_registry.load")(app)
    if expect_revision is not None and int(expect_revision) != entry["generation"]:
        return {"error": f"the registry of {app} is at revision {entry['generation']}, not "
                         f"{expect_revision}: it changed since you looked; see ./stacks.py status"}
    try:
        planned = _utils("pigeon_statemachine.plan")(entry, action, version=version, force=bool(force),
                                                     asked=asked)
    except Exception as exc:  # pylint: disable=broad-except
        if not _is_transition_error(exc):
            raise
        return {"error": str(exc)}
    if planned.get("start") or planned.get("repair"):
        # an action that converges the load balancers: their formula would refuse a host
        # name claimed twice on a frontend (a rollback or deactivate only switches routes)
        refusal = _utils("pigeon_schema.frontend_claims")(app, {**(others or {}), app: definition})
        if refusal:
            return {"error": refusal}
    where = None
    if _utils("pigeon_definition.by_address")(loadbal) and (planned.get("start") or planned.get("repair")):
        # only an action that starts containers places them: a rollback or a deactivate
        # never waits for an app minion's address or another app's ports
        refusal = _overlap(app, definition, others) or _mixed(app, loadbal, entry, planned)
        if refusal:
            return {"error": refusal}
        where, refusal = placement(app, definition)
        if refusal:
            return {"error": refusal}
    elif planned.get("start"):
        refusal = _mixed(app, loadbal, entry, planned)
        if refusal:
            return {"error": refusal}
    planned = _utils("pigeon_definition.expand")(app, action, version, definition, entry, planned,
                                                 _utils("pigeon_statemachine.backend"), placement=where,
                                                 slots=_utils("pigeon_statemachine.slots")(), balancers=balancers)
    if planned.get("error"):
        return planned
    planned["keep_failed"] = bool(keep_failed)
    planned["steps"] = _utils("pigeon_steps.steps")(planned)
    return planned


def refused(app, action, version, message, user=None, source="cli", job=None):
    """Record a refused action (nothing ran)."""
    registry = _utils("pigeon_registry.record")
    _utils("pigeon_registry.history_add")(app, registry(action, version, "refused", user=user,
                                                        source=source, message=message, job=job))


def commit(app, planned, held, source="cli"):
    """
    Record a finished action: the stacks' new states and routes, a history entry.
    ``held`` is the lock's content (who, since when). Returns what changed: {"message",
    "noop", "stacks", "routes"}.
    """
    load, store = _utils("pigeon_registry.load"), _utils("pigeon_registry.store")
    entry = load(app)
    who = held.get("user") or "unknown"
    if _utils("pigeon_statemachine.changes_registry")(planned):
        converged = planned.get("converge_loadbal") and planned["action"] == "release"
        applied = _utils("pigeon_statemachine.apply")(entry, planned, _utils("pigeon_registry.now")(), who)
        entry = dict(applied, loadbal_hash=planned["loadbal_hash"] if converged else entry.get("loadbal_hash"))
        store(entry)
    else:
        # a repair that placed its stacks on the app minions there are now: their new servers
        new = _utils("pigeon_statemachine.replaced")(entry, planned) or entry
        if not planned.get("noop") and planned.get("routes") and new["routes"] != planned["routes"]:
            # a repair set the routes as they are computed now (an entry older than some keys,
            # such as a slot's version): the registry says what HAProxy has, for the formula too
            new = dict(new, routes=dict(planned["routes"]))
        if new is not entry:
            entry = new
            store(entry)
    record = _utils("pigeon_registry.record")(
        planned["action"], planned.get("version"), "success", user=who, source=source,
        when=held.get("since"), started=held.get("started"), job=held.get("job"), noop=planned.get("noop", False),
        message=planned.get("message"), states=planned.get("states"))
    _utils("pigeon_registry.history_add")(app, record)
    return {"message": planned.get("message") or "", "noop": planned.get("noop", False),
            "stacks": entry["stacks"], "routes": entry["routes"], "traffic": entry.get("traffic") or {},
            "revision": entry["generation"]}


def note_bake(app, version, bake):
    """Keep the last bake window of an app in its registry entry (status shows it): {version,
    result, breach, rolled_back_to, seconds, responses, 5xx, 5xx_percent, rtime_ms, when}.
    Called under the app's lock, after the activate (and its rollback) were recorded."""
    entry = _utils("pigeon_registry.load")(app)
    entry["bake"] = dict(bake, version=version, when=_utils("pigeon_registry.now")())
    _utils("pigeon_registry.store")(entry)


def abort(app, planned, held, outcome, source="cli"):
    """Record a failed action in the history: the failed step and its error, what was cleaned."""
    record = _utils("pigeon_registry.record")(
        planned.get("action"), planned.get("version"), "failed", user=held.get("user"), source=source,
        when=held.get("since"), started=held.get("started"), job=held.get("job"), error=outcome.get("error"),
        step=outcome.get("failed_step"), cleaned=outcome.get("cleaned") or None)
    _utils("pigeon_registry.history_add")(app, record)
