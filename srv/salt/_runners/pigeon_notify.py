"""
Runner ``pigeon_notify``: post each action's outcome to a chat-style webhook (Slack,
Mattermost, Rocket.Chat, Teams' incoming webhooks all take ``{"text": ...}``).

The deploy runner publishes every action's outcome on the master's event bus as
``pigeon/deploy/<app>/<action>``; the reactor ``reactor/notify.sls`` calls ``post`` with
the event's tag only. The event's data is not trusted (a minion can fire an event with any
tag and data): ``post`` checks the tag's app, and posts the entries of Pigeon's own history
of that app it has not posted yet (the last one's finish time is remembered), so a forged
event can at most make Pigeon say sooner what really happened, never say something else.

Master pillar (the master's view, minion ``<id>_master``)::

    pigeon_notify:
      url: https://chat.example.com/hooks/xyz   # http(s); absent: nothing is posted
      timeout: 5                                # seconds (default 5)

CLI Example:

.. code-block:: bash

    salt-run pigeon_notify.post tag=pigeon/deploy/app/activate
"""

import fcntl
import json
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request

log = logging.getLogger(__name__)

__virtualname__ = "pigeon_notify"
TAG_RE = re.compile(r"\Apigeon/deploy/([a-z][a-z0-9_-]{0,40})/([a-z]{1,20})\Z")
URL_RE = re.compile(r"\Ahttps?://[!-~]{1,2040}\Z")


def __virtual__():
    return __virtualname__


def _settings():
    """pigeon_notify: of the master's pillar: (url, timeout), or (None, why)."""
    import salt.pillar  # pylint: disable=import-outside-toplevel

    pillar = salt.pillar.get_pillar(__opts__, {}, __opts__["id"] + "_master", saltenv="base").compile_pillar()
    settings = pillar.get("pigeon_notify") or {}
    url = settings.get("url") if isinstance(settings, dict) else None
    if not url:
        return None, "no pigeon_notify:url in the master's pillar"
    if not isinstance(url, str) or not URL_RE.match(url) or not urllib.parse.urlsplit(url).hostname:
        return None, "pigeon_notify:url is not an http(s) URL without spaces; see docs/observe.md"
    timeout = settings.get("timeout", 5)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= 60:
        return None, "pigeon_notify:timeout is not a whole number of seconds from 1 to 60"
    return (url, timeout), None


def text(app, item):
    """The chat line of a history entry: '✅ app 2.1: activate by alice (cli) in 0.9 s: app 2.1 is active'."""
    ok = item.get("result") == "success"
    mark = "\u2705" if ok else ("\u26d4" if item.get("result") == "refused" else "\u274c")
    what = f"{app} {item.get('version')}" if item.get("version") else app
    why = item.get("message") if ok else (item.get("error") or item.get("message") or item.get("result"))
    line = (f"{mark} {what}: {item.get('action')} {item.get('result')} by {item.get('user')} ({item.get('source')}) "
            f"in {item.get('duration')} s" + (f": {why}" if why else ""))
    # chat markup (Slack, Mattermost: <!channel>, <url|label>) is text here
    return line[:1000].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def post(tag="", **kwargs):  # pylint: disable=unused-argument  (the reactor's other keys)
    """
    Post the history entries of the app that ``tag`` (``pigeon/deploy/<app>/<action>``) names
    that were not posted yet (at most the last 5) to ``pigeon_notify:url``, one chat line each.
    Returns {"posted": bool, "why": ..., "status": HTTP status, "entries": how many}.
    """
    match = TAG_RE.match(str(tag))
    if not match:
        return {"posted": False, "why": f"tag {str(tag)[:80]!r} is not pigeon/deploy/<app>/<action>"}
    app = match.group(1)
    # before anything costs: a forged tag naming no app of the registry stops here
    if app not in __utils__["pigeon_registry.apps"]():
        return {"posted": False, "why": f"{app} is not in the registry"}
    settings, why = _settings()
    if why:
        return {"posted": False, "why": why}
    url, timeout = settings
    seen = os.path.join(__opts__["cachedir"], "pigeon", f"notified-{app}")
    os.makedirs(os.path.dirname(seen), mode=0o700, exist_ok=True)
    # two outcomes at once (the reactor runs each in a thread): one posts, the other finds it done
    fd = os.open(seen + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return _post_fresh(app, seen, url, timeout)
    finally:
        os.close(fd)


def _post_fresh(app, seen, url, timeout):
    """Post the entries of the app's history newer than the last one posted (``seen`` holds its
    finish time)."""
    items = __utils__["pigeon_registry.history"](app, 5)
    try:
        with open(seen, encoding="utf-8") as handle:
            last = handle.read().strip()
    except OSError:
        last = ""
    # the entries Pigeon has not posted yet (a bake's rollback comes after its activate); the
    # first time, the newest alone
    fresh = [item for item in items if str(item.get("finished") or "") > last] if last else items[-1:]
    if not fresh:
        return {"posted": False, "why": f"nothing new in {app}'s history since the last post"}
    body = json.dumps({"text": "\n".join(text(app, item) for item in fresh), "app": app, "entries": fresh},
                      default=str).encode("utf-8")
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # nosec: the pillar's URL, checked
            status = answer.status
    except (urllib.error.URLError, OSError, ValueError) as exc:
        log.warning("pigeon_notify: could not post the %s of %s: %s", fresh[-1].get("action"), app, exc)
        return {"posted": False, "why": f"{type(exc).__name__}: {str(exc)[:200]}"}
    with open(seen, "w", encoding="utf-8") as handle:
        handle.write(str(fresh[-1].get("finished") or ""))
    return {"posted": True, "status": status, "entries": len(fresh)}
