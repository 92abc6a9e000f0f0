"""
Hostile input (issue 9): every value from outside is refused at one door with one
line (or a rejected event), with no traceback, and changes nothing.

Senders: a holder of the deploy credential calling salt-api directly with its own
token, a webhook sender, a minion firing events, a CLI user, a pillar author.
"Nothing" is checked by comparing, before the first case and after the last: the
registry (stacks and routes of every app), the history of every app, HAProxy's
routes (the file and the running map), the lab's containers, the lock files, and
marker files that an injected command would have created on the minion.

Run alone: .lab/venv/bin/python -m pytest tests/integration/test_adversarial.py
"""

import glob
import hashlib
import hmac
import json
import os
import re
import subprocess
import time
import uuid

import pytest
import requests

from conftest import APP, LAB, REPO

SALT = [str(LAB / "venv/bin/salt"), "-c", str(LAB / "etc/salt")]
SALT_RUN = [str(LAB / "venv/bin/salt-run"), "-c", str(LAB / "etc/salt")]
ROUTES_MAP = "/srv/pigeon/haproxy/etc/maps/routes.map"
MARKER = "/tmp/pigeon-pwned"
TEST_PILLAR = LAB / "pillar" / "test_stacks.sls"

# what an attacker types into every field
CORPUS = [
    f"x\nevil:\n  salt.function:\n    - name: cmd.run\n    - tgt: '*'\n    - arg: ['touch {MARKER}-nl']",
    f"x\n- salt.function:\n    cmd.run",
    f"'; touch {MARKER}-quote; '",
    f"\"; touch {MARKER}-dq; \"",
    f"$(touch {MARKER}-subst)",
    f"{{{{ salt['cmd.run']('touch {MARKER}-jinja') }}}}",
    f"{{% do salt['cmd.run']('touch {MARKER}-jinja2') %}}",
    "../../pillar/lab-minion",
    "../../../../etc/passwd",
    "/etc/passwd",
    "on", "no", "null", "y", "~", "0x1f", "1_000", "123",
    "- a", ": b", "# c", "&a", "*a", "!!python/object/apply:os.system ['id']", "|", ">",
    "", " ", "\x00", "\x1b[31m", "\t", "\r\n", "\u2028", "\u202e", "ünïcödé",
    "x" * 5000,
    "app\n",
]
NOT_STRINGS = [1.0, 1, True, None, [], ["app"], {"a": "b"}]
# a version is any image tag (`on`, `0x1f`, `1.0` are valid ones, kept as strings everywhere):
# the hostile versions are the values that are not tags
BAD_VERSIONS = [v for v in CORPUS if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", v)]


def _one_line(text):
    return "\n" not in text.strip() and "Traceback" not in text


# --------------------------------------------------------------------------------------
# what must not change
def _salt_json(cmd):
    static = ["--static"] if cmd[0].endswith("/salt") else []
    proc = subprocess.run(cmd + ["--out=json"] + static, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def snapshot():
    registry = _salt_json(SALT_RUN + ["stacks.status", "observe=False"])
    history = {}
    for app in sorted(set(registry) | {APP}):
        history[app] = _salt_json(SALT_RUN + ["stacks.history", f"app={app}", "limit=0"])
    containers = subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}} {{.Status}}"],
                                capture_output=True, text=True, check=True).stdout
    runtime = _salt_json(SALT + ["lab-minion", "haproxy_runtime.show_map"])["lab-minion"]
    return {
        "registry": {a: {"stacks": e["stacks"], "routes": e["routes"], "lock": e["lock"]}
                     for a, e in registry.items()},
        "history": history,
        "routes_file": open(ROUTES_MAP, encoding="utf-8").read(),
        "routes_runtime": runtime,
        "containers": sorted(line.split()[0] for line in containers.splitlines()),
        "locks": sorted(os.listdir(LAB / "var/cache/salt/master/pigeon/locks"))
        if (LAB / "var/cache/salt/master/pigeon/locks").exists() else [],
        "markers": sorted(glob.glob(MARKER + "*")),
    }


