"""
The stack state machine: which transitions are allowed and what each one does.

A stack is one version of an app. It is in one of the states ``release``
(internal traffic only), ``active`` (production), ``inactive`` (kept for an
instant rollback) or deactivated (gone: absent from the registry). At most one
stack per app is in each state, and each stack occupies one HAProxy *slot*
(a backend) while it exists.

Pure functions over plain dicts, no Salt: the plan (``pigeon_plan``, run by the
deploy runner) loads the registry, calls :func:`plan`, and after the
orchestration has carried the plan out, records it with :func:`apply`; the
haproxy formula names its backends with :func:`slots` and :func:`backend`
(through ``pigeon_pillar``). Exposed to the runner through the loader
as ``__utils__["pigeon_statemachine.plan"]``.

A registry entry (one per app)::

    {"app": "app", "generation": 3,
     "stacks": {"1.0": {"state": "active", "slot": "a", "since": "...", "by": "...",
                        "servers": [["10.0.0.21", 21000], ...]}},  # servers: by address only
     "routes": {"app/production": "app_a", "app/internal": "app_a",
                "app/version/a": "1.0", "app/version/b": None, "app/version/c": None}}

The routes are the app's keys in HAProxy's routes map: ``<app>/production`` and
``<app>/internal`` name a backend; ``<app>/version/<slot>`` holds the version in a slot,
which HAProxy sends back in each response's ``X-Pigeon-Version`` header.
"""

import base64
import re

ACTIONS = ("release", "activate", "deactivate", "rollback", "repair", "canary", "abort", "maintenance")
# actions that change only where production goes (the entry's ``traffic``), no stack's state
TRAFFIC_ACTIONS = ("canary", "abort", "maintenance")
DEFAULT_MESSAGE = "This service is down for maintenance; please try again later."
DEFAULT_RETRY_AFTER = 300  # seconds, the Retry-After of a maintenance's 503
# actions that run steps and leave the registry as it is: repair brings what runs back to it
KEEPS_REGISTRY = ("repair",)
STATES = ("release", "active", "inactive")
DEFAULT_SLOTS = ("a", "b", "c")
# docker's tag grammar: 1 to 128 of [A-Za-z0-9_.-], not starting with . or -
# the state machine's own guard (a version names containers and networks): the same grammar as
# pigeon_schema.VERSION_RE, the door's (tests/unit/test_one_source.py keeps them equal)
VERSION_RE = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")


class TransitionError(Exception):
    """The action is not allowed from the current states; the message says why and what to do."""


def maintenance_value(maintenance):
    """The routes map value of a maintenance ({message, retry_after}): ``<retry_after>:<message
    in base64>``, which HAProxy splits (field) and decodes (b64dec); base64 keeps any text
    out of the admin socket's and the map file's syntax."""
    message = base64.b64encode(str(maintenance.get("message") or DEFAULT_MESSAGE).encode("utf-8")).decode("ascii")
    return f"{int(maintenance.get('retry_after') or DEFAULT_RETRY_AFTER)}:{message}"


def empty(app):
    """The registry entry of an app that has never been deployed."""
    return {"app": app, "generation": 0, "stacks": {}, "routes": {}}


def slots():
    """The slots a stack can take (release, active and inactive coexist): one HAProxy backend
    each."""
    return list(DEFAULT_SLOTS)


def backend(app, slot):
    """HAProxy backend name of an app's slot."""
    return f"{app}_{slot}"


def version_key(app, slot):
    """The routes map key holding the version in an app's slot (the X-Pigeon-Version header)."""
    return f"{app}/version/{slot}"


def in_state(entry, state):
    """The version of the app's stack in ``state``, or None."""
    for version, stack in entry["stacks"].items():
        if stack["state"] == state:
            return version
    return None


def routes(app, stacks, slots=DEFAULT_SLOTS, traffic=None):
    """Where production and internal traffic go, given {version: {state, slot}} and the
    entry's ``traffic`` ({canary: percent, maintenance: {message, retry_after}}), and which
    version each slot holds.

    Production reaches the active stack (none: HAProxy answers 503); internal
    traffic reaches the release stack, or the active one when no release exists.
    """
    slot_of = {s["state"]: s["slot"] for s in stacks.values()}
    production = slot_of.get("active")
    internal = slot_of.get("release", production)
    in_slot = {s["slot"]: version for version, s in stacks.items()}
    traffic = traffic or {}
    # a canary shares production between the active stack and the release: both must exist
    canary = traffic.get("canary") if "release" in slot_of and production else None
    return {
        f"{app}/production": backend(app, production) if production else None,
        f"{app}/internal": backend(app, internal) if internal else None,
        # which version each slot holds (None: an empty slot), for the response header
        **{version_key(app, slot): in_slot.get(slot) for slot in slots},
        # the share of production (percent) the release takes; production's 503 in maintenance
        f"{app}/canary": str(int(canary)) if canary else None,
        f"{app}/maintenance": maintenance_value(traffic["maintenance"]) if traffic.get("maintenance") else None,
    }


