"""Unit tests for srv/salt/_utils/pigeon_schema.py (the one door for values from outside)."""

import copy
import math
import pathlib

import pytest
import yaml

from srv_modules import load

schema = load("_utils/pigeon_schema.py", "pigeon_schema_under_test")
Invalid = schema.Invalid

PILLAR = pathlib.Path(__file__).resolve().parents[2] / "srv" / "pillar" / "stacks.sls"

# a good value of every key a request may have
GOOD = {"app": "app", "version": "1.4", "keep_failed": True, "wait": 30, "force": False,
        "observe": False, "limit": 10, "action": "release", "timestamp": 1764662400, "bake": 20,
        "nonce": "5f0c2a9e41d8b7c3a6e1", "dry_run": True, "expect_revision": 7,
        "service": "web", "tail": 50, "keep_last": 2, "proxy": True,
        "job": "20261204031115870025", "percent": 10, "enable": True, "message": "Back at 18:00 — sorry",
        "retry_after": 120}

# values that must reach an error message as data only: the message stays one line
HOSTILE = [
    "a\nb", "\n", "trailing\n", "\r\nx", "x\ry", "a\x0bb", "a\x0cb", "\x1c\x1d\x1e", "a\x85b",
    "a\u2028b", "a\u2029b", "'", '"', "'\"'", "- x", "-", "key: value", ": ", "&a", "*a",
    "!!python/object:os.system", "!!python/object/apply:os.system ['id']", "{{ pillar }}",
    "{% raw %}", "#", "|", ">", "[1, 2]", "{a: b}", "\x00", "a\x00b", "\x1b[31mred\x1b[0m",
    "\u202eevil", "\ufeff", "é", "😀", "x" * 5000, "a\n" * 2500, "../../pillar/x", "/etc/passwd",
    "", " ", "\t", 0.5, -1, 10**9, math.nan, math.inf, -math.inf, True, None, [], ["a\nb"],
    {"a\nb": "c\nd"}, b"bytes\n", ("t\n",), {1, 2},
]


def one_line(text):
    return "\n" not in text and len(text.splitlines()) == 1


def refusal(kind, values):
    with pytest.raises(Invalid) as info:
        schema.check(kind, values)
    message = str(info.value)
    assert one_line(message), message
    return message


def required(kind):
    return {key: GOOD[key] for key, (_, needed) in schema.REQUESTS[kind].items() if needed}


# ---------------------------------------------------------------------------
# requests
@pytest.mark.parametrize("kind", sorted(schema.REQUESTS))
def test_every_key_of_every_kind_is_accepted(kind):
    values = {key: GOOD[key] for key in schema.REQUESTS[kind]}
    assert schema.check(kind, values) == values


@pytest.mark.parametrize("kind", sorted(schema.REQUESTS))
def test_required_keys_only_are_enough(kind):
    assert schema.check(kind, required(kind)) == required(kind)


@pytest.mark.parametrize("kind", sorted(schema.REQUESTS))
def test_an_unknown_key_is_refused_by_name(kind):
    values = dict(required(kind), sneaky=1)
    message = refusal(kind, values)
    assert "unknown key 'sneaky'" in message
    for key in schema.REQUESTS[kind]:
        assert key in message  # what is allowed


@pytest.mark.parametrize("kind, key", [(kind, key) for kind, keys in sorted(schema.REQUESTS.items())
                                       for key, (_, needed) in keys.items() if needed])
def test_a_missing_required_key_is_refused_by_name(kind, key):
    values = required(kind)
    del values[key]
    assert refusal(kind, values) == f"{kind}: {key} is missing"
    values[key] = None  # None is missing too
    assert refusal(kind, values) == f"{kind}: {key} is missing"


def test_optional_keys_given_as_none_are_left_out():
    assert schema.check("release", {"app": "app", "version": None, "wait": None}) == {"app": "app"}


def test_not_a_mapping_is_refused():
    for values in (None, [], "app=app", [("app", "app")]):
        assert "must be a mapping" in refusal("release", values)