@pytest.fixture(scope="module")
def before(env, stacks):
    """The world before the first hostile input (an active stack serving)."""
    assert stacks("status", "--app-name", APP).rc == 0
    TEST_PILLAR.unlink(missing_ok=True)
    return snapshot()


TALLY = {"tried": 0, "refused": 0, "tracebacks": 0}


def tally(refused, text):
    TALLY["tried"] += 1
    TALLY["refused"] += bool(refused)
    TALLY["tracebacks"] += "Traceback" in text


# --------------------------------------------------------------------------------------
# salt-api, with the deploy user's own token
class DeployApi:
    def __init__(self, env):
        self.url = env["SALTAPI_URL"]
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.verify = env["REQUESTS_CA_BUNDLE"]
        login = self.session.post(self.url + "login", json={
            "username": env["SALTAPI_USER"], "password": env["SALTAPI_PASS"],
            "eauth": env["SALTAPI_EAUTH"]}, timeout=30)
        login.raise_for_status()
        self.session.headers.update({"X-Auth-Token": login.json()["return"][0]["token"],
                                     "Accept": "application/json"})

    def call(self, low):
        return self.session.post(self.url, json=[low], timeout=120)


@pytest.fixture(scope="module")
def api(env, before):
    return DeployApi(env)


def refused_by_salt_api(response):
    """(refused, text): refused at the ACL (HTTP 401/403) or at the door ({"refused": line}), or
    by the plan (the orchestration's one refused state)."""
    if response.status_code in (400, 401, 403) or (
            response.status_code == 500 and "unexpected error" in response.text):  # no such function
        return True, f"HTTP {response.status_code}"  # salt-api's own page; stacks.py says one line
    text = response.text
    assert response.status_code == 200, text[:300]
    ret = response.json()["return"][0]
    if isinstance(ret, dict) and isinstance(ret.get("refused"), str):
        return True, ret["refused"]
    if isinstance(ret, dict) and isinstance(ret.get("data"), dict):
        steps = next(iter(ret["data"].values()))
        if isinstance(steps, dict) and len(steps) == 1:
            (step,) = steps.values()
            if step.get("result") is False and step.get("__id__", "").endswith("-refused"):
                return True, step["comment"]
    return False, json.dumps(ret)[:500]


def _api_case(api, low):
    response = api.call(low)
    refused, text = refused_by_salt_api(response)
    tally(refused, text)
    assert refused, (low, text)
    assert _one_line(text), (low, text[:500])


@pytest.mark.parametrize("value", CORPUS + NOT_STRINGS, ids=range(len(CORPUS + NOT_STRINGS)))
def test_api_hostile_app(api, value):
    _api_case(api, {"client": "runner", "fun": "deploy.release", "kwarg": {"app": value, "version": "v1"}})


@pytest.mark.parametrize("value", BAD_VERSIONS + NOT_STRINGS, ids=range(len(BAD_VERSIONS + NOT_STRINGS)))
def test_api_hostile_version(api, value):
    _api_case(api, {"client": "runner", "fun": "deploy.deactivate", "kwarg": {"app": APP, "version": value}})


@pytest.mark.parametrize("value", CORPUS + NOT_STRINGS, ids=range(len(CORPUS + NOT_STRINGS)))
def test_api_hostile_history_app(api, value):
    _api_case(api, {"client": "runner", "fun": "stacks.history", "kwarg": {"app": value, "limit": 0}})


STATUS_VALUES = CORPUS[:12] + [v for v in NOT_STRINGS if v is not None]


@pytest.mark.parametrize("value", STATUS_VALUES, ids=range(len(STATUS_VALUES)))
def test_api_hostile_status_app(api, value):
    _api_case(api, {"client": "runner", "fun": "stacks.status", "kwarg": {"app": value}})


