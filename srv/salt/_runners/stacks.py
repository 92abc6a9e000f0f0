"""
Pigeon's registry of stacks, on the master: which version of each app is in
which state, the per-app deploy lock, and the history of every action.

The orchestrations (``orch/*.sls``) call these functions:

- ``stacks.plan`` at render time: takes the app's deploy lock (refusing when
  another live action holds it, or waiting ``wait`` seconds), checks the action
  against the state machine (``_utils/pigeon_statemachine.py``) on the registry
  it now holds, and expands the stack definition into what the steps need
  (containers, backends, routes: ``_utils/pigeon_definition.py``). A refused
  plan holds no lock. Without the lock (``lock=False``) it is the dry run of
  the deploy runner: nothing is taken or recorded.
- ``stacks.commit`` last: records the new states, appends to the history,
  releases the lock.
- ``stacks.abort`` on failure: records the failure, releases the lock.

``stacks.status`` and ``stacks.history`` are read-only and are what salt-api
users may call besides the deploy runner (``_runners/deploy.py``, the door of
the actions); their arguments pass the same schema (``_utils/pigeon_schema.py``).

Storage: the registry and the history are in Salt's cache (``salt.cache``,
bank ``pigeon/registry`` and ``pigeon/history``); the lock is an ``flock`` on
a file in the master's cachedir (``_utils/pigeon_lock.py``), so two runs on one
master cannot both take it, and a run that dies releases it.
"""

import datetime
import logging
import os
import time

import salt.cache

log = logging.getLogger(__name__)

__virtualname__ = "stacks"
HISTORY_KEEP = 500


def __virtual__():
    return __virtualname__


# ---------------------------------------------------------------------------
# storage
def _cache():
    return salt.cache.factory(__opts__)


def _sm(name):
    return __utils__[f"pigeon_statemachine.{name}"]


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _load(app):
    entry = _cache().fetch("pigeon/registry", app)
    return entry if entry else _sm("empty")(app)


def _store(entry):
    _cache().store("pigeon/registry", entry["app"], entry)


def _lock_dir():
    return os.path.join(__opts__["cachedir"], "pigeon", "locks")


def _read_lock(app):
    """Who holds the app's deploy lock now, or None (the kernel's word: see pigeon_lock)."""
    return __utils__["pigeon_lock.holder"](_lock_dir(), app)


def _history_add(app, record):
    cache = _cache()
    items = cache.fetch("pigeon/history", app) or []
    items.append(record)
    cache.store("pigeon/history", app, items[-HISTORY_KEEP:])


def _fail(message):
    __context__["retcode"] = 1
    return {"Error": message}


# ---------------------------------------------------------------------------
# planning: the definition's expansion is _utils/pigeon_definition.py
def _definition(name):
    return __utils__[f"pigeon_definition.{name}"]


def _services(definition):
    return _definition("services")(definition)


def containers(app, version, slot, definition):
    """
    The containers of one stack: name, labels, networks and docker_config each.

    CLI Example:

    .. code-block:: bash

        salt-run stacks.containers app 1.4 a definition='{...}'
    """
    return _definition("containers")(app, version, slot, definition)


