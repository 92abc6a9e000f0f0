"""
Runner ``stacks``: the registry's views, read-only. ``status`` (per app, each
stack's version, state and slot, the routes, the lock, and what really runs
with the drift from the registry), ``history``, ``details`` (each container as
docker has it on the app's minions), ``logs`` (their last lines, or HAProxy's
access log of the app's slots) and ``proxy``
(HAProxy's counters and servers of the app's slots) are what
salt-api's deploy user may call besides the deploy runner (``_runners/deploy.py``, the door of
the actions); their arguments pass the same schema (``_utils/pigeon_schema.py``).
``routes`` is every app's routes, for an operator on the master.

The registry itself (storage, history, lock) is ``_utils/pigeon_registry.py``;
the actions that change it are ``_utils/pigeon_plan.py``, run by the deploy runner.

CLI Example:

.. code-block:: bash

    salt-run stacks.status app=app
"""

import difflib
import logging
import re

log = logging.getLogger(__name__)

__virtualname__ = "stacks"


def __virtual__():
    return __virtualname__


def _registry(name):
    return __utils__[f"pigeon_registry.{name}"]


def _ask(tgt, tgt_type, fun, timeout=10, **kwarg):
    """Call an execution function on minions: {minion: return}. Missing minions are absent."""
    return __utils__["pigeon_minions.ask"](tgt, tgt_type, fun, timeout=timeout, **kwarg)


def _silent(tgt, tgt_type, answered):
    """The minions ``tgt`` matches that are not in ``answered``: down, or too slow to answer."""
    try:
        return [m for m in __utils__["pigeon_minions.expected"](tgt, tgt_type) if m not in answered]
    except Exception:  # pylint: disable=broad-except
        return []  # the master cannot tell: say nothing rather than something false


UPTIME_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800, "month": 2592000}


def _uptime(status):
    """Seconds a container has run, from docker's status text ("Up 5 seconds (health: starting)",
    "Up About a minute", "Up Less than a second"); None when the text says no such thing."""
    match = re.match(r"Up (Less than a second|About an? (\w+?)|(\d+) (\w+?))s?\b", status)
    if not match:
        return None
    if match.group(1) == "Less than a second":
        return 0
    unit = match.group(2) or match.group(4)
    return int(match.group(3) or 1) * UPTIME_UNITS.get(unit, 0)