@pytest.mark.parametrize("fun, kwarg", [
    ("stacks.logs", {"app": APP, "service": f"web; touch {MARKER}-logs"}),
    ("stacks.logs", {"app": APP, "service": "../../x"}),
    ("stacks.logs", {"app": APP, "tail": -1}),
    ("stacks.logs", {"app": APP, "tail": "5"}),
    ("stacks.logs", {"app": APP, "tail": 10 ** 9}),
    ("stacks.logs", {"app": APP, "version": "../../pillar/x"}),
    ("stacks.logs", {"app": APP, "follow": True}),
    ("stacks.logs", {"app": "../../pillar/x"}),
    ("stacks.logs", {"app": APP, "tgt": "*"}),
    ("stacks.details", {"app": APP, "service": "web"}),
    ("stacks.details", {"app": APP, "version": "1.0\nx"}),
    ("stacks.details", {"app": "{{ pillar }}"}),
    ("stacks.proxy", {"app": APP, "socket": "/etc/shadow"}),
    ("stacks.proxy", {"app": ["app"]}),
    ("deploy.cancel", {"app": APP, "version": "1.0"}),
    ("deploy.cancel", {"app": "../../pillar/x"}),
    ("deploy.cancel", {"app": "ghost"}),
    ("deploy.prune", {"app": APP, "keep_last": -1}),
    ("deploy.prune", {"app": APP, "templates": ["pigeon/base"]}),
    ("deploy.prune", {"app": APP, "keep": ["x"]}),
], ids=range(20))
def test_api_hostile_views(api, fun, kwarg):
    _api_case(api, {"client": "runner", "fun": fun, "kwarg": kwarg})


@pytest.mark.parametrize("kwarg", [
    {"app": APP, "test": True},                                  # takes the lock, never ends
    {"app": APP, "exclude": "pigeon-release-cleanup-state"},     # skips a step
    {"app": APP, "saltenv": "evil"},
    {"app": APP, "pillar_enc": "gpg"},
    {"app": APP, "pillar": {"stacks": {APP: {}}}},
    {"app": APP, "mods": "orch.evil"},
    {"app": APP, "orchestration_jid": "1"},
    {"app": APP, "source": "reactor"},
    {"app": APP, "force": True},                                 # release takes no force
    {"app": APP, "wait": -1},
    {"app": APP, "wait": 10 ** 9},
    {"app": APP, "wait": "5"},
    {"app": APP, "wait": 0.5},
    {"app": APP, "wait": 1e300},
    {"app": APP, "keep_failed": "yes"},
    {"app": APP, "keep_failed": 1},
    {"app": APP, "arg": ["orch.evil"], "kwarg": {}},
    {"app": "on", "__pub_user": "root"},
], ids=range(18))
def test_api_hostile_keywords(api, kwarg):
    _api_case(api, {"client": "runner", "fun": "deploy.release", "kwarg": kwarg})


@pytest.mark.parametrize("fun, kwarg", [
    ("deploy.canary", {"app": APP, "percent": 101}),
    ("deploy.canary", {"app": APP, "percent": -1}),
    ("deploy.canary", {"app": APP, "percent": "10"}),
    ("deploy.canary", {"app": APP, "percent": 10.5}),
    ("deploy.canary", {"app": APP, "percent": True}),
    ("deploy.canary", {"app": APP}),
    ("deploy.canary", {"app": APP, "percent": 10, "bucket": "x"}),
    ("deploy.abort", {"app": APP, "percent": 0}),
    ("deploy.maintenance", {"app": APP, "enable": "on"}),
    ("deploy.maintenance", {"app": APP, "enable": True, "message": "a\nb"}),
    ("deploy.maintenance", {"app": APP, "enable": True, "message": "x" * 201}),
    ("deploy.maintenance", {"app": APP, "enable": True, "message": "\u2028del map x"}),
    ("deploy.maintenance", {"app": APP, "enable": True, "message": "\U0001F600"}),
    ("deploy.maintenance", {"app": APP, "enable": True, "message": ["x"]}),
    ("deploy.maintenance", {"app": APP, "enable": True, "retry_after": 0}),
    ("deploy.maintenance", {"app": APP, "enable": True, "retry_after": "60; del map"}),
    ("deploy.activate", {"app": APP, "bake": -5}),
    ("deploy.activate", {"app": APP, "bake": "20"}),
    ("deploy.activate", {"app": APP, "bake": 10 ** 9}),
], ids=range(19))
def test_api_hostile_traffic_actions(api, fun, kwarg):
    """The traffic actions (canary, abort, maintenance) and activate's bake: refused at the door."""
    _api_case(api, {"client": "runner", "fun": fun, "kwarg": kwarg})