def plan(app=None, action=None, version=None, force=False, definition=None, user=None, wait=0,
         source="cli", lock=True, expect_revision=None, **kwargs):
    """
    What an action will do, checked against the registry and the state machine.
    Called by the orchestrations at render time. With ``lock`` (the default) it
    first takes the app's deploy lock for the orchestration (waiting up to
    ``wait`` seconds for another action to end), so that the plan is made on a
    registry nobody else changes; the orchestration's last step (stacks.commit
    or stacks.abort) releases it. Without ``lock`` it is a look (a dry run): no
    lock, and nothing is recorded. With ``expect_revision``, the action is refused
    when the registry's revision (its generation) is another.

    Returns the plan, or {"error": "one line"} when the action is refused (then
    no lock is held).

    CLI Example:

    .. code-block:: bash

        salt-run stacks.plan app=app action=release version=1.2 definition='{...}'
    """
    if definition is None and not lock:  # a look from the deploy runner: the master's pillar
        definition = _definitions().get(app)
    try:
        __utils__["pigeon_schema.check_app"](app)
        __utils__["pigeon_schema.check_definition"](app, definition)
    except ValueError as exc:  # pigeon_schema.Invalid
        return {"error": str(exc)}
    try:
        count, services = _services(definition)
    except (TypeError, ValueError):
        return {"error": f"broken pillar: stacks:{app}:task_definitions:count is not a number"}
    if not services or count < 1:
        return {"error": f"broken pillar: stacks:{app}:task_definitions has no service"}
    if action == "release" and not version:
        version = str(definition.get("version") or "") or None
        if not version:
            return {"error": f"no version given and no stacks:{app}:version in pillar; add --version"}
    version = str(version) if version is not None else None
    if version is not None:
        try:
            _sm("check_version")(version)
        except Exception as exc:  # pylint: disable=broad-except
            if type(exc).__name__ == "TransitionError":
                return {"error": str(exc)}
            raise
    if lock:
        held = _take_lock(app, action, version, user, wait)
        if held:
            _history_add(app, {"action": action, "version": version, "result": "refused",
                               "message": held, "user": user or "unknown", "source": source,
                               "when": _now(), "finished": _now(), "duration": 0})
            return {"error": held}
    entry = _load(app)

    def refuse(message):
        if lock:  # an action refused is recorded; a look is not
            _history_add(app, {"action": action, "version": version, "result": "refused",
                               "message": message, "user": user or "unknown", "source": source,
                               "when": _now(), "finished": _now(), "duration": 0})
            _unlock(app)
        return {"error": message}

    if expect_revision is not None and int(expect_revision) != entry["generation"]:
        return refuse(f"the registry of {app} is at revision {entry['generation']}, not "
                      f"{expect_revision}: it changed since you looked; see ./stacks.py status")
    try:
        result = _sm("plan")(entry, action, version=version, force=bool(force))
    except Exception as exc:  # pylint: disable=broad-except
        # TransitionError is defined in the utils module, loaded by Salt's loader
        if type(exc).__name__ != "TransitionError":
            if lock:
                _unlock(app)
            raise
        return refuse(str(exc))
    try:
        return _expand(app, action, version, definition, entry, result)
    except Exception:
        _unlock(app)
        raise


def _expand(app, action, version, definition, entry, result):
    """The plan with what the orchestration's steps need: targets, containers, backends."""
    expanded = _definition("expand")(app, action, version, definition, entry, result, _sm("backend"))
    if expanded.get("error"):
        _unlock(app)
    return expanded


# ---------------------------------------------------------------------------
# the steps of an orchestration
def _take_lock(app, action, version, user, wait):
    """Take the app's deploy lock for this thread; None, or why not (one line)."""
    me = {"action": action, "version": version, "user": user or "unknown",
          "since": _now(), "started": time.time()}
    taken = __utils__["pigeon_lock.acquire"](_lock_dir(), app, me, wait=wait)
    held = taken["held"]
    if held:
        doing = " ".join(str(x) for x in (held.get("action"), held.get("version")) if x)
        return (f"{app} is locked by {doing or 'an action'} of {held.get('user', 'unknown')} "
                f"since {held.get('since', '?')}; try again when it ends, or add --wait SECONDS")
    if taken["stale"]:
        # its holder died without ending its action: the kernel released the lock
        log.warning("stacks: the lock of %s was left by an action that died: %s", app, taken["stale"])
        _history_add(app, {"action": "unlock", "result": "stale lock released",
                           "lock": taken["stale"], "when": _now(), "source": "pigeon"})
    return None


def _unlock(app):
    __utils__["pigeon_lock.release"](_lock_dir(), app)


def _mine(app):
    """The lock's content when this orchestration holds the app's lock, else {}."""
    return __utils__["pigeon_lock.mine"](_lock_dir(), app) or {}