def check_version(version):
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise TransitionError(
            f"version {version!r} is not a valid image tag "
            "(1-128 letters, digits, '_', '.', '-'; not starting with '.' or '-')"
        )


def plan(entry, action, version=None, force=False, slots=DEFAULT_SLOTS, asked=None):
    """What ``action`` does to an app, or TransitionError when the state model forbids it.

    Returns a dict:
      action, app, version, generation (of the registry it was planned on),
      noop (True when the action already took effect; message says so),
      message, start ({version, slot} whose containers start, or None),
      stop ([{version, slot, state}] whose containers go, drained first when
      they took traffic), states ({version: new state, None = deactivated}),
      routes (after the action), routes_before; repair ([{version, slot, state}]: the
      stacks whose containers a repair brings back to the registry); traffic (the entry's
      ``traffic`` after the action), traffic_before.

    ``asked`` is what a traffic action asks: canary {percent}, maintenance {enable,
    message, retry_after}.
    """
    if action not in ACTIONS:
        raise TransitionError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    app = entry["app"]
    stacks = entry["stacks"]
    release = in_state(entry, "release")
    active = in_state(entry, "active")
    inactive = in_state(entry, "inactive")
    if version is not None:
        check_version(version)
    traffic = dict(entry.get("traffic") or {})
    asked = asked or {}
    result = {
        "action": action,
        "app": app,
        "version": version,
        "generation": entry["generation"],
        "force": bool(force),
        "noop": False,
        "message": "",
        "start": None,
        "stop": [],
        "states": {},
        "routes_before": routes(app, stacks, slots, traffic),
        "traffic_before": dict(traffic),
    }

    def stop(v):
        s = stacks[v]
        return {"version": v, "slot": s["slot"], "state": s["state"]}

    if action == "release":
        if version is None:
            raise TransitionError("release needs --version")
        state = stacks.get(version, {}).get("state")
        if state == "release":
            result.update(noop=True, message=f"{app} {version} is already released")
        elif state:
            raise TransitionError(
                f"{app} {version} is already {state}; release a new version, "
                + ("or roll back to it with 'stacks.py rollback'" if state == "inactive"
                   else "or deactivate it first")
            )
        elif release:
            raise TransitionError(
                f"{app} {release} is in release already; activate or deactivate it "
                f"before releasing {version}"
            )
        else:
            used = {s["slot"] for s in stacks.values()}
            free = [s for s in slots if s not in used]
            if not free:
                raise TransitionError(f"{app} has no free slot; deactivate the inactive stack first")
            result["start"] = {"version": version, "slot": free[0]}
            result["states"] = {version: "release"}
            result["message"] = f"{app} {version} released in slot {free[0]}"

    elif action == "activate":
        version = version or release
        result["version"] = version
        state = stacks.get(version, {}).get("state") if version else None
        if version and state == "active":
            result.update(noop=True, message=f"{app} {version} is already active")
        elif not version or state is None:
            raise TransitionError(
                f"{app} has no release to activate; run 'stacks.py release' first"
                if not version else
                f"{app} {version} is not released; run 'stacks.py release --app-name {app} --version {version}' first"
            )
        elif state == "inactive":
            raise TransitionError(
                f"{app} {version} is inactive; use 'stacks.py rollback --app-name {app}' to bring it back"
            )
        else:  # release -> active, active -> inactive, inactive -> deactivated
            result["states"][version] = "active"
            if active:
                result["states"][active] = "inactive"
            if inactive:
                result["states"][inactive] = None
                result["stop"].append(stop(inactive))
            result["message"] = f"{app} {version} is active" + (
                f"; {active} is inactive" if active else "")

    elif action == "rollback":
        if not inactive:
            raise TransitionError(f"{app} has no inactive stack to roll back to")
        if version and version != inactive:
            raise TransitionError(f"{app} {version} is not the inactive stack ({inactive} is)")
        result["version"] = inactive
        result["states"][inactive] = "active"
        if active:
            result["states"][active] = "inactive"
        result["message"] = f"{app} {inactive} is active again" + (
            f"; {active} is inactive" if active else "")

    elif action == "deactivate":
        if version is None:
            raise TransitionError("deactivate needs --version")
        state = stacks.get(version, {}).get("state")
        if state is None:
            result.update(noop=True, message=f"{app} {version} is not deployed; nothing to deactivate")
        elif state == "active" and not force:
            raise TransitionError(
                f"{app} {version} is active: deactivating it leaves production answering 503; "
                "add --force to do it anyway, or activate another version first"
            )
        else:
            result["states"][version] = None
            result["stop"].append(stop(version))
            result["message"] = f"{app} {version} deactivated"

    elif action == "canary":
        percent = int(asked.get("percent", 0))
        if not release:
            raise TransitionError(f"{app} has no release to send production to; run 'stacks.py release' first")
        if version and version != release:
            raise TransitionError(f"{app} {version} is not the release ({release} is); a canary sends "
                                  "production to the release")
        if not active:
            raise TransitionError(f"{app} has no active stack to share production with; activate {release} instead")
        result["version"] = release
        if percent == int(traffic.get("canary") or 0):
            result.update(noop=True, message=f"{app} {release} already gets {percent} % of production")
        else:
            traffic["canary"] = percent
            if not percent:
                traffic.pop("canary")
            result["message"] = (f"{app} {release} gets {percent} % of production, {active} the rest" if percent
                                 else f"{app}: production all on {active} again; {release} keeps internal traffic")

    elif action == "abort":
        result["version"] = release
        if not traffic.get("canary"):
            result.update(noop=True, message=f"{app} has no canary; production is all on {active or 'no stack'}")
        else:
            traffic.pop("canary")
            result["message"] = f"{app}: production all on {active} again; {release} keeps internal traffic"

    elif action == "maintenance":
        wanted = None
        if asked.get("enable"):
            wanted = {"message": asked.get("message") or DEFAULT_MESSAGE,
                      "retry_after": int(asked.get("retry_after") or DEFAULT_RETRY_AFTER)}
        if wanted == traffic.get("maintenance"):
            result.update(noop=True, message=f"{app} is {'already' if wanted else 'not'} in maintenance")
        else:
            traffic.pop("maintenance", None)
            if wanted:
                traffic["maintenance"] = wanted
            result["message"] = (f"{app} is in maintenance: production answers 503; internal and preview "
                                 "traffic still reach the stacks" if wanted else
                                 f"{app}: maintenance off; production reaches {active or 'no stack (503)'}")

    elif action == "repair":  # no transition: every stack's containers as the registry says
        if version is not None and version not in stacks:
            raise TransitionError(f"{app} {version} is not deployed; nothing to repair "
                                  "(./stacks.py status shows the stacks)")
        result["repair"] = [stop(v) for v in sorted(stacks) if version in (None, v)]
        if not result["repair"]:
            result.update(noop=True, message=f"{app} has no stack; nothing to repair")
        else:
            result["message"] = f"{app}: " + ", ".join(
                f"{s['version']} ({s['state']})" for s in result["repair"]) + " as the registry says"

    after = {v: dict(s) for v, s in stacks.items()}
    for v, state in result["states"].items():
        if state is None:
            after.pop(v, None)
        elif v in after:
            after[v]["state"] = state
        else:
            after[v] = {"state": state, "slot": result["start"]["slot"]}
    if action in ("activate", "rollback") or {"release", "active"} - {s["state"] for s in after.values()}:
        # activate completes a canary; rollback, and the end of the release or the active stack, end it
        traffic.pop("canary", None)
    result["traffic"] = traffic
    result["routes"] = routes(app, after, slots, traffic)
    return result