def test_whole_floats_are_converted_to_integers():
    checked = schema.check("release", {"app": "app", "wait": 5.0})
    assert checked["wait"] == 5 and type(checked["wait"]) is int
    checked = schema.check("history", {"app": "app", "limit": 500.0})
    assert checked["limit"] == 500 and type(checked["limit"]) is int


def test_bounds_are_inclusive():
    assert schema.check("release", {"app": "app", "wait": 0})["wait"] == 0
    assert schema.check("release", {"app": "app", "wait": schema.MAX_WAIT})["wait"] == schema.MAX_WAIT
    refusal("release", {"app": "app", "wait": schema.MAX_WAIT + 1})
    refusal("history", {"app": "app", "limit": 501})


@pytest.mark.parametrize("flag", ["true", "false", "yes", 1, 0, "1", [True], "True"])
def test_a_flag_must_be_a_boolean(flag):
    message = refusal("release", {"app": "app", "keep_failed": flag})
    assert message.startswith("keep_failed ") and "boolean" in message


@pytest.mark.parametrize("wait", [0.5, math.nan, math.inf, -math.inf, -1, 10**9, "5", "", True,
                                  False, [5], {"s": 5}, 2**64, 1e300])
def test_not_a_wait(wait):
    message = refusal("release", {"app": "app", "wait": wait})
    assert message.startswith("wait ") and f"0 to {schema.MAX_WAIT}" in message


@pytest.mark.parametrize("value", [True, False, "10", 10.5, math.nan])
def test_true_is_not_an_integer(value):
    assert refusal("history", {"app": "app", "limit": value}).startswith("limit ")


@pytest.mark.parametrize("action", ["Release", "release ", "delete", "", True, ["release"], 1])
def test_ci_action_is_one_of_the_actions(action):
    message = refusal("ci", {"action": action, "app": "app"})
    assert message.startswith("action ") and "release, activate, deactivate, rollback" in message


@pytest.mark.parametrize("nonce", ["short", "x" * 65, "a" * 15 + "!", "a" * 16 + "\n", 1234567890123456789])
def test_ci_nonce(nonce):
    assert refusal("ci", {"action": "release", "app": "app", "nonce": nonce}).startswith("nonce ")


def test_ci_timestamp_bounds():
    assert schema.check("ci", {"action": "release", "app": "app", "timestamp": 0})["timestamp"] == 0
    for stamp in (-1, 2**40 + 1, "1764662400", True, 1.5):
        assert refusal("ci", {"action": "release", "app": "app", "timestamp": stamp}).startswith("timestamp ")


# ---------------------------------------------------------------------------
# app names and versions
@pytest.mark.parametrize("app", ["on", "no", "off", "yes", "y", "n", "null", "true", "false",
                                 "0x1f", "1_000", "123", "~", "", "App", "-app", "_app", "a" * 42,
                                 "app\n", "a pp", "app.x", "ápp", "none\x00"])
def test_app_names_yaml_reads_otherwise_or_badly_formed_are_refused(app):
    message = refusal("release", {"app": app})
    assert message.startswith("app ")


@pytest.mark.parametrize("app", ["app", "a", "demo-app", "demo_app2", "a" * 41, "nan", "inf", "yesno"])
def test_app_names_accepted(app):
    assert schema.check("rollback", {"app": app}) == {"app": app}
    assert yaml.safe_load(app) == app  # what the refusals above guard: YAML gives it back as is
    assert schema.check_app(app) == app


@pytest.mark.parametrize("app", ["../../pillar/x", "/etc/passwd", "..", "app/../x", "app/x", "app\\x"])
def test_app_names_cannot_traverse(app):
    refusal("release", {"app": app})
    with pytest.raises(Invalid):
        schema.check_app(app)


@pytest.mark.parametrize("app", [1, 1.0, True, None, ["app"], {"app": 1}, b"app"])
def test_app_names_must_be_strings(app):
    with pytest.raises(Invalid) as info:
        schema.check_app(app)
    assert one_line(str(info.value))


