"""Unit tests for srv/salt/_utils/pigeon_ci.py (the signature and freshness of a CI request)."""

import hashlib
import hmac
import json

import pytest

from srv_modules import load

ci = load("_utils/pigeon_ci.py", "pigeon_ci_under_test")

SECRET = "s3cret-shared-with-ci"
NOW = 1764662400
REQUEST = {"app": "app", "version": "1.4", "action": "release", "timestamp": NOW,
           "nonce": "5f0c2a9e41d8b7c3a6e1"}


def webhook(body=None, signature=None, content_type="application/json", **extra_headers):
    """An event as the webhook front fires it: the raw body and the headers that count."""
    if body is None:
        body = json.dumps(REQUEST)
    if signature is None:
        signature = "sha256=" + hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
    headers = {"X-Pigeon-Signature": signature, "Content-Type": content_type}
    headers.update(extra_headers)
    return {"body": body, "headers": {k: v for k, v in headers.items() if v is not ...}}


def check(event, tag=ci.WEBHOOK_TAG, **kwargs):
    kwargs = dict({"secret": SECRET, "now": NOW, "window": 300}, **kwargs)
    return ci.check(event, tag, **kwargs)


def rejected(event, tag=ci.WEBHOOK_TAG, **kwargs):
    try:
        check(event, tag, **kwargs)
    except ci.Rejected as exc:
        message = str(exc)
        assert message and "\n" not in message and len(message.splitlines()) == 1, message
        return message
    except Exception as exc:  # the failure shown: anything but Rejected is a defect
        pytest.fail(f"{type(exc).__name__} instead of Rejected: {exc}")
    pytest.fail("accepted")


# ---------------------------------------------------------------------------
# webhooks
def test_a_signed_webhook_passes():
    assert check(webhook()) == dict(REQUEST, via="webhook")


def test_sign_is_githubs_hmac_sha256():
    body = json.dumps(REQUEST)
    expected = "sha256=" + hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
    assert ci.sign(SECRET, body) == expected == ci.sign(SECRET, body.encode())
    assert check(webhook(body, ci.sign(SECRET, body)))["app"] == "app"


def test_the_signature_header_name_is_case_insensitive():
    event = webhook()
    event["headers"] = {"x-pigeon-signature": event["headers"]["X-Pigeon-Signature"],
                        "content-type": "Application/JSON; charset=utf-8"}
    assert check(event)["via"] == "webhook"


def test_an_unsigned_webhook_is_rejected():
    event = webhook()
    del event["headers"]["X-Pigeon-Signature"]
    assert "unsigned" in rejected(event)
    assert "unsigned" in rejected({"body": event["body"]})  # no headers at all
    assert "unsigned" in rejected(dict(event, headers=None))
    assert "unsigned" in rejected(dict(event, headers=["X-Pigeon-Signature"]))


@pytest.mark.parametrize("signature", [
    "", "sha256=", "sha256=" + "0" * 64, "sha1=" + "0" * 40,
    ci.sign("another-secret", json.dumps(REQUEST)),
    ci.sign(SECRET, json.dumps(REQUEST)).upper(),
    ci.sign(SECRET, json.dumps(REQUEST)) + "\n",
    " " + ci.sign(SECRET, json.dumps(REQUEST)),
    ci.sign(SECRET, json.dumps(REQUEST))[7:],  # the hex without "sha256="
])
def test_a_bad_signature_is_rejected(signature):
    assert "bad signature" in rejected(webhook(signature=signature))


@pytest.mark.parametrize("signature", [
    "sha256=é" + "0" * 63, "sha256=" + "é" * 64, "sha256=\u202e" + "0" * 63, "sha256=😀",
    "sha256=\x00" + "0" * 63, "sha256=\udc80" + "0" * 63,
    12, 12.5, True, ["sha256=" + "0" * 64], {"sha256": "0"}, b"sha256=00",
])
def test_a_non_ascii_or_non_str_signature_is_rejected_not_a_type_error(signature):
    assert "bad signature" in rejected(webhook(signature=signature))


def test_a_none_signature_is_unsigned():
    event = webhook()
    event["headers"]["X-Pigeon-Signature"] = None
    assert "unsigned" in rejected(event)