def changes_registry(planned):
    """Whether the registry changes when ``planned`` took effect."""
    return not planned["noop"] and planned["action"] not in KEEPS_REGISTRY


def apply(entry, planned, when, by):
    """The registry entry after ``planned`` took effect (a new dict)."""
    new = {
        "app": entry["app"],
        "generation": entry["generation"] + (1 if changes_registry(planned) else 0),
        "stacks": {v: dict(s) for v, s in entry["stacks"].items()},
        "routes": dict(planned["routes"]),
    }
    if planned.get("traffic"):
        new["traffic"] = dict(planned["traffic"])
    if entry.get("bake"):  # the last bake window (pigeon_plan.note_bake), kept until the next one
        new["bake"] = dict(entry["bake"])
    for version, state in planned["states"].items():
        if state is None:
            new["stacks"].pop(version, None)
        elif version in new["stacks"]:
            new["stacks"][version].update(state=state, since=when, by=by)
        else:
            new["stacks"][version] = {
                "state": state, "slot": planned["start"]["slot"], "since": when, "by": by}
            if planned["start"].get("servers"):  # where HAProxy reaches it: [[address, port], ...]
                new["stacks"][version]["servers"] = [list(s) for s in planned["start"]["servers"]]
    return new


def replaced(entry, planned):
    """The registry entry after a repair that placed its stacks anew (by address: the app
    minions there are now), with those stacks' servers and the next revision; None when no
    stack's servers changed (the registry stays as it is)."""
    changed = {r["version"]: [list(s) for s in r["servers"]] for r in planned.get("repair") or []
               if r.get("servers") and r["version"] in entry["stacks"]
               and entry["stacks"][r["version"]].get("servers") != [list(s) for s in r["servers"]]}
    if not changed:
        return None
    new = dict(entry, generation=entry["generation"] + 1,
               stacks={v: dict(s) for v, s in entry["stacks"].items()})
    for version, servers in changed.items():
        new["stacks"][version]["servers"] = servers
    return new