@pytest.mark.parametrize("low", [
    {"client": "runner", "fun": "pigeon_notify.post", "kwarg": {"tag": "pigeon/deploy/app/release"}},
    {"client": "runner", "fun": "haproxy_switch.routes", "kwarg": {"balancers": ["lab-minion"], "routes": {}}},
    {"client": "runner", "fun": "state.orchestrate", "arg": ["orch.release"],
     "kwarg": {"pillar": {"pigeon": {"app": APP}}}},
    {"client": "runner", "fun": "state.orchestrate_show_sls", "arg": ["orch.release"]},
    {"client": "runner", "fun": "state.orchestrate_single", "arg": ["cmd.run", "id"]},
    {"client": "runner", "fun": "state.orchestrate_high", "arg": [{}]},
    {"client": "runner", "fun": "state.orch", "arg": ["orch.release"]},
    {"client": "runner", "fun": "deploy.ci_event", "kwarg": {"event": {}, "tag": "pigeon/ci/deploy"}},
    {"client": "runner", "fun": "stacks.plan", "kwarg": {"app": APP, "action": "release"}},
    {"client": "runner", "fun": "stacks.commit", "kwarg": {"app": APP, "planned": {}}},
    {"client": "runner", "fun": "stacks.abort", "kwarg": {"app": APP, "planned": {}}},
    {"client": "runner", "fun": "jobs.list_jobs"},
    {"client": "runner", "fun": "salt.cmd", "arg": ["cmd.run", "id"]},
    {"client": "runner", "fun": "cache.pillar", "kwarg": {"tgt": "*"}},
    {"client": "runner", "fun": "deploy.releasex", "kwarg": {"app": APP}},
    {"client": "runner", "fun": "deploy.release", "arg": ["orch.evil"]},
    {"client": "runner_async", "fun": "state.orchestrate", "arg": ["orch.release"]},
    {"client": "local", "tgt": "*", "fun": "cmd.run", "arg": [f"touch {MARKER}-local"]},
    {"client": "local_async", "tgt": "*", "fun": "cmd.run", "arg": [f"touch {MARKER}-local"]},
    {"client": "wheel", "fun": "key.list_all"},
    {"client": "ssh", "tgt": "*", "fun": "cmd.run", "arg": ["id"]},
], ids=range(21))
def test_api_outside_the_acl(api, low):
    _api_case(api, low)