@pytest.mark.parametrize("signature", ["sha256=\ud800" + "0" * 63, "sha256=\udfff"])
def test_a_signature_with_a_lone_surrogate_is_rejected(signature):
    # BUG (pigeon_ci._same): "\ud800" is not encodable even with surrogateescape (only
    # U+DC80..U+DCFF are), so str.encode raises UnicodeEncodeError instead of the comparison
    # returning False. _same's docstring promises "a header value of any type or encoding".
    assert "bad signature" in rejected(webhook(signature=signature))


def test_the_signature_covers_the_body():
    event = webhook()
    event["body"] = event["body"].replace("1.4", "6.6")
    assert "bad signature" in rejected(event)


def test_no_secret_refuses_every_webhook():
    for secret in (None, ""):
        assert "webhooks are refused" in rejected(webhook(), secret=secret)


@pytest.mark.parametrize("content_type", ["application/yaml", "application/x-yaml", "text/yaml",
                                          "application/x-www-form-urlencoded", "multipart/form-data",
                                          "text/plain", "application/jsonp", "", None, ...])
def test_other_content_types_are_rejected(content_type):
    message = rejected(webhook(content_type=content_type))
    assert "application/json" in message


def test_content_type_message_is_one_line_whatever_it_quotes():
    message = rejected(webhook(content_type="text/\nevil\u2028" + "x" * 5000))
    assert len(message) < 200


@pytest.mark.parametrize("body", ["app=app&version=1.4", "app: app\nversion: '1.4'", "{", "",
                                  "{'app': 'app'}", '{"app": "app"} x'])
def test_a_body_that_is_not_json_is_rejected(body):
    assert "not JSON" in rejected(webhook(body))


@pytest.mark.parametrize("body", ["[]", json.dumps([REQUEST]), '"app"', "1", "null", "true", "1.5", "NaN"])
def test_a_body_that_is_not_a_json_object_is_rejected(body):
    assert "not a JSON object" in rejected(webhook(body))


def test_a_deeply_nested_body_is_rejected():
    # BUG (pigeon_ci.check): json.loads of 60000 nested arrays (a 60 KB body, under MAX_BODY)
    # raises RecursionError, which is not a ValueError: it is not turned into Rejected, and
    # deploy.ci_event (which catches ValueError) fails with a traceback.
    body = "[" * 30000 + "]" * 30000  # valid JSON, 60000 bytes
    assert len(body) < ci.MAX_BODY
    assert "JSON" in rejected(webhook(body))


def test_a_body_over_max_body_is_rejected():
    body = json.dumps(dict(REQUEST, pad="x" * ci.MAX_BODY))
    assert f"larger than {ci.MAX_BODY}" in rejected(webhook(body))
    # bytes, not characters: 40000 "é" are 80000 bytes
    body = json.dumps(dict(REQUEST, pad="é" * 40000), ensure_ascii=False)
    assert len(body) < ci.MAX_BODY < len(body.encode())
    assert f"larger than {ci.MAX_BODY}" in rejected(webhook(body))


def test_a_body_of_max_body_passes():
    pad = "x" * (ci.MAX_BODY - len(json.dumps(dict(REQUEST, pad=""))))
    body = json.dumps(dict(REQUEST, pad=pad))
    assert len(body.encode()) == ci.MAX_BODY
    assert check(webhook(body))["pad"] == pad
    body = json.dumps(dict(REQUEST, pad=pad + "x"))
    assert f"larger than {ci.MAX_BODY}" in rejected(webhook(body))


@pytest.mark.parametrize("body", [None, b'{"app": "app"}', 12, ["{}"], {"app": "app"}])
def test_a_body_that_is_not_a_string_is_rejected(body):
    event = webhook()
    event["body"] = body
    assert "no body" in rejected(event)


@pytest.mark.parametrize("offset", [-301, 301, -10**6, 10**6, -NOW])
def test_a_timestamp_out_of_the_window_is_rejected(offset):
    body = json.dumps(dict(REQUEST, timestamp=NOW + offset))
    assert "from the master's clock" in rejected(webhook(body))


