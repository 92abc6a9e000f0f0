"""
Pigeon's registry, on the master: which version of each app is in which state
(an entry per app), the history of every action, and the per-app deploy lock.

Storage: entries and history are in Salt's cache (``salt.cache``, banks
``pigeon/registry`` and ``pigeon/history``, the master's ``cache:`` backend);
the lock is an ``flock`` on a file in the master's cachedir (``pigeon_lock``),
so two runs on one master cannot both take it, and a run that dies releases it.

Used by the actions (``pigeon_plan``, called by the deploy runner) and the
views (``_runners/stacks.py``) as ``__utils__["pigeon_registry.<fun>"]``;
the ext_pillar ``_pillar/pigeon_registry.py`` reads the same bank.
"""

import datetime
import fcntl
import logging
import os
import time

import salt.cache

log = logging.getLogger(__name__)

_LOADER = None


def _utils(name):
    """A function of another utils module. Salt's loader gives utils modules no ``__utils__``:
    these share a utils loader of their own, made on first use (tests set ``_LOADER``)."""
    global _LOADER  # pylint: disable=global-statement
    if _LOADER is None:
        import salt.loader  # pylint: disable=import-outside-toplevel

        _LOADER = salt.loader.utils(__opts__)
    return _LOADER[name]


HISTORY_KEEP = 500
REGISTRY, HISTORY, CANCEL = "pigeon/registry", "pigeon/history", "pigeon/cancel"


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _cache():
    return salt.cache.factory(__opts__)


def apps():
    """The apps the registry has an entry for."""
    return sorted(_cache().list(REGISTRY) or [])


def load(app):
    """The app's entry (an empty one when the app has none)."""
    entry = _cache().fetch(REGISTRY, app)
    return entry if entry else _utils("pigeon_statemachine.empty")(app)


def store(entry):
    _cache().store(REGISTRY, entry["app"], entry)


# ---------------------------------------------------------------------------
# history
def record(action, version, result, user=None, source="cli", when=None, started=None, **fields):
    """One history entry: every entry is made here."""
    finished = now()
    entry = {"action": action, "version": version, "result": result, "user": user or "unknown",
             "source": source, "when": when or finished, "finished": finished,
             "duration": _duration(started)}
    entry.update({k: v for k, v in fields.items() if v is not None})
    return entry


def _duration(started):
    """Seconds since ``started`` (epoch seconds); 0 when not known."""
    try:
        return round(time.time() - float(started), 3)
    except (TypeError, ValueError):
        return 0


def history_add(app, entry):
    """Append one entry to the app's history. Writers take turns (an flock of their own, held
    for the read and the write only): a refusal is recorded without the deploy lock, maybe
    while an action records its end under it, and neither entry may be lost."""
    directory = _lock_dir()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(directory, f"{app}.history"),
                 os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        cache = _cache()
        items = cache.fetch(HISTORY, app) or []
        items.append(entry)
        cache.store(HISTORY, app, items[-HISTORY_KEEP:])
    finally:
        os.close(fd)  # the flock goes with it


def history(app, limit=20):
    """The last ``limit`` entries of the app's history (all with 0), oldest first."""
    items = _cache().fetch(HISTORY, app) or []
    return items[-limit:] if limit else items


# ---------------------------------------------------------------------------
# the deploy lock
def _lock_dir():
    return os.path.join(__opts__["cachedir"], "pigeon", "locks")


WAIT_HINT = "try again when it ends, or add --wait SECONDS"