# --------------------------------------------------------------------------------------
# webhooks: Pigeon's front on the webhook port
class Events:
    """Listens on the master's event bus (salt-run state.event) for tags matching a glob."""

    def __init__(self, tagmatch, count=1):
        self.proc = subprocess.Popen(SALT_RUN + ["state.event", f"tagmatch={tagmatch}", f"count={count}",
                                                 "--out=quiet"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(2)  # subscribed before anything is fired

    def wait(self, timeout=60):
        out, _ = self.proc.communicate(timeout=timeout)
        return [json.loads(line.partition("\t")[2]) for line in out.splitlines() if "\t" in line]


def hook(env, raw, headers):
    session = requests.Session()
    session.trust_env = False
    return session.post(env["PIGEON_WEBHOOK_URL"], data=raw, headers=headers,
                        verify=env["REQUESTS_CA_BUNDLE"], timeout=30)


def signed(env, raw):
    return "sha256=" + hmac.new(env["PIGEON_WEBHOOK_SECRET"].encode(), raw, hashlib.sha256).hexdigest()


COLLECTED = int(time.time())  # when the bodies below were made; they are re-dated when sent


def body(**fields):
    return dict({"app": APP, "version": "v1", "action": "deactivate", "timestamp": int(time.time()),
                 "nonce": uuid.uuid4().hex}, **fields)


YAML_BOMB = b"a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n" \
            b"d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"


@pytest.mark.parametrize("raw, headers, status", [
    (YAML_BOMB, {"Content-Type": "application/x-yaml"}, 415),
    (YAML_BOMB, {"Content-Type": "text/yaml"}, 415),
    (b"app=app&action=release", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
    (b"{}", {}, 415),
    (b"x" * 70000, {"Content-Type": "application/json"}, 413),
    (b"\xff\xfe{}", {"Content-Type": "application/json"}, 400),
], ids=range(6))
def test_webhook_refused_at_the_front(env, raw, headers, status):
    response = hook(env, raw, headers)
    tally(response.status_code == status, response.text)
    assert response.status_code == status, response.text
    assert _one_line(response.text)


def test_webhook_other_paths_and_methods(env):
    session = requests.Session()
    session.trust_env = False
    base = env["PIGEON_WEBHOOK_URL"].rsplit("/hook/", 1)[0]
    for method, path, status in (("GET", "/hook/pigeon/deploy", 405), ("POST", "/hook/other", 404),
                                 ("POST", "/", 404), ("PUT", "/hook/pigeon/deploy", 405)):
        response = session.request(method, base + path, data=b"{}", verify=env["REQUESTS_CA_BUNDLE"],
                                   headers={"Content-Type": "application/json"}, timeout=30)
        tally(response.status_code == status, response.text)
        assert response.status_code == status, (method, path, response.text)


def test_salt_api_hook_needs_a_token(env):
    # salt-api's own /hook no longer takes unauthenticated bodies (it would parse YAML)
    session = requests.Session()
    session.trust_env = False
    response = session.post(env["SALTAPI_URL"] + "hook/pigeon/deploy", data=YAML_BOMB,
                            headers={"Content-Type": "application/x-yaml"},
                            verify=env["REQUESTS_CA_BUNDLE"], timeout=30)
    tally(response.status_code == 401, response.text)
    assert response.status_code == 401, response.text


REJECTED_WEBHOOKS = [
    ("unsigned", lambda env, raw: {}, body(), "unsigned"),
    ("bad signature", lambda env, raw: {"X-Pigeon-Signature": "sha256=" + "0" * 64}, body(), "bad signature"),
    ("non-ASCII signature", lambda env, raw: {"X-Pigeon-Signature": "sha256=\u00e9\u00e8".encode("latin-1")},
     body(), "bad signature"),
    ("empty signature", lambda env, raw: {"X-Pigeon-Signature": ""}, body(), "bad signature"),
    ("stale", None, body(timestamp=int(time.time()) - 3600), "timestamp"),
    ("future", None, body(timestamp=int(time.time()) + 3600), "timestamp"),
    ("no nonce", None, {k: v for k, v in body().items() if k != "nonce"}, "nonce"),
    ("no timestamp", None, {k: v for k, v in body().items() if k != "timestamp"}, "timestamp"),
    ("bad action", None, body(action="cmd.run"), "action 'cmd.run'"),
    ("unknown key", None, body(pillar={"stacks": {}}), "unknown key 'pillar'"),
    ("yaml-typed app", None, body(app="on"), "app 'on'"),
    ("newline version", None, body(version="v1\nevil: x"), "version"),
    ("traversal app", None, body(app="../../pillar/lab-minion"), "app"),
    ("array", None, [1, 2], "not a JSON object"),
    ("not JSON", None, b"{not json", "not JSON"),
    ("numeric version", None, body(version=1.4), "version 1.4"),
    ("bool timestamp", None, body(timestamp=True), "timestamp"),
    ("short nonce", None, body(nonce="abc"), "nonce"),
]


@pytest.mark.parametrize("name, sign, request_body, reason", REJECTED_WEBHOOKS,
                         ids=[r[0] for r in REJECTED_WEBHOOKS])
def test_webhook_rejected_event(env, name, sign, request_body, reason):
    stamp = request_body.get("timestamp") if isinstance(request_body, dict) else None
    if type(stamp) is int:  # as old at sending as it was when made (stale, future, or now)
        request_body = dict(request_body, timestamp=stamp - COLLECTED + int(time.time()))
    raw = request_body if isinstance(request_body, bytes) else json.dumps(request_body).encode()
    headers = {"Content-Type": "application/json"}
    headers.update(sign(env, raw) if sign else {"X-Pigeon-Signature": signed(env, raw)})
    events = Events("pigeon/deploy/*")
    response = hook(env, raw, headers)
    assert response.status_code == 202, response.text
    [event] = events.wait()
    refused = "reason" in event and reason in event["reason"]
    tally(refused, json.dumps(event))
    assert refused, event
    assert _one_line(event["reason"])


def test_webhook_replay_is_rejected(env):
    # a validly signed body, sent twice: the second time it is a replay. The first passes the
    # door; its action is then refused by the plan (no such app: nothing is recorded)
    raw = json.dumps(body(app="ghost", action="activate")).encode()
    headers = {"Content-Type": "application/json", "X-Pigeon-Signature": signed(env, raw)}
    events = Events("pigeon/deploy/*")
    assert hook(env, raw, headers).status_code == 202
    [first] = events.wait()
    assert "reason" not in first and first["ok"] is False and "unknown app" in first["error"], first
    events = Events("pigeon/deploy/*")
    assert hook(env, raw, headers).status_code == 202
    [second] = events.wait()
    tally("replayed" in second.get("reason", ""), json.dumps(second))
    assert "replayed" in second.get("reason", ""), second


# --------------------------------------------------------------------------------------
# events from minions: lab-minion is not in pigeon_ci_minions
@pytest.mark.parametrize("args", [
    ["app=app", "action=release", "version=v1"],
    ["app=app", "action=release", "version=v1", "id=ci-1"],
    ["with_grains=False", "app=on", "action=release"],
], ids=range(3))
def test_minion_event_rejected(args):
    events = Events("pigeon/deploy/*")
    proc = subprocess.run(SALT + ["lab-minion", "event.send", "pigeon/ci/deploy", *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    [event] = events.wait()
    refused = "not in pigeon_ci_minions" in event.get("reason", "")
    tally(refused, json.dumps(event))
    assert refused, event


# --------------------------------------------------------------------------------------
# the command line
CLI_CASES = [
    (["release", "--app-name", APP, "--version", "v1", "--wait", "nan"], 2, "--wait"),
    (["release", "--app-name", APP, "--version", "v1", "--wait", "inf"], 2, "--wait"),
    (["release", "--app-name", APP, "--version", "v1", "--wait", "0.5"], 2, "--wait"),
    (["release", "--app-name", APP, "--version", "v1", "--wait", "-1"], 2, "--wait"),
    (["release", "--app-name", APP, "--version", "v1", "--wait", "99999"], 2, "--wait"),
    (["status", "--deadline", "0"], 2, "--deadline"),
    (["status", "--deadline", "-1"], 2, "--deadline"),
    (["status", "--deadline", "nan"], 2, "--deadline"),
    (["status", "--deadline", "inf"], 2, "--deadline"),
    (["history", "--app-name", APP, "--limit", "-5"], 2, "--limit"),
    (["release", "--app-name", APP, "--version", "v1", "--force"], 2, "--force"),
    (["activate", "--app-name", APP, "--keep-failed"], 2, "--keep-failed"),
    (["history", "--app-name", "../../pillar/lab-minion", "--limit", "0"], 2, "--app-name"),
    (["status", "--app-name", "../lab.lock"], 2, "--app-name"),
    (["release", "--app-name", "on", "--version", "v1"], 1, "YAML"),
    (["release", "--app-name", APP, "--version", "v1\nevil: x"], 2, "image tag"),
    (["release", "--app-name", APP, "--version", f"$(touch {MARKER}-cli)"], 2, "image tag"),
    (["deactivate", "--app-name", APP, "--version", "../../x"], 2, "image tag"),
    (["release", "--app-name", "app\nx", "--version", "v1"], 2, "--app-name"),
    (["status", "--saltapi-pass-file", "/nonexistent/pass"], 2, "--saltapi-pass-file"),
]


@pytest.mark.parametrize("argv, code, word", CLI_CASES, ids=range(len(CLI_CASES)))
def test_cli_hostile_arguments(stacks, argv, code, word):
    result = stacks(*argv)
    lines = result.err.strip().splitlines()
    ok = result.rc == code and len(lines) == 1 and word in lines[0]
    tally(ok, result.err)
    assert ok, result
    assert "Traceback" not in result.err + result.out


# --------------------------------------------------------------------------------------
# the pillar: a hostile stack definition, written by a pillar author
GOOD = {
    "version": "v1",
    "loadbal": {"target": "lab-minion", "frontend": "www", "backend_port": 8080,
                "default_network": "pigeon", "healthcheck": {"timeout": 30}, "drain_timeout": 5},
    "config": {"target": "lab-minion", "formula": "demoapp"},
    "task_definitions": {"count": 1, "web": {"docker_config": {"image": "pigeon/demoapp",
                                                                "labels": ["register_backend=true"]}}},
}


def _mutate(path, value):
    definition = json.loads(json.dumps(GOOD))
    *parents, last = path
    node = definition
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return definition


PILLAR_CASES = [
    (("loadbal", "healthcheck", "timeout"), "30s", "healthcheck:timeout"),
    (("loadbal", "drain_timeout"), -1, "drain_timeout"),
    (("loadbal", "backend_port"), "http", "backend_port"),
    (("task_definitions", "count"), "many", "count"),
    (("loadbal", "target"), "lab-minion\nevil: x", "loadbal:target"),
    (("config", "target_type"), "evil", "target_type"),
    (("loadbal", "frontend"), "www\nevil", "frontend"),
    (("loadbal", "default_network"), "pigeon; rm -rf /", "default_network"),
    (("config", "formula"), "demoapp\n- evil", "formula"),
    (("loadbal", "healthcheck", "path"), "/healthz\n    server evil 127.0.0.1:1", "healthcheck:path"),
    (("loadbal", "healthcheck", "status"), "200 evil", "healthcheck:status"),
    (("loadbal", "healthcheck", "interval"), "1s\nevil", "healthcheck:interval"),
    (("version",), 1.0, "quote it"),
    (("loadbal",), KeyError, "loadbal is missing"),
    (("loadbal",), "text", "loadbal must be a mapping"),
]


@pytest.mark.parametrize("path, value, word", PILLAR_CASES, ids=range(len(PILLAR_CASES)))
def test_pillar_hostile_definition(stacks, path, value, word):
    import yaml

    TEST_PILLAR.write_text(yaml.safe_dump({"stacks": {"hostile": _mutate(path, value)}}))
    try:
        result = stacks("release", "--app-name", "hostile", "--version", "v1")
    finally:
        TEST_PILLAR.unlink()
    lines = result.err.strip().splitlines()
    ok = result.rc == 1 and len(lines) == 1 and word in lines[0] and "broken pillar" in lines[0] \
        or (result.rc == 1 and len(lines) == 1 and word in lines[0])
    tally(ok, result.err)
    assert ok, result
    assert "Traceback" not in result.err


def test_pillar_app_name_that_yaml_reads_otherwise(stacks):
    TEST_PILLAR.write_text("stacks:\n  'on':\n    version: v1\n")
    try:
        result = stacks("release", "--app-name", "on", "--version", "v1")
    finally:
        TEST_PILLAR.unlink()
    tally(result.rc == 1, result.err)
    assert result.rc == 1 and "YAML" in result.err and len(result.err.strip().splitlines()) == 1, result


# --------------------------------------------------------------------------------------
def test_nothing_changed(before, capsys):
    after = snapshot()
    # the hostile pillar app's refusals are its own history; every other app's is unchanged
    after["history"].pop("hostile", None)
    before["history"].pop("hostile", None)
    assert after == before
    with capsys.disabled():
        print(f"\nadversarial: {TALLY['tried']} hostile inputs tried, {TALLY['refused']} refused, "
              f"0 state changes, {TALLY['tracebacks']} tracebacks")
    assert TALLY["tried"] >= 150 and TALLY["refused"] == TALLY["tried"] and TALLY["tracebacks"] == 0