@pytest.mark.parametrize("version", ["1.0\n", "1.0\nevil", "\n1.0", "-1.0", ".1.0", "1" * 129,
                                     "1.0é", "１.0", "1.0 ", "1:0", "1/0", "", "1.0\x00", 1.0, 1, True])
def test_bad_versions_are_refused(version):
    assert refusal("release", {"app": "app", "version": version}).startswith("version ")


@pytest.mark.parametrize("version", ["1.0", "1", "v1.4.2-rc1", "_x", "1" * 128, "latest"])
def test_versions_accepted_as_strings(version):
    checked = schema.check("deactivate", {"app": "app", "version": version})
    assert checked["version"] == version and isinstance(checked["version"], str)


# ---------------------------------------------------------------------------
def test_outside_kwargs_drops_salts_own():
    kwargs = {"app": "app", "__pub_user": "deploy", "__pub_fun": "deploy.release", "__user__": "x",
              "__pub_jid": "1", "version": "1.0"}
    assert schema.outside_kwargs(kwargs) == {"app": "app", "version": "1.0"}
    assert "__pub_user" in kwargs  # the caller's dict is left alone
    # what is dropped never reaches the check: with it, the request would be refused
    refusal("release", kwargs)
    assert schema.check("release", schema.outside_kwargs(kwargs)) == {"app": "app", "version": "1.0"}


def test_outside_kwargs_keeps_other_keys_for_the_check_to_refuse():
    kwargs = {"_pub_user": 1, "pub__": 2, 3: 4, "test": True}
    assert schema.outside_kwargs(kwargs) == kwargs


# ---------------------------------------------------------------------------
# every message is one line, whatever it quotes
@pytest.mark.parametrize("kind, key", [(kind, key) for kind, keys in sorted(schema.REQUESTS.items())
                                       for key in keys])
def test_messages_about_hostile_values_are_one_line(kind, key):
    refused = 0
    for value in HOSTILE:
        values = dict(required(kind), **{key: value})
        try:
            schema.check(kind, values)
        except Invalid as exc:
            refused += 1
            assert one_line(str(exc)), (key, value, str(exc))
            assert len(str(exc)) < 400, (key, value)
        else:
            if (kind, key) == ("maintenance", "message") and value is not None:
                # free text, carried as data (base64 in HAProxy's map): one line, no control character
                assert one_line(value) and len(value) <= 200 and value.isprintable(), value
    if (kind, key) == ("maintenance", "message"):
        assert refused >= 20  # the newlines, control characters, emoji and the too long
    else:
        assert refused >= len(HOSTILE) - 3  # None is "missing" for optional keys, "" a valid nothing


@pytest.mark.parametrize("value", [v for v in HOSTILE if isinstance(v, str)])
def test_messages_about_hostile_unknown_keys_are_one_line(value):
    message = refusal("release", {"app": "app", value: 1})
    assert message.startswith("release: unknown key ")


# ---------------------------------------------------------------------------
# the stacks:<app> pillar
@pytest.fixture
def definition():
    return copy.deepcopy(yaml.safe_load(PILLAR.read_text())["stacks"]["app"])


def broken(definition, app="app"):
    with pytest.raises(Invalid) as info:
        schema.check_definition(app, definition)
    message = str(info.value)
    assert one_line(message), message
    return message


def test_the_lab_pillar_passes(definition):
    assert schema.check_definition("app", definition) is None


def test_the_legacy_task_definition_form_passes(definition):
    definition["task_definition"] = {"count": 2, "services": definition.pop("task_definitions")}
    del definition["task_definition"]["services"]["count"]
    assert schema.check_definition("app", definition) is None


def _set(definition, path, value):
    *parents, last = path.split(".")
    node = definition
    for part in parents:
        node = node[part]
    node[last] = value


