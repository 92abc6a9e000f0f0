"""
Runner ``deploy``: the door of every deployment. salt-api's deploy user may
call these functions and nothing else that acts (see the master's
``external_auth`` in ``bootstrap/salt-master.conf``); ``stacks.py`` calls
them, and so does the reactor for CI events (``deploy.ci_event``).

Each function checks what it was given against the declared schema
(``_utils/pigeon_schema.py``): exact keys, types, patterns, bounds; no
positional arguments. A refused request returns ``{"refused": "one line"}``
with retcode 1 and changes nothing. An accepted one is carried out here
(``_run``): the app's deploy lock, the plan (``_utils/pigeon_plan.py``), its
steps (``orch/<action>.sls``, given the plan as pillar ``pigeon_plan``), the
record of its end, the lock released; it returns ``{"outcome": ...}`` in the
shape of ``_utils/pigeon_outcome.py`` (retcode 1 when not ok). With
``dry_run``, the plan it would make (``{"dry_run": plan}``) without running it.
Nothing the sender chose reaches the orchestration but the plan made from
the checked values: not ``test``, ``exclude``, ``saltenv``, ``pillar_enc``,
nor another SLS.

CLI Example:

.. code-block:: bash

    salt-run deploy.release app=app version=1.4
"""

import difflib
import logging
import time

log = logging.getLogger(__name__)

__virtualname__ = "deploy"
OUTCOME_TAG = "pigeon/deploy"


def __virtual__():
    return __virtualname__


def _refuse(message):
    __context__["retcode"] = 1
    return {"refused": message}


def _checked(kind, args, kwargs):
    """(values, None) when the request passes the schema, else (None, one line)."""
    if args:
        return None, f"{kind}: positional arguments are not accepted; name each (app=..., version=...)"
    try:
        values = __utils__["pigeon_schema.check"](kind, __utils__["pigeon_schema.outside_kwargs"](kwargs))
    except ValueError as exc:  # pigeon_schema.Invalid
        return None, str(exc)
    return values, None


def _user():
    return str(globals().get("__user__") or "unknown")


def _utils(name):
    return __utils__[name]


def _action(action, args, kwargs):
    values, refusal = _checked(action, args, kwargs)
    if refusal:
        log.warning("deploy: %s refused: %s", action, refusal)
        return _refuse(refusal)
    if values.pop("dry_run", False):
        return _dry_run(action, values)
    outcome = _run(action, values, "cli")
    if not outcome["ok"]:
        __context__["retcode"] = 1
    # on the master's bus as a CI event's is (reactor/notify.sls posts it to a chat)
    try:
        _fire(outcome, f"{OUTCOME_TAG}/{values['app']}/{action}")
    except Exception:  # pylint: disable=broad-except  (a courtesy: the outcome is returned anyway)
        log.debug("deploy: could not publish the outcome of %s", action, exc_info=True)
    return {"outcome": outcome}