def lock(app, action, version, user, wait=0, hint=WAIT_HINT, job=None):
    """
    Take the app's deploy lock for this thread, waiting up to ``wait`` seconds, unless a
    ``cancel`` of the app (or of this ``job``) is asked while it waits. Returns (held, None)
    with what the lock now says, or (None, why not: one line ending with ``hint``, what the
    sender can do).
    """
    me = {"action": action, "version": version, "user": user or "unknown",
          "since": now(), "started": time.time(), "job": job}
    asked_since = time.monotonic()  # the kernel's clock, the same in every process
    taken = _utils("pigeon_lock.acquire")(_lock_dir(), app, me, wait=wait,
                                          stop=lambda: cancelled(app, asked_since, job) if wait else None)
    held = taken["held"]
    asked = taken.get("stopped")
    if not asked and not held and wait:
        asked = cancelled(app, asked_since, job)  # cancelled as the holder let go: taken, given back
        if asked:
            unlock(app)
    if asked:
        return None, (f"cancelled by {asked.get('user', 'unknown')} at {asked.get('when', '?')} while it "
                      f"waited for the lock of {app}: nothing ran")
    if held:
        doing = " ".join(str(x) for x in (held.get("action"), held.get("version")) if x)
        return None, (f"{app} is locked by {doing or 'an action'} of {held.get('user', 'unknown')} "
                      f"since {held.get('since', '?')}; {hint}")
    if taken["stale"]:
        # its holder died without ending its action: the kernel released the lock
        log.warning("pigeon: the lock of %s was left by an action that died: %s", app, taken["stale"])
        try:  # best effort: the lock is taken now, and must be released by the caller's finally
            history_add(app, record("unlock", None, "stale lock released", source="pigeon", lock=taken["stale"]))
        except Exception:  # pylint: disable=broad-except
            log.exception("pigeon: could not record the stale lock of %s", app)
    return me, None


CANCEL_KEEP = 50  # the requests kept per app (an action waits at most pigeon_schema.MAX_WAIT)


def cancel(app, user, job=None):
    """Ask the actions of ``app`` that wait for its lock now (only the one of runner job
    ``job``, when given) to stop waiting, untaken, and the one that holds it to stop before
    its next cancellable step (``deploy._run``). Only actions begun already are stopped: a
    request is older than any action that starts after it (time.monotonic: the kernel's
    clock, which no one sets back)."""
    cache = _cache()
    asked = [a for a in cache.fetch(CANCEL, app) or [] if _this_boot(a)
             and time.monotonic() - float(a.get("at") or 0) < 3600][-(CANCEL_KEEP - 1):]
    asked.append({"user": user or "unknown", "when": now(), "at": time.monotonic(), "job": job,
                  "boot": _boot_id()})
    cache.store(CANCEL, app, asked)


def _boot_id():
    """This boot of the master's host (time.monotonic starts again at each one), or None."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def _this_boot(request):
    """Whether a cancel request was asked since the host last booted: one of an earlier boot,
    whose monotonic time means nothing now, never stops an action."""
    return isinstance(request, dict) and request.get("boot") == _boot_id() and \
        float(request.get("at") or 0) <= time.monotonic()


def cancelled(app, since, job=None):
    """The cancel asked of ``app`` after ``since`` (time.monotonic) for every waiting action or
    for ``job``, or None."""
    asked = _cache().fetch(CANCEL, app)
    for request in reversed(asked if isinstance(asked, list) else []):
        if _this_boot(request) and float(request.get("at") or 0) > since and request.get("job") in (None, job):
            return request
    return None


def unlock(app):
    _utils("pigeon_lock.release")(_lock_dir(), app)


def holder(app):
    """Who holds the app's deploy lock now, or None (the kernel's word: see pigeon_lock)."""
    return _utils("pigeon_lock.holder")(_lock_dir(), app)


# ---------------------------------------------------------------------------
# the definitions
def definitions():
    """The ``stacks:`` pillar as the master's orchestrations see it (its pillar as minion
    ``<id>_master``)."""
    import salt.pillar  # pylint: disable=import-outside-toplevel

    pillar = salt.pillar.get_pillar(__opts__, {}, __opts__["id"] + "_master",
                                    saltenv="base").compile_pillar()
    return pillar.get("stacks") or {}