def commit(app, planned, user=None, source="cli", started=None, **kwargs):
    """
    Record a finished action: the stacks' new states and routes, a history
    entry; release the lock (last step of every action).
    """
    held = _mine(app)
    if not held:
        return _fail(f"{app}: this orchestration does not hold the lock; nothing recorded")
    entry = _load(app)
    who = held.get("user") or user or "unknown"
    if not planned.get("noop"):
        converged = planned.get("converge_loadbal") and planned["action"] == "release"
        entry = dict(_sm("apply")(entry, planned, _now(), who),
                     loadbal_hash=planned["loadbal_hash"] if converged else entry.get("loadbal_hash"))
        _store(entry)
    _history_add(app, {
        "action": planned["action"], "version": planned.get("version"), "result": "success",
        "noop": planned.get("noop", False), "message": planned.get("message"),
        "user": who, "source": source, "when": held.get("since") or _now(),
        "finished": _now(), "duration": _duration(held.get("started")),
        "states": planned.get("states"),
    })
    _unlock(app)
    return {"app": app, "version": planned.get("version"), "message": planned.get("message"),
            "noop": planned.get("noop", False), "stacks": entry["stacks"],
            "routes": entry["routes"]}


def abort(app, planned, user=None, source="cli", started=None, cleaned=None, **kwargs):
    """Record a failed action in the history and release the lock (onfail step)."""
    held = _mine(app)
    if not held:
        # refused at the lock: nothing ran, the lock is someone else's
        _history_add(app, {
            "action": planned.get("action"), "version": planned.get("version"),
            "result": "refused", "message": "locked by another action", "user": user or "unknown",
            "source": source, "when": _now(), "finished": _now(), "duration": 0})
        return {"app": app, "lock": "held by another action, left alone"}
    _history_add(app, {
        "action": planned.get("action"), "version": planned.get("version"), "result": "failed",
        "user": held.get("user") or user or "unknown", "source": source,
        "when": held.get("since") or _now(), "finished": _now(),
        "duration": _duration(held.get("started")), "cleaned": cleaned,
    })
    _unlock(app)
    return {"app": app, "lock": "released"}


def _duration(started):
    """Seconds since ``started`` (epoch seconds), or None."""
    try:
        return round(time.time() - float(started), 3)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------
# read-only views
def _definitions():
    """The stacks: pillar as the master's orchestrations see it."""
    import salt.pillar  # pylint: disable=import-outside-toplevel

    pillar = salt.pillar.get_pillar(__opts__, {}, __opts__["id"] + "_master",
                                    saltenv="base").compile_pillar()
    return pillar.get("stacks") or {}


def _ask(tgt, tgt_type, fun, timeout=10, **kwarg):
    """Call an execution function on minions: {minion: return}. Missing minions are absent."""
    import salt.client  # pylint: disable=import-outside-toplevel

    with salt.client.get_local_client(mopts=__opts__) as client:
        return client.cmd(tgt, fun, kwarg=kwarg, tgt_type=tgt_type, timeout=timeout) or {}