def _run(action, values, source, user=None):
    """
    Carry out an action: take the app's deploy lock (waiting ``wait`` seconds), make the
    plan on the registry it now holds, run the plan's steps (orch/<action>.sls, the plan as
    pillar ``pigeon_plan``), record the end (commit or abort), release the lock. Returns the
    outcome (``pigeon_outcome``). A process that dies on the way holds no lock: the kernel
    releases it (``pigeon_lock``).
    """
    app, version, user = values["app"], values.get("version"), user or _user()
    since = time.monotonic()  # a cancel asked after this stops the action (deploy.cancel)
    request = {"action": action, "app": app, "version": version}
    definitions = _utils("pigeon_registry.definitions")()
    definition = definitions.get(app)
    checked, refusal = _utils("pigeon_plan.check")(app, action, version, definition, known=list(definitions))
    if refusal:  # an unknown app or a broken pillar: no lock taken, nothing recorded
        return _utils("pigeon_outcome.refused")(request, refusal)
    request["version"] = checked
    # a webhook cannot wait for the lock: it is told to send again
    hint = {"hint": "send the request again when it ends"} if source == "reactor" else {}
    if values.get("wait") and source != "reactor":
        _announce_wait(app, values["wait"])
    # the runner job's id, for cancel of one job and for watch (the reactor's threads share one)
    job = globals().get("__jid__") if source != "reactor" else None
    held, refusal = _utils("pigeon_registry.lock")(app, action, checked, user, values.get("wait", 0), job=job,
                                                   **hint)
    if refusal:
        _utils("pigeon_plan.refused")(app, action, checked, refusal, user=user, source=source, job=job)
        return _utils("pigeon_outcome.refused")(request, refusal)
    planned = request
    try:
        if values.get("wait"):  # it may have waited: plan on the pillar as it is now
            definitions = _utils("pigeon_registry.definitions")()
            definition = definitions.get(app)
        planned = _utils("pigeon_plan.make")(
            app, action, version=version, force=values.get("force", False), definition=definition,
            expect_revision=values.get("expect_revision"), keep_failed=values.get("keep_failed", False),
            others=definitions, asked=_asked(values))
        if planned.get("error"):
            _utils("pigeon_plan.refused")(app, action, checked, planned["error"], user=user, source=source, job=job)
            return _utils("pigeon_outcome.refused")(request, planned["error"])
        outcome = _utils("pigeon_outcome.nothing_ran")(planned)
        if planned["steps"]:
            if source != "reactor":  # the reactor's threads share this module's __jid__: no progress
                _announce(planned)
            ret = _utils("pigeon_orchestrate.run")(action, planned, jid=job, user=globals().get("__user__"),
                                                   stop=_stop(app, since, job))
            outcome = _utils("pigeon_outcome.build")(planned, ret)
        if outcome["ok"]:
            outcome["changed"] = _utils("pigeon_plan.commit")(app, planned, held, source=source)
            outcome["revision"] = outcome["changed"]["revision"]
            outcome["version"] = planned.get("version")
            bake = _utils("pigeon_bake.limits")(definition, values.get("bake"))
            if action == "activate" and planned["steps"] and bake["seconds"] > 0:
                outcome = _baked(app, planned, definitions, bake, outcome, held, source, job, since)
            after = (definition.get("prune") or {}) if isinstance(definition, dict) else {}
            if action == "deactivate" and planned["steps"] and after.get("after_deactivate"):
                outcome["changed"]["pruned"] = _prune_after(app, dict(definitions, **{app: definition}), user,
                                                            after.get("keep_last", 3), held, source)
        else:
            _utils("pigeon_plan.abort")(app, planned, held, outcome, source=source)
        return outcome
    except Exception as exc:  # pylint: disable=broad-except
        # recorded and told in one line; the traceback goes to the master's log
        log.exception("deploy: %s of %s failed on the master", action, app)
        outcome = _utils("pigeon_outcome.failed")(
            planned if planned.get("action") else request,
            f"the action failed on the master: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            "; see the master's log, then ./stacks.py status")
        try:
            _utils("pigeon_plan.abort")(app, planned, held, outcome, source=source)
        except Exception:  # pylint: disable=broad-except
            log.exception("deploy: could not record the failure of %s of %s", action, app)
        return outcome
    finally:
        _utils("pigeon_registry.unlock")(app)


def _baked(app, planned, definitions, limit, outcome, held, source, job, since):
    """The bake window of an activate that succeeded (``limit``: pigeon_bake.limits): HAProxy's
    counters of the new slot watched on every load balancer for ``limit["seconds"]``; when one
    crosses a limit, production goes back to the stack it came from (a rollback, under the
    lock this action holds) and the outcome fails with the figure. Returns the outcome, with
    ``bake``: {result, seconds, breach, rolled_back_to, and what was counted}. An error while
    watching fails the outcome and changes nothing: the activate stays recorded and live."""
    try:
        return _bake(app, planned, definitions, limit, outcome, held, source, job, since)
    except Exception as exc:  # pylint: disable=broad-except
        log.exception("deploy: the bake of %s %s failed", app, planned["version"])
        outcome["bake"] = {"result": "error", "seconds": 0, "breach": None, "rolled_back_to": None,
                           "why": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"}
        outcome["ok"] = False
        outcome["error"] = (f"the bake of {app} {planned['version']} could not watch its slot "
                            f"({outcome['bake']['why']}); production stays on {planned['version']}: check it, "
                            f"then ./stacks.py rollback --app-name {app} if needed")
        return outcome


def _bake(app, planned, definitions, limit, outcome, held, source, job, since):
    bake = {name: _utils(f"pigeon_bake.{name}") for name in ("counts", "since", "judge", "figures")}
    old = next((v for v, state in planned["states"].items() if state == "inactive"), None)
    if not old:
        outcome["bake"] = {"result": "skipped", "seconds": 0, "breach": None, "rolled_back_to": None,
                           "why": "no stack to roll back to (the first activate)"}
        return outcome
    new_backend, old_backend = planned["gate"]["backend"], planned["routes_before"][f"{app}/production"]
    lb = planned["loadbal"]

    def look():
        return _utils("pigeon_minions.ask")(lb["target"], lb["target_type"], "haproxy_runtime.stats", timeout=10,
                                            backends=[new_backend, old_backend])

    first = look()
    baseline = bake["counts"](first, new_backend)
    old_rtime = max([c["rtime"] for c in bake["counts"](first, old_backend).values()] or [0])
    answered = set(baseline)
    if source != "reactor":
        _tell({"bake": limit["seconds"], "version": planned["version"]}, "baking")
    began, total, breach, cancelled = time.monotonic(), bake["since"](baseline, {}), None, None
    stop = _stop(app, since, job)
    while time.monotonic() - began < limit["seconds"]:
        time.sleep(min(limit["every"], max(0.0, limit["seconds"] - (time.monotonic() - began))))
        now = bake["counts"](look(), new_backend)
        answered |= set(now)
        total = bake["since"](baseline, now)
        breach = bake["judge"](total, old_rtime, limit)
        cancelled = stop()
        if breach or cancelled:
            break
    watched = round(time.monotonic() - began, 1)
    missing = sorted(set(lb.get("balancers") or []) - answered)
    seen = dict(bake["figures"](total, missing), seconds=watched, breach=breach, rolled_back_to=None)
    if not breach:
        outcome["bake"] = dict(seen, result="cancelled" if cancelled else "unobserved" if missing else "passed")
        _utils("pigeon_plan.note_bake")(app, planned["version"], outcome["bake"])
        if missing and not cancelled:
            outcome["ok"] = False
            outcome["error"] = (f"the bake of {app} {planned['version']} could not read the counters of "
                                f"{', '.join(missing)} for {watched} s; production stays on {planned['version']}: "
                                f"check {'them' if len(missing) > 1 else 'it'}, then ./stacks.py rollback "
                                f"--app-name {app} if needed")
        return outcome
    log.warning("deploy: bake of %s %s failed after %ss: %s; rolling back", app, planned["version"], watched, breach)
    back = _utils("pigeon_plan.make")(app, "rollback", definition=definitions.get(app), others=definitions)
    failed = f"bake of {app} {planned['version']} failed after {watched} s: {breach}"
    if back.get("error"):
        rolled = {"ok": False, "error": back["error"]}
    else:
        back["message"] = f"{failed}: {back['message']}"
        ret = _utils("pigeon_orchestrate.run")("rollback", back, jid=job, user=globals().get("__user__"),
                                              stop=lambda: None)
        rolled = _utils("pigeon_outcome.build")(back, ret)
        if rolled["ok"]:
            # what the registry says now: production back on the old stack, the next revision
            outcome["changed"] = _utils("pigeon_plan.commit")(app, back, held, source="bake")
            outcome["revision"] = outcome["changed"]["revision"]
        else:
            _utils("pigeon_plan.abort")(app, back, held, rolled, source="bake")
    seen["rolled_back_to"] = old if rolled["ok"] else None
    outcome["bake"] = dict(seen, result="failed")
    _utils("pigeon_plan.note_bake")(app, planned["version"], outcome["bake"])
    outcome["ok"] = False
    outcome["error"] = (f"{failed}; production rolled back to {old}" if rolled["ok"] else
                        f"{failed}; the rollback to {old} failed: {rolled.get('error')}; run ./stacks.py rollback "
                        f"--app-name {app}")
    return outcome


def _asked(values):
    """What a traffic action asks, from its checked values: canary {percent}, maintenance
    {enable, message, retry_after}."""
    return {k: values[k] for k in ("percent", "enable", "message", "retry_after") if k in values}


def _prune_after(app, definitions, user, keep_last, held, source):
    """The prune a deactivate runs when the pillar asks (stacks:<app>:prune:after_deactivate),
    under the lock it holds: prune's return, or {"errors": [why not]}. A failed prune does
    not fail the deactivate, which is done."""
    try:
        done = _pruned(app, definitions, user, keep_last, False, held, source)
    except Exception as exc:  # pylint: disable=broad-except
        log.exception("deploy: the prune after the deactivate of %s failed", app)
        done = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; see the master's log"
    return {"errors": [done]} if isinstance(done, str) else done


def _stop(app, since, job):
    """stop() for the orchestration: why the action must stop before its next cancellable step
    (a cancel asked since it began), or None. The registry's function is looked up here: the
    orchestration calls stop() inside the state system's loader, where this module's
    ``__utils__`` cannot be reached."""
    cancelled = _utils("pigeon_registry.cancelled")

    def stop():
        asked = cancelled(app, since, job)
        return f"cancelled by {asked.get('user') or 'unknown'} at {asked.get('when') or '?'}" if asked else None

    return stop


def _announce(planned):
    """Tell the client which state is which step before they run (event salt/run/<jid>/steps):
    the progress events of the orchestration name states, the client shows steps."""
    _tell({"steps": {s["id"]: s["step"] for s in planned["steps"]}}, "steps")


def _announce_wait(app, wait):
    """Tell the client that the action waits for another's lock, and whose (event
    salt/run/<jid>/waiting: the holder's action, version, user, since; the wait in seconds)."""
    try:
        held = _utils("pigeon_registry.holder")(app)
    except Exception:  # pylint: disable=broad-except  (a courtesy: the lock itself says the rest)
        log.debug("deploy: could not read the lock of %s", app, exc_info=True)
        return
    if held:
        _tell({"holder": {k: held.get(k) for k in ("action", "version", "user", "since")}, "wait": wait},
              "waiting")


def _tell(data, suffix):
    """An event of this runner job (salt/run/<jid>/<suffix>) for the client that follows it."""
    event = globals().get("__jid_event__")
    if event is None:
        return
    try:
        event.fire_event(data, suffix)
    except Exception:  # pylint: disable=broad-except
        log.debug("deploy: could not tell the client %s", suffix, exc_info=True)


def _dry_run(action, values):
    """What the action would do: the plan its orchestration would make, from the same planning
    code (pigeon_plan.make) on the registry as it is, without the lock; nothing is changed or
    recorded. {"dry_run": plan}, or {"refused": the line the action would give}."""
    definitions = _utils("pigeon_registry.definitions")()
    planned = _utils("pigeon_plan.make")(
        values["app"], action, version=values.get("version"), force=values.get("force", False),
        definition=definitions.get(values["app"]), known=list(definitions), others=definitions,
        expect_revision=values.get("expect_revision"), keep_failed=values.get("keep_failed", False),
        asked=_asked(values))
    if planned.get("error"):
        return _refuse(planned["error"])
    return {"dry_run": planned}


def cancel(*args, **kwargs):
    """
    Stop the actions of an app (or only the one of runner job ``job``): those that wait for
    its deploy lock (``--wait``) end refused, nothing of them ran; the one that holds the lock
    stops before its next step up to its routes (a release's cleanup then removes what it
    started), and runs on to its end once production or preview moved (its routes step ran).
    The history says who cancelled them. Keys: app, job.
    Returns {"cancel": {"app", "holder": what holds the lock now, or None}}.

    CLI Example:

    .. code-block:: bash

        salt-run deploy.cancel app=app
    """
    values, refusal = _checked("cancel", args, kwargs)
    if refusal:
        return _refuse(refusal)
    app = values["app"]
    definitions = _utils("pigeon_registry.definitions")()
    if app not in definitions and app not in _utils("pigeon_registry.apps")():
        close = difflib.get_close_matches(app, sorted(definitions), n=1)
        return _refuse(f"unknown app {app!r}: no stacks:{app} in the master's pillar"
                       + (f"; did you mean {close[0]}?" if close else ""))
    _utils("pigeon_registry.cancel")(app, _user(), job=values.get("job"))
    held = _utils("pigeon_registry.holder")(app)
    return {"cancel": {"app": app, "holder": {k: v for k, v in held.items() if k != "fd"} if held else None}}


def prune(*args, **kwargs):
    """
    Remove, on every minion of the app's ``config.target``, the images of its versions that no
    stack uses: kept are the registry's versions, the images a container uses, and the
    ``keep_last`` (default 3) newest other versions; with ``config:build_dir`` in the pillar,
    the build folders of the versions not kept go too. Under the app's deploy lock (refused
    while an action runs), recorded in the history. With ``dry_run``, what it would remove.
    Keys: app, keep_last, dry_run. Returns {"prune": {"removed": {minion: [repo:tag]}, "kept":
    {minion: [...]}, "folders": {minion: [folders]}, "errors": [one line], "dry_run": bool}}.

    CLI Example:

    .. code-block:: bash

        salt-run deploy.prune app=app keep_last=2
    """
    values, refusal = _checked("prune", args, kwargs)
    if refusal:
        return _refuse(refusal)
    app, user, dry_run = values["app"], _user(), values.get("dry_run", False)
    definitions = _utils("pigeon_registry.definitions")()
    definition = definitions.get(app)
    checked, refusal = _utils("pigeon_plan.check")(app, "prune", None, definition, known=list(definitions))
    if refusal:
        return _refuse(refusal)
    held, refusal = _utils("pigeon_registry.lock")(app, "prune", None, user, 0, hint="try again when it ends")
    if refusal:
        return _refuse(refusal)
    try:
        done = _pruned(app, definitions, user, values.get("keep_last", 3), dry_run, held)
    finally:
        _utils("pigeon_registry.unlock")(app)
    if isinstance(done, str):
        return _refuse(done)
    if done["errors"]:
        __context__["retcode"] = 1
    return {"prune": done}


def _pruned(app, definitions, user, keep_last, dry_run, held, source="cli"):
    """The prune of ``app``, its lock held: what was removed and kept on each minion (prune's
    return), recorded in the history; or why it cannot run (one line)."""
    started = time.time()
    definition = definitions[app]
    config = definition.get("config") or {}
    templates = _utils("pigeon_definition.image_templates")(app, definition)
    # apps whose images share a name with this one's keep theirs too, and one of them
    # that holds its lock may be building an image: then no prune
    keep = set()
    for other in sorted(set(definitions) | set(_utils("pigeon_registry.apps")())):
        keep |= set(_utils("pigeon_registry.load")(other)["stacks"])
        shared = other != app and isinstance(definitions.get(other), dict) and set(templates) & set(
            _utils("pigeon_definition.image_templates")(other, definitions[other]))
        busy = _utils("pigeon_registry.holder")(other) if shared else None
        if busy:
            return (f"{other}, whose images share a name with {app}'s, is locked by "
                    f"{busy.get('action')} of {busy.get('user')}; try again when it ends")
    try:
        answers = _utils("pigeon_minions.ask")(
            config.get("target"), config.get("target_type", "glob"), "stack_containers.prune_images",
            timeout=120, app=app, templates=templates, keep=sorted(keep), last=keep_last, dry_run=dry_run,
            **({"build_dir": config["build_dir"]} if config.get("build_dir") else {}))
    except Exception as exc:  # pylint: disable=broad-except  (the master could not publish)
        log.exception("deploy: prune of %s could not reach its minions", app)
        return (f"prune of {app} could not reach {config.get('target')}: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200] if str(exc) else ''}; see the master's log")
    done = {"removed": {}, "kept": {}, "folders": {}, "errors": [], "dry_run": dry_run}
    for minion, ret in sorted(answers.items()):
        if not isinstance(ret, dict):
            done["errors"].append(f"{minion}: " + ("did not answer within 120 s; run prune again"
                                                   if ret is False or not str(ret)
                                                   else str(ret).splitlines()[0][:200]))
            continue
        done["removed"][minion], done["kept"][minion] = ret.get("removed", []), ret.get("kept", [])
        done["folders"][minion] = ret.get("folders", [])
        done["errors"] += [f"{minion}: {line}" for line in ret.get("errors", [])]
    if not answers:
        done["errors"].append(f"no answer from {config.get('target')}")
    if not dry_run:
        removed = sorted({tag for tags in done["removed"].values() for tag in tags})
        folders = sum(len(f) for f in done["folders"].values())
        _utils("pigeon_registry.history_add")(app, _utils("pigeon_registry.record")(
            "prune", None, "failed" if done["errors"] else "success", user=user, source=source,
            when=held.get("since"), started=started,
            message=f"{len(removed)} images removed" + (f", {folders} build folders" if folders else "")
                    + (f"; {done['errors'][0]}" if done["errors"] else ""),
            removed=removed))
    return done


def release(*args, **kwargs):
    """
    Start a version of an app in a free slot, internal/preview traffic only.
    Keys: app, version (else the pillar's), keep_failed, wait, dry_run, expect_revision.

    CLI Example:

    .. code-block:: bash

        salt-run deploy.release app=app version=1.4
    """
    return _action("release", args, kwargs)


def activate(*args, **kwargs):
    """
    Give production to the released stack. Keys: app, version, wait, dry_run, expect_revision.

    CLI Example:

    .. code-block:: bash

        salt-run deploy.activate app=app
    """
    return _action("activate", args, kwargs)


def deactivate(*args, **kwargs):
    """
    Remove a stack (the active one only with force). Keys: app, version, force, wait, dry_run, expect_revision.

    CLI Example:

    .. code-block:: bash

        salt-run deploy.deactivate app=app version=1.3
    """
    return _action("deactivate", args, kwargs)


def rollback(*args, **kwargs):
    """
    Give production back to the inactive stack. Keys: app, wait, dry_run, expect_revision.

    CLI Example:

    .. code-block:: bash

        salt-run deploy.rollback app=app
    """
    return _action("rollback", args, kwargs)


def canary(*args, **kwargs):
    """
    Send a share of production (``percent``, 0-100) to the released stack, the rest to the
    active one, at runtime; the same client stays on its side (a cookie). Gated like activate:
    every server of the release UP. ``activate`` completes it, ``abort`` or ``rollback`` ends
    it. Keys: app, percent, version (the release's), wait, dry_run, expect_revision.

    CLI Example:

    .. code-block:: bash

        salt-run deploy.canary app=app percent=10
    """
    return _action("canary", args, kwargs)


def abort(*args, **kwargs):
    """
    End a canary: production all on the active stack again; the release keeps internal and
    preview traffic. Keys: app, wait, dry_run, expect_revision.

    CLI Example:

    .. code-block:: bash

        salt-run deploy.abort app=app
    """
    return _action("abort", args, kwargs)


def maintenance(*args, **kwargs):
    """
    Maintenance on (``enable=True``) or off: production answers 503 with ``message`` and a
    Retry-After of ``retry_after`` seconds (default 300), while internal and preview traffic
    still reach the stacks. In the registry (kept across HAProxy's reloads and restarts, and
    every other action) and in status. Keys: app, enable, message, retry_after, wait,
    dry_run, expect_revision.

    CLI Example:

    .. code-block:: bash

        salt-run deploy.maintenance app=app enable=True message="Back at 18:00"
    """
    return _action("maintenance", args, kwargs)


def repair(*args, **kwargs):
    """
    Bring what runs back to what the registry says, gated like a release: HAProxy on the load
    balancer, each stack's containers (stopped ones started, missing ones created from the
    pillar, those of versions the registry does not know removed) healthy and UP, then the
    registry's routes set again. The registry does not change. Keys: app, version (one stack
    only), wait, dry_run, expect_revision.

    CLI Example:

    .. code-block:: bash

        salt-run deploy.repair app=app
    """
    return _action("repair", args, kwargs)


# ---------------------------------------------------------------------------
# deployments from CI (reactor/deploy.sls)
def _fire(data, tag):
    import salt.utils.event  # pylint: disable=import-outside-toplevel

    with salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=False) as bus:
        bus.fire_event(data, tag)


def _webhook_secret():
    path = __opts__.get("pigeon_webhook_secret_file")
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def _seen_nonce(nonce, window):
    """Whether ``nonce`` was used within ``window`` seconds (and remember it if not)."""
    import fcntl  # pylint: disable=import-outside-toplevel
    import os  # pylint: disable=import-outside-toplevel

    import salt.cache  # pylint: disable=import-outside-toplevel

    directory = os.path.join(__opts__["cachedir"], "pigeon")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(directory, "nonces.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # two deliveries of one body at once: one of them wins
        cache = salt.cache.factory(__opts__)
        now = time.time()
        seen = {k: v for k, v in (cache.fetch("pigeon/webhook", "nonces") or {}).items()
                if now - float(v) < 2 * window}
        if nonce in seen:
            return True
        seen[nonce] = now
        cache.store("pigeon/webhook", "nonces", seen)
        return False
    finally:
        os.close(fd)


def _reject(tag, reason):
    log.warning("pigeon: CI event %s ignored: %s", tag, reason)
    _fire({"tag": tag, "reason": reason}, f"{OUTCOME_TAG}/rejected")
    __context__["retcode"] = 1
    return {"rejected": reason}


def ci_event(event=None, tag="", **kwargs):
    """
    Carry out a deployment asked by a CI event (reactor/deploy.sls calls this).

    Checks the event (a signed, fresh, never-seen webhook; or an event of a
    minion listed in pigeon_ci_minions), then the request against the schema,
    then carries out the action with source "reactor" (as ``_run`` does for
    stacks.py), and publishes the outcome as the event
    ``pigeon/deploy/<app>/<action>`` ({app, version, action, via, ok, error,
    step: the failed step or None, seconds, source}). An invalid or unauthenticated event is logged,
    published as ``pigeon/deploy/rejected`` ({tag, reason}) and changes nothing.

    CLI Example:

    .. code-block:: bash

        salt-run deploy.ci_event event='{"id": "ci-1", "data": {...}}' tag=pigeon/ci/deploy
    """
    window = int(__opts__.get("pigeon_webhook_window", 300))
    try:
        raw = __utils__["pigeon_ci.check"](
            event if isinstance(event, dict) else {}, str(tag), secret=_webhook_secret(),
            ci_minions=__opts__.get("pigeon_ci_minions") or [], now=time.time(), window=window)
    except ValueError as exc:  # pigeon_ci.Rejected
        return _reject(tag, str(exc))
    via = raw.pop("via")
    values, refusal = _checked("ci", (), raw)
    if refusal:
        return _reject(tag, refusal)
    if via == "webhook":
        if "timestamp" not in values or "nonce" not in values:
            return _reject(tag, "a webhook body needs timestamp and nonce (replay protection); "
                                "see docs/ci.md")
        if _seen_nonce(values["nonce"], window):
            return _reject(tag, f"nonce {values['nonce']} was used already: a replayed webhook")
    action = values["action"]
    request = {k: values[k] for k in ("app", "version") if k in values}
    if action in ("release", "deactivate") and "version" not in request:
        return _reject(tag, f"{action} needs a version")
    checked, refusal = _checked(action, (), request)
    if refusal:
        return _reject(tag, refusal)
    started = time.monotonic()
    done = _run(action, checked, "reactor", user=f"ci ({via})")
    outcome = {"app": checked["app"], "version": done.get("version") or checked.get("version"),
               "action": action, "via": via, "ok": done["ok"], "error": done["error"],
               "step": done.get("failed_step"), "seconds": round(time.monotonic() - started, 3),
               "source": "reactor"}
    _fire(outcome, f"{OUTCOME_TAG}/{checked['app']}/{action}")
    if not done["ok"]:
        __context__["retcode"] = 1
    return outcome
