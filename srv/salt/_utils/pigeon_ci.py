"""
Deployment requests from CI: the signature of a webhook and the request itself.
Pure functions, no Salt: used by ``deploy.ci_event`` (the reactor's runner),
exposed as ``__utils__["pigeon_ci.check"]``. The request's fields are checked
afterwards, at the one door (``pigeon_schema``).

A CI system POSTs to Pigeon's webhook front (``/hook/pigeon/deploy``, see
``srv/netapi/pigeon_webhook.py``), which fires the raw body as the event
``pigeon/webhook/deploy``; the body is JSON::

    {"app": "app", "version": "1.4", "action": "release",
     "timestamp": 1764662400, "nonce": "5f0c2a9e41d8b7c3a6e1"}

signed with the shared secret: the header ``X-Pigeon-Signature`` is
``sha256=`` and the hex HMAC-SHA256 of the raw body (as GitHub signs its
webhooks). ``timestamp`` (Unix seconds) must be within the window of the
master's clock and ``nonce`` never seen before: a body cannot be replayed.
Only ``Content-Type: application/json`` is taken. A CI minion may instead send the event ``pigeon/ci/deploy`` with the
same fields (``salt-call event.send pigeon/ci/deploy app=app version=1.4
action=release``); it is trusted when the minion is listed in the master's
``pigeon_ci_minions``.
"""

import hashlib
import hmac
import json

SIGNATURE_HEADER = "X-Pigeon-Signature"
WEBHOOK_TAG = "pigeon/webhook/deploy"  # fired by Pigeon's webhook front (srv/netapi/pigeon_webhook.py)
MAX_BODY = 65536  # bytes of a webhook body


class Rejected(ValueError):
    """The event is not a valid, authenticated deployment request (one line why)."""


def sign(secret, body):
    """The signature header's value for ``body`` (bytes or str)."""
    if isinstance(body, str):
        body = body.encode()
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _header(headers, name):
    for key, value in (headers or {}).items() if isinstance(headers, dict) else ():
        if str(key).lower() == name.lower():
            return value
    return None


def _same(given, expected):
    """Constant-time comparison of a header value of any type or encoding with ours."""
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode())


def check(event, tag, secret=None, ci_minions=(), now=None, window=300):
    """
    The deployment request in a CI event, not yet checked against the schema:
    the request's fields plus ``via``. Raises Rejected (one line) when it is
    unsigned, badly signed, not JSON, stale (its ``timestamp`` more than
    ``window`` seconds from ``now``), or from a minion not in ``ci_minions``.
    """
    if not isinstance(event, dict):
        raise Rejected("the event is not a mapping")
    if tag == WEBHOOK_TAG:
        if not secret:
            raise Rejected("no pigeon_webhook_secret_file on the master: webhooks are refused")
        body = event.get("body")
        if not isinstance(body, str):
            raise Rejected("the webhook has no body")
        if len(body.encode("utf-8", "surrogatepass")) > MAX_BODY:
            raise Rejected(f"the body is larger than {MAX_BODY} bytes")
        headers = event.get("headers")
        given = _header(headers, SIGNATURE_HEADER)
        if given is None:
            raise Rejected(f"unsigned webhook: no {SIGNATURE_HEADER} header")
        if not _same(given, sign(secret, body)):
            raise Rejected(f"bad signature in {SIGNATURE_HEADER}")
        kind = str(_header(headers, "Content-Type") or "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise Rejected(f"Content-Type {kind[:40]!r}: a webhook body must be application/json")
        try:
            request = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise Rejected("the body is not JSON (or nested too deep)") from exc
        if not isinstance(request, dict):
            raise Rejected("the request is not a JSON object")
        stamp = request.get("timestamp")
        if now is not None and isinstance(stamp, (int, float)) and not isinstance(stamp, bool):
            try:
                stale = not abs(float(now) - float(stamp)) <= window  # nan is stale too
            except OverflowError:
                stale = True
            if stale:
                raise Rejected(f"timestamp {str(stamp)[:20]} is more than {window} s from the "
                               "master's clock: a stale or replayed webhook")
        via = "webhook"
    else:
        minion = event.get("id")
        if not isinstance(minion, str) or minion not in ci_minions:
            raise Rejected(f"event from {str(minion)[:60]!r}, which is not in pigeon_ci_minions")
        request = event.get("data", event)
        if not isinstance(request, dict):
            raise Rejected("the request is not a mapping")
        request = {k: v for k, v in request.items()
                   if k not in ("id", "tag", "cmd", "tok", "_stamp", "pretag")}
        via = f"minion {minion}"
    return dict(request, via=via)
