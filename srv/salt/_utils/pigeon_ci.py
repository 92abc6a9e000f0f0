"""
Deployment requests from CI: the signature of a webhook and the request itself.
Pure functions, no Salt: used by ``stacks.ci_event`` (the reactor's runner),
exposed as ``__utils__["pigeon_ci.check"]``.

A CI system POSTs to salt-api's ``/hook/pigeon/deploy`` a JSON body::

    {"app": "app", "version": "1.4", "action": "release"}

signed with the shared secret: the header ``X-Pigeon-Signature`` is
``sha256=`` and the hex HMAC-SHA256 of the raw body (as GitHub signs its
webhooks). A CI minion may instead send the event ``pigeon/ci/deploy`` with the
same fields (``salt-call event.send pigeon/ci/deploy app=app version=1.4
action=release``); it is trusted when the minion is listed in the master's
``pigeon_ci_minions``.
"""

import hashlib
import hmac
import json
import re

ACTIONS = ("release", "activate", "deactivate", "rollback")
VERSION_RE = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
APP_RE = re.compile(r"\A[a-z0-9][a-z0-9_-]{0,40}\Z")
SIGNATURE_HEADER = "X-Pigeon-Signature"


class Rejected(Exception):
    """The event is not a valid, authenticated deployment request (one line why)."""


def sign(secret, body):
    """The signature header's value for ``body`` (bytes or str)."""
    if isinstance(body, str):
        body = body.encode()
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _header(headers, name):
    for key, value in (headers or {}).items():
        if key.lower() == name.lower():
            return value
    return None


def check(event, tag, secret=None, ci_minions=()):
    """
    The deployment request in a CI event: {"app", "version", "action", "via"}.
    Raises Rejected (one line) when it is unsigned, badly signed, malformed,
    or asks for something else than a deployment action.
    """
    if tag.startswith("salt/netapi/hook/"):
        if not secret:
            raise Rejected("no pigeon_webhook_secret_file on the master: webhooks are refused")
        body = event.get("body") or ""
        given = _header(event.get("headers"), SIGNATURE_HEADER)
        if not given:
            raise Rejected(f"unsigned webhook: no {SIGNATURE_HEADER} header")
        if not hmac.compare_digest(str(given), sign(secret, body)):
            raise Rejected(f"bad signature in {SIGNATURE_HEADER}")
        try:
            request = json.loads(body)
        except ValueError as exc:
            raise Rejected("the body is not JSON") from exc
        via = "webhook"
    else:
        minion = event.get("id")
        if minion not in ci_minions:
            raise Rejected(f"event from {minion!r}, which is not in pigeon_ci_minions")
        request = event.get("data", event)
        via = f"minion {minion}"
    if not isinstance(request, dict):
        raise Rejected("the request is not a JSON object")
    action, app, version = request.get("action"), request.get("app"), request.get("version")
    if action not in ACTIONS:
        raise Rejected(f"action {action!r} is not one of {', '.join(ACTIONS)}")
    if not isinstance(app, str) or not APP_RE.match(app):
        raise Rejected(f"app {app!r} is not a valid app name")
    if version is not None and (not isinstance(version, str) or not VERSION_RE.match(version)):
        raise Rejected(f"version {version!r} is not a valid image tag")
    if action in ("release", "deactivate") and version is None:
        raise Rejected(f"{action} needs a version")
    return {"app": app, "version": version, "action": action, "via": via}