def _observe(app, definition, entry):
    """What really runs for one app, and where it differs from the registry (drift)."""
    observed = {"containers": {}, "routes": None, "drift": []}
    drift = observed["drift"]
    config, loadbal = definition.get("config") or {}, definition.get("loadbal") or {}
    found = _ask(config.get("target"), config.get("target_type", "glob"), "docker.ps",
                 all=True, filters={"label": [f"pigeon.app={app}"]})
    if not found:
        drift.append(f"no answer from {config.get('target')}: containers unknown")
    for minion, containers in found.items():
        if not isinstance(containers, dict):
            drift.append(f"{minion}: docker.ps failed: {str(containers)[:120]}")
            continue
        for info in containers.values():
            labels = info.get("Labels") or {}
            version = labels.get("pigeon.version", "?")
            text = str(info.get("Status", ""))
            seen = observed["containers"].setdefault(version, {"total": 0, "running": 0, "healthy": 0,
                                                               "minions": []})
            seen["total"] += 1
            seen["running"] += text.startswith("Up")
            seen["healthy"] += text.startswith("Up") and "unhealthy" not in text and "starting" not in text
            if minion not in seen["minions"]:
                seen["minions"].append(minion)
    count, services = _services(definition) if definition else (0, {})
    expected = count * len(services)
    for version in entry["stacks"]:
        seen = observed["containers"].get(version, {"total": 0, "healthy": 0})
        if found and seen["total"] < expected:
            drift.append(f"{app} {version}: {expected - seen['total']} of {expected} containers missing")
        elif found and seen["healthy"] < seen["total"]:
            drift.append(f"{app} {version}: {seen['total'] - seen['healthy']} containers not healthy")
    for version in observed["containers"]:
        if version not in entry["stacks"]:
            drift.append(f"{app} {version}: containers that the registry does not know (left by an "
                         f"interrupted action); the next release removes them, or run: stacks.py "
                         f"deactivate --app-name {app} --version {version}")
    maps = _ask(loadbal.get("target"), loadbal.get("target_type", "glob"), "haproxy_runtime.show_map")
    for minion, routes_ in maps.items():
        if not isinstance(routes_, dict):
            drift.append(f"{minion}: cannot read HAProxy's routes: {str(routes_)[:120]}")
            continue
        mine = {k: v for k, v in routes_.items() if k.startswith(f"{app}/")}
        observed["routes"] = mine
        for key, want in entry["routes"].items():
            if mine.get(key) != want:
                drift.append(f"{minion}: route {key} goes to {mine.get(key) or 'no stack (503)'}, "
                             f"the registry says {want or 'no stack (503)'}")
    return observed


def _door(kind, args, kwargs):
    """The request's values checked by the schema (pigeon_schema), or {"refused": one line}."""
    if args:
        return None, _refuse(f"{kind}: positional arguments are not accepted; name each (app=...)")
    try:
        return __utils__["pigeon_schema.check"](
            kind, __utils__["pigeon_schema.outside_kwargs"](kwargs)), None
    except ValueError as exc:  # pigeon_schema.Invalid
        return None, _refuse(str(exc))


def _refuse(message):
    __context__["retcode"] = 1
    return {"refused": message}


def status(*args, **kwargs):
    """
    The registry: per app, each stack's version, state, slot, since when and by whom,
    the routes, the lock if one is held; with ``observe`` (the default) also what
    really runs (containers per version: total, running, healthy, minions; HAProxy's
    routes) and the drift between the two.

    CLI Example:

    .. code-block:: bash

        salt-run stacks.status app=app
    """
    values, refused = _door("status", args, kwargs)
    if refused:
        return refused
    app, observe = values.get("app"), values.get("observe", True)
    cache = _cache()
    definitions = _definitions() if observe else {}
    apps = [app] if app else sorted(set(cache.list("pigeon/registry") or []) | set(definitions))
    result = {}
    for name in apps:
        entry = _load(name)
        lock_ = _read_lock(name)
        result[name] = {
            "stacks": entry["stacks"], "routes": entry["routes"],
            "generation": entry["generation"],  # the registry's revision (--expect-revision)
            "lock": {k: v for k, v in lock_.items() if k != "fd"} if lock_ else None,
        }
        if observe and name in definitions:
            result[name]["observed"] = _observe(name, definitions[name], entry)
        elif observe:
            result[name]["observed"] = {"containers": {}, "routes": None,
                                        "drift": [f"no stacks:{name} in pillar"]}
    return result


def history(*args, **kwargs):
    """
    The last ``limit`` actions on an app, newest last.

    CLI Example:

    .. code-block:: bash

        salt-run stacks.history app=app limit=50
    """
    values, refused = _door("history", args, kwargs)
    if refused:
        return refused
    limit = values.get("limit", 20)
    items = _cache().fetch("pigeon/history", values["app"]) or []
    return items[-limit:] if limit else items


def routes(**kwargs):
    """Every app's routes, as the registry has them ({app/production: backend})."""
    cache = _cache()
    result = {}
    for name in cache.list("pigeon/registry") or []:
        result.update({k: v for k, v in _load(name)["routes"].items() if v})
    return result