@pytest.mark.parametrize("path, value, key", [
    ("loadbal.healthcheck.timeout", "30s", "stacks:app:loadbal:healthcheck:timeout"),
    ("loadbal.healthcheck.timeout", 0, "stacks:app:loadbal:healthcheck:timeout"),
    ("loadbal.drain_timeout", -1, "stacks:app:loadbal:drain_timeout"),
    ("loadbal.backend_port", 70000, "stacks:app:loadbal:backend_port"),
    ("loadbal.backend_port", "8080", "stacks:app:loadbal:backend_port"),
    ("task_definitions.count", "many", "stacks:app:task_definitions:count"),
    ("task_definitions.count", 0, "stacks:app:task_definitions:count"),
    ("loadbal.target", "minion\nevil", "stacks:app:loadbal:target"),
    ("config.target", "minion\nevil", "stacks:app:config:target"),
    ("config.target", "x\x1b", "stacks:app:config:target"),
    ("loadbal.target_type", "evil", "stacks:app:loadbal:target_type"),
    ("config.target_type", "pcre\n", "stacks:app:config:target_type"),
    ("loadbal.frontend", "www\nevil", "stacks:app:loadbal:frontend"),
    ("loadbal.default_network", "pigeon net", "stacks:app:loadbal:default_network"),
    ("config.formula", "demoapp\n- x", "stacks:app:config:formula"),
    ("config.formula", "{{ pillar }}", "stacks:app:config:formula"),
    ("version", "1.0\n", "stacks:app:version"),
    ("version", "-rm", "stacks:app:version"),
    ("loadbal.healthcheck", "30", "stacks:app:loadbal:healthcheck"),
    ("config.health_interval", 0, "stacks:app:config:health_interval"),
    ("config.health_interval", "30s", "stacks:app:config:health_interval"),
    ("config.health_interval", True, "stacks:app:config:health_interval"),
    ("config.health_interval", 3601, "stacks:app:config:health_interval"),
])
def test_hostile_pillar_values_are_refused_naming_the_key(definition, path, value, key):
    _set(definition, path, value)
    message = broken(definition)
    assert message.startswith("broken pillar: ") and key in message


def test_a_health_interval_in_seconds_passes(definition):
    definition["config"]["health_interval"] = 5
    assert schema.check_definition("app", definition) is None


def test_a_float_version_says_quote_it(definition):
    definition["version"] = 1.0  # what `version: 1.0` gives
    message = broken(definition)
    assert "stacks:app:version" in message and "quote it" in message and "'1.0'" in message


@pytest.mark.parametrize("section", ["loadbal", "config"])
def test_a_missing_section_is_refused(definition, section):
    del definition[section]
    assert broken(definition) == f"broken pillar: stacks:app:{section} is missing; see docs/pillar.md"


@pytest.mark.parametrize("path", ["loadbal.target", "loadbal.frontend", "loadbal.default_network",
                                  "config.target"])
def test_a_missing_required_pillar_key_is_refused(definition, path):
    section, key = path.split(".")
    del definition[section][key]
    assert f"stacks:app:{section}:{key} is missing" in broken(definition)


def test_a_hostile_service_name_is_refused(definition):
    definition["task_definitions"]["web\n- evil"] = definition["task_definitions"].pop("web")
    assert "task_definitions service name" in broken(definition)


def test_no_definition_is_an_unknown_app():
    for nothing in (None, [], "app"):
        assert broken(nothing).startswith("unknown app 'app'")


PILLAR_PATHS = ["loadbal.target", "loadbal.target_type", "loadbal.frontend", "loadbal.default_network",
                "loadbal.healthcheck.timeout", "loadbal.drain_timeout", "loadbal.backend_port",
                "loadbal.healthcheck", "config.target", "config.target_type", "config.formula",
                "version", "task_definitions.count", "task_definitions", "loadbal", "config"]


@pytest.mark.parametrize("path", PILLAR_PATHS)
def test_pillar_messages_about_hostile_values_are_one_line(definition, path):
    refused = 0
    for value in HOSTILE:
        mutated = copy.deepcopy(definition)
        _set(mutated, path, value)
        try:
            schema.check_definition("app", mutated)
        except Invalid as exc:
            refused += 1
            assert one_line(str(exc)), (path, value, str(exc))
        except Exception as exc:  # pragma: no cover - the failure shown
            pytest.fail(f"{path}={value!r}: {type(exc).__name__}: {exc}")
    assert refused >= len(HOSTILE) // 2