def _observe(app, definition, entry, lock_=None):
    """What really runs for one app, and where it differs from the registry (drift). The
    containers of the version an action holding the lock is working on are not drift."""
    observed = {"containers": {}, "routes": None, "balancers": {}, "drift": []}
    drift = observed["drift"]
    config, loadbal = definition.get("config") or {}, definition.get("loadbal") or {}
    interval = __utils__["pigeon_definition.health_interval"](definition) if definition else 30
    found = _ask(config.get("target"), config.get("target_type", "glob"), "docker.ps",
                 all=True, filters={"label": [f"pigeon.app={app}"]})
    if not found:
        drift.append(f"no answer from {config.get('target')}: containers unknown")
    else:
        for minion in _silent(config.get("target"), config.get("target_type", "glob"), found):
            drift.append(f"{minion}: no answer: its containers are unknown (is its salt-minion running?)")
    for minion, containers in found.items():
        if not isinstance(containers, dict):
            drift.append(f"{minion}: docker.ps failed: {str(containers)[:120]}")
            continue
        for info in containers.values():
            labels = info.get("Labels") or {}
            version = labels.get("pigeon.version", "?")
            text = str(info.get("Status", ""))
            seen = observed["containers"].setdefault(version, {"total": 0, "running": 0, "healthy": 0,
                                                               "starting": 0, "minions": [], "not_healthy": []})
            # docker checks a running stack every config:health_interval (30 s): a container
            # it has not checked yet is "starting", which is not drift (docker marks it
            # unhealthy if its checks fail), unless it has been so for far longer than that
            unchecked = text.startswith("Up") and "health: starting" in text
            starting = unchecked and (_uptime(text) or 0) <= 2 * interval + 60
            healthy = text.startswith("Up") and "unhealthy" not in text and not unchecked
            seen["total"] += 1
            seen["running"] += text.startswith("Up")
            seen["healthy"] += healthy
            seen["starting"] += starting
            if not healthy and not starting:
                name = ((info.get("Names") or ["?"])[0]).lstrip("/")
                seen["not_healthy"].append(f"{name} on {minion} ({text or 'no status'})")
            if minion not in seen["minions"]:
                seen["minions"].append(minion)
    count, services = __utils__["pigeon_definition.services"](definition) if definition else (0, {})
    expected = count * len(services)
    for version in entry["stacks"]:
        seen = observed["containers"].get(version, {"total": 0, "healthy": 0})
        if found and seen["total"] < expected:
            drift.append(f"{app} {version}: {expected - seen['total']} of {expected} containers missing")
        elif found and seen["healthy"] + seen.get("starting", 0) < seen["total"]:
            names = seen["not_healthy"]
            drift.append(f"{app} {version}: {len(names)} of {seen['total']} containers not healthy: "
                         + ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
                         + f"; see docker logs on the minion, or stacks.py deactivate --app-name {app} "
                           f"--version {version}")
    working_on = (lock_ or {}).get("version")
    for version in observed["containers"]:
        if version == working_on and version not in entry["stacks"]:
            observed["in_progress"] = version  # the action holding the lock is starting them
        elif version not in entry["stacks"]:
            drift.append(f"{app} {version}: containers that the registry does not know (left by an "
                         f"interrupted action, or a failed release kept with --keep-failed); the next "
                         f"release removes them, or run: stacks.py deactivate --app-name {app} "
                         f"--version {version}")
    maps = _ask(loadbal.get("target"), loadbal.get("target_type", "glob"), "haproxy_runtime.show_map")
    for minion, routes_ in maps.items():
        if not isinstance(routes_, dict):
            drift.append(f"{minion}: cannot read HAProxy's routes: {str(routes_)[:120]}")
            continue
        mine = {k: v for k, v in routes_.items() if k.startswith(f"{app}/")}
        observed["routes"] = mine
        observed["balancers"][minion] = mine
        for key, want in entry["routes"].items():
            if mine.get(key) != want:
                drift.append(f"{minion}: route {key} goes to {mine.get(key) or 'no stack (503)'}, "
                             f"the registry says {want or 'no stack (503)'}")
    for minion in _silent(loadbal.get("target"), loadbal.get("target_type", "glob"), maps):
        drift.append(f"{minion}: no answer: its routes are unknown (is its salt-minion running?)")
    drift.extend(_disagreements(app, observed["balancers"], bool(entry["stacks"])))
    return observed


def _disagreements(app, balancers, has_stacks):
    """One drift line per route key that the load balancers do not all send to the same
    backend ({minion: {key: backend}}); none with fewer than two. The cure: a repair sets the
    registry's routes on every one; with no stack to repair, each one's haproxy state (its
    routes.map is rendered from the registry, and applied at runtime when it changes)."""
    lines = []
    if len(balancers) < 2:
        return lines
    cure = (f"run ./stacks.py repair --app-name {app}" if has_stacks else
            "apply the haproxy state on the load balancers (salt <minion> state.apply haproxy)")
    for key in sorted({key for routes_ in balancers.values() for key in routes_}):
        seen = {minion: routes_.get(key) for minion, routes_ in balancers.items()}
        if len(set(seen.values())) > 1:
            lines.append(f"the load balancers disagree on {key}: "
                         + ", ".join(f"{minion} -> {value or 'no stack (503)'}" for minion, value in sorted(seen.items()))
                         + f"; {cure}")
    return lines


def _door(kind, args, kwargs):
    """The request's values checked by the schema (pigeon_schema), or {"refused": one line}."""
    if args:
        return None, _refuse(f"{kind}: positional arguments are not accepted; name each (app=...)")
    try:
        return __utils__["pigeon_schema.check"](
            kind, __utils__["pigeon_schema.outside_kwargs"](kwargs)), None
    except ValueError as exc:  # pigeon_schema.Invalid
        return None, _refuse(str(exc))


def _app_view(kind, args, kwargs):
    """The door of a view of one app: (values, the pillar's definitions, None), or (None, None,
    {"refused": one line}) when the request fails the schema or names no app."""
    values, refused = _door(kind, args, kwargs)
    if refused:
        return None, None, refused
    definitions = _registry("definitions")()
    unknown = _unknown(values["app"], definitions)
    if unknown:
        return None, None, _refuse(unknown)
    return values, definitions, None