@pytest.mark.parametrize("offset", [0, -300, 300, -299.5, 1])
def test_a_timestamp_within_the_window_passes(offset):
    body = json.dumps(dict(REQUEST, timestamp=NOW + offset))
    assert check(webhook(body))["timestamp"] == NOW + offset


def test_the_window_is_the_callers():
    body = json.dumps(dict(REQUEST, timestamp=NOW - 50))
    assert "more than 30 s" in rejected(webhook(body), window=30)
    assert check(webhook(body), window=60)["timestamp"] == NOW - 50


def test_a_huge_timestamp_is_rejected():
    # BUG (pigeon_ci.check): abs(now - stamp) with a JSON integer too large for a float
    # (here 10**400) raises OverflowError (not a ValueError) when ``now`` is a float, as
    # deploy.ci_event's time.time() is, instead of Rejected; ci_event then fails with a traceback.
    body = '{"app": "app", "action": "release", "timestamp": 1' + "0" * 400 + "}"
    assert "timestamp" in rejected(webhook(body), now=NOW)  # an int clock: rejected
    assert "timestamp" in rejected(webhook(body), now=NOW + 0.25)  # the master's float clock


def test_timestamps_of_other_types_are_left_to_the_schema():
    # the window is measured on numbers only; the schema refuses the rest afterwards
    for stamp in ("1764662400", True, None):
        body = json.dumps(dict(REQUEST, timestamp=stamp))
        assert check(webhook(body))["timestamp"] == stamp


def test_a_non_mapping_event_is_rejected():
    for event in (None, "body", [webhook()]):
        assert "not a mapping" in rejected(event)


# ---------------------------------------------------------------------------
# events of CI minions
def minion_event(minion="ci-1", **data):
    data = data or {"app": "app", "version": "1.4", "action": "release"}
    return {"id": minion, "data": dict(data, id=minion, tag="pigeon/ci/deploy", cmd="_minion_event",
                                       tok="secret-token", _stamp="2025-12-02T08:00:00", pretag=None)}


def test_a_listed_minions_event_passes_without_salts_keys():
    result = check(minion_event(), "pigeon/ci/deploy", ci_minions=["ci-0", "ci-1"])
    assert result == {"app": "app", "version": "1.4", "action": "release", "via": "minion ci-1"}


def test_a_minions_event_at_top_level_passes():
    event = dict(minion_event()["data"])  # event.send's data, the id beside it
    result = check(event, "pigeon/ci/deploy", ci_minions=("ci-1",))
    assert result == {"app": "app", "version": "1.4", "action": "release", "via": "minion ci-1"}


@pytest.mark.parametrize("minion, listed", [
    ("ci-2", ["ci-1"]), ("ci-1", []), ("ci-1", ()), ("ci", ["ci-1"]), ("ci-1 ", ["ci-1"]),
    ("CI-1", ["ci-1"]), (None, [None]), (["ci-1"], [["ci-1"]]), (1, [1]),
    ("ci-1\nevil", ["ci-1"]), ("x" * 5000, ["ci-1"]),
])
def test_a_minion_not_listed_is_rejected(minion, listed):
    message = rejected(minion_event(minion), "pigeon/ci/deploy", ci_minions=listed)
    assert "not in pigeon_ci_minions" in message and len(message) < 200


def test_a_minion_event_is_not_a_webhook():
    # a minion's event with a body is not checked as a webhook: it stands on the minion's id only
    event = dict(minion_event(), data={"body": "{}", "app": "app"})
    assert "not in pigeon_ci_minions" in rejected(event, "pigeon/ci/deploy", ci_minions=["ci-2"])
    # and a webhook's tag is checked as a webhook, whoever claims to send it
    assert "unsigned" in rejected(dict(minion_event(), body="{}"), ci.WEBHOOK_TAG, ci_minions=["ci-1"])


def test_a_minion_event_whose_data_is_not_a_mapping_is_rejected():
    event = {"id": "ci-1", "data": "app=app"}
    assert "not a mapping" in rejected(event, "pigeon/ci/deploy", ci_minions=["ci-1"])


def test_rejected_is_a_value_error():
    assert issubclass(ci.Rejected, ValueError)