def _unknown(app, definitions):
    """Why ``app`` is no app (neither in the stacks: pillar nor in the registry), or None."""
    known = set(definitions) | set(_registry("apps")())
    if app in known:
        return None
    close = difflib.get_close_matches(app, sorted(known), n=1)
    return (f"unknown app {app!r}: no stacks:{app} in the master's pillar and nothing in the registry"
            + (f"; did you mean {close[0]}?" if close else f"; known apps: {', '.join(sorted(known)) or 'none'}"))


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
    definitions = _registry("definitions")() if observe else {}
    if app and observe:
        unknown = _unknown(app, definitions)
        if unknown:
            return _refuse(unknown)
    apps = [app] if app else sorted(set(_registry("apps")()) | set(definitions))
    result = {}
    for name in apps:
        entry = _registry("load")(name)
        lock_ = _registry("holder")(name)
        result[name] = {
            "stacks": entry["stacks"], "routes": entry["routes"],
            # a canary's share of production, a maintenance's message (deploy.canary, deploy.maintenance)
            "traffic": entry.get("traffic") or {},
            "bake": entry.get("bake"),  # the last bake window of an activate (deploy._baked)
            "generation": entry["generation"],  # the registry's revision (--expect-revision)
            "lock": {k: v for k, v in lock_.items() if k != "fd"} if lock_ else None,
        }
        if observe and name in definitions:
            result[name]["observed"] = _observe(name, definitions[name], entry, lock_)
        elif observe:
            result[name]["observed"] = {"containers": {}, "routes": None, "balancers": {},
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
    unknown = _unknown(values["app"], _registry("definitions")())
    if unknown:
        return _refuse(unknown)
    return _registry("history")(values["app"], values.get("limit", 20))


def _config_minions(name, definition, fun, section="config", **kwarg):
    """Call ``fun`` on the minions of app ``name`` (``stacks:<name>:config:target`` of its
    ``definition``, or ``loadbal:target`` with section="loadbal"): (answers, problems),
    ``answers`` {minion: return}, ``problems`` one line per minion that failed or did not answer."""
    config = definition.get(section) or {}
    if not config.get("target"):  # in the registry, gone from the pillar: no minions to ask
        return {}, [f"no stacks:{name}:{section}:target in the master's pillar: its minions are unknown"]
    answers = _ask(config.get("target"), config.get("target_type", "glob"), fun, timeout=30, **kwarg)
    problems = [f"{minion}: " + ("did not answer within 30 s" if ret is False or not str(ret)
                                 else str(ret).splitlines()[0][:200])
                for minion, ret in answers.items() if not isinstance(ret, (list, dict))]
    if not answers:
        problems.append(f"no answer from {config.get('target')}")
    return {m: r for m, r in answers.items() if isinstance(r, (list, dict))}, problems


def details(*args, **kwargs):
    """
    The app's containers as docker has them on every minion of ``config.target`` (one
    version's, or all): {"containers": [{minion, name, version, slot, service, replica, image,
    state, status, health, created, ports}], "problems": [one line per minion that failed]}.

    CLI Example:

    .. code-block:: bash

        salt-run stacks.details app=app version=1.4
    """
    values, definitions, refused = _app_view("details", args, kwargs)
    if refused:
        return refused
    app = values["app"]
    answers, problems = _config_minions(app, definitions.get(app) or {}, "stack_containers.details",
                                        app=app, version=values.get("version"))
    containers = [dict(c, minion=minion) for minion, found in sorted(answers.items()) for c in found]
    return {"containers": containers, "problems": problems}


def logs(*args, **kwargs):
    """
    The last ``tail`` lines (default 100) of the app's containers on every minion of
    ``config.target`` (one version's, one service's, or all), time-stamped by docker:
    {"logs": {minion: {container: text}}, "problems": [one line per minion that failed]}.
    With ``proxy``, HAProxy's access log of the app's slots instead (one version's slot, or
    all; see _proxy_log): {"proxy": {minion: [line]}, "problems": [...]}.

    CLI Example:

    .. code-block:: bash

        salt-run stacks.logs app=app version=1.4 service=web tail=20
        salt-run stacks.logs app=app proxy=True tail=20
    """
    values, definitions, refused = _app_view("logs", args, kwargs)
    if refused:
        return refused
    app = values["app"]
    if values.get("proxy"):
        return _proxy_log(app, values, definitions.get(app) or {})
    answers, problems = _config_minions(app, definitions.get(app) or {}, "stack_containers.logs", app=app,
                                        version=values.get("version"), service=values.get("service"),
                                        tail=values.get("tail", 100))
    return {"logs": answers, "problems": problems}


def _proxy_log(app, values, definition):
    """stacks.logs with proxy: the last ``tail`` requests HAProxy logged for the app's slot
    backends on every minion of ``loadbal.target``, oldest first (haproxy_runtime.access_log).
    With ``version``, its slot's backend only (a slot is reused: older lines of that backend
    may be of a version that was there before); ``service`` is refused, as HAProxy has one
    backend per slot, not per service."""
    if values.get("service"):
        return _refuse("logs: service does not apply with proxy: HAProxy has one backend per slot, not per "
                       "service; give version for one stack's requests")
    backend = __utils__["pigeon_statemachine.backend"]
    version = values.get("version")
    if version:
        slot = (_registry("load")(app)["stacks"].get(version) or {}).get("slot")
        if not slot:
            return _refuse(f"logs: {app} has no stack {version}, so no slot in HAProxy; see stacks.py "
                           f"status --app-name {app}")
        backends = [backend(app, slot)]
    else:
        backends = [backend(app, slot) for slot in __utils__["pigeon_statemachine.slots"]()]
    answers, problems = _config_minions(app, definition, "haproxy_runtime.access_log", section="loadbal",
                                        backends=backends, tail=values.get("tail", 100),
                                        **({} if version else {"app": app}))  # and its 503s of no stack
    return {"proxy": answers, "problems": problems}


def proxy(*args, **kwargs):
    """
    What HAProxy says of the app on every minion of ``loadbal.target``: per load balancer,
    per slot, the backend's counters (sessions, responses by class, errors, retries) and
    its servers (address, UP/DOWN, last check), with the version the registry has in that
    slot and its state; and the routes HAProxy uses. {"slots": {slot: {backend, version,
    state}}, "balancers": {minion: {"backends": {backend: {counters, servers}}, "routes":
    {key: backend}}}, "problems": [one line per minion that failed]}.

    CLI Example:

    .. code-block:: bash

        salt-run stacks.proxy app=app
    """
    values, definitions, refused = _app_view("proxy", args, kwargs)
    if refused:
        return refused
    app = values["app"]
    entry = _registry("load")(app)
    in_slot = {stack.get("slot"): (version, stack.get("state")) for version, stack in entry["stacks"].items()}
    backend = __utils__["pigeon_statemachine.backend"]
    slots = {slot: {"backend": backend(app, slot), "version": in_slot.get(slot, (None, None))[0],
                    "state": in_slot.get(slot, (None, None))[1]}
             for slot in __utils__["pigeon_statemachine.slots"]()}
    loadbal = (definitions.get(app) or {}).get("loadbal") or {}
    target, tgt_type = loadbal.get("target"), loadbal.get("target_type", "glob")
    if not target:  # in the registry, gone from the pillar
        return {"slots": slots, "balancers": {}, "problems": [
            f"no stacks:{app}:loadbal:target in the master's pillar: its load balancers are unknown"]}
    stats = _ask(target, tgt_type, "haproxy_runtime.stats", backends=[s["backend"] for s in slots.values()])
    maps = _ask(target, tgt_type, "haproxy_runtime.show_map")
    balancers, problems = {}, []
    for minion, found in sorted(stats.items()):
        if not isinstance(found, dict):
            problems.append(f"{minion}: {str(found).splitlines()[0][:200] if str(found) else 'no answer'}")
            continue
        routes_ = maps.get(minion)
        balancers[minion] = {"backends": found, "routes": {k: v for k, v in routes_.items() if k.startswith(
            f"{app}/")} if isinstance(routes_, dict) else None}
    if not stats:
        problems.append(f"no answer from {target}")
    return {"slots": slots, "balancers": balancers, "problems": problems}


def routes(**kwargs):
    """
    Every app's routes, as the registry has them ({app/production: backend}).

    CLI Example:

    .. code-block:: bash

        salt-run stacks.routes
    """
    result = {}
    for name in _registry("apps")():
        result.update({k: v for k, v in _registry("load")(name)["routes"].items() if v})
    return result
