"""
Unit tests for stacks.py, the command line client of salt-api.

The salt-api side is FakeSaltApi: a real HTTP server (http.server, plain http
on 127.0.0.1, an ephemeral port) in a thread, answering /login and / like
rest_cherrypy does, with canned state.orchestrate returns shaped like the ones
the master gives for the orch.* SLS files.
"""

import copy
import http.server
import json
import pathlib
import socket
import sys
import threading
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import stacks  # noqa: E402  pylint: disable=wrong-import-position

ENV_VARS = ("SALTAPI_URL", "SALTAPI_USER", "SALTAPI_PASS", "SALTAPI_EAUTH", "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE", "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
            "all_proxy", "ALL_PROXY")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No salt-api settings or proxies from the environment of whoever runs the tests."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


# ---------------------------------------------------------------------------
# canned orchestration returns
MASTER = "lab"
MINION = "lab-minion"


def _step(sid, run_num, kind="runner", name=None, result=True, comment=None, changes=None,
          duration=100.0, module="salt"):
    """One state's return in an orchestration, keyed the way Salt keys it."""
    name = name or sid
    if comment is None:
        comment = {"runner": f"Runner function '{name}' executed.",
                   "function": f"Function ran successfully. Function {name} ran on {MINION}.",
                   "state": f"States ran successfully. Updating {MINION}."}.get(kind, "Success!")
    value = {"name": name, "result": result, "comment": comment, "changes": changes or {},
             "__run_num__": run_num, "__id__": sid, "__sls__": "orch.release",
             "start_time": "12:00:00.000000", "duration": duration}
    return f"{module}_|-{sid}_|-{name}_|-{kind}", value


def _skipped(sid, run_num, name=None, kind="state"):
    key, value = _step(sid, run_num, kind=kind, name=name,
                       comment="State was not run because none of the onfail reqs changed",
                       duration=0.01)
    value["__state_ran__"] = False
    return key, value


def _requisite_failed(sid, run_num, name=None, kind="runner", failed="pigeon-release-health-function"):
    key, value = _step(sid, run_num, kind=kind, name=name, result=False,
                       comment=f"One or more requisite failed: orch.release.{failed}", duration=0.02)
    value["__state_ran__"] = False
    return key, value


def _orch(*steps, retcode=0):
    return {"data": {MASTER: dict(steps)}, "outputter": "highstate", "retcode": retcode}


COMMIT_RETURN = {"app": "app", "version": "1.0", "message": "app 1.0 released in slot b",
                 "generation": 4}


def success_payload(commit_return=None):
    return _orch(
        _step("pigeon-release-lock-runner", 0, name="stacks.lock", duration=300.0,
              changes={"return": {"locked": "app", "by": "pigeon", "owner": "m:1:2"}}),
        _step("pigeon-release-containers-state", 1, kind="state", duration=4200.0,
              changes={"ret": {MINION: {"docker_container_|-app-1.0-web-1_|-app-1.0-web-1_|-running": {
                  "result": True, "comment": "Created container", "__run_num__": 0, "changes": {"added": 1}}}},
                  "out": "highstate"}),
        _step("pigeon-release-health-function", 2, kind="function", name="haproxy_runtime.wait_up",
              duration=2500.0, changes={"ret": {MINION: {"backend": "app_b", "up": 2}}}),
        _step("pigeon-release-routes-function", 3, kind="function", name="haproxy_runtime.set_routes",
              duration=50.0, changes={"ret": {MINION: {"app/internal": "app_b"}}}),
        _skipped("pigeon-release-cleanup-state", 4),
        _step("pigeon-release-commit-runner", 5, name="stacks.commit", duration=20.0,
              changes={"return": commit_return or COMMIT_RETURN}),
        _skipped("pigeon-release-abort-runner", 6, name="stacks.abort", kind="runner"),
    )


HEALTH_ERROR = "backend app_b: 1 of 2 servers UP after 60 s (app-1.0-web-2: L7STS/500)"


def health_failure_payload():
    return _orch(
        _step("pigeon-release-lock-runner", 0, name="stacks.lock", changes={"return": {"locked": "app"}}),
        _step("pigeon-release-containers-state", 1, kind="state"),
        _step("pigeon-release-health-function", 2, kind="function", name="haproxy_runtime.wait_up",
              result=False, duration=60012.5,
              comment=f"Run failed on minions: {MINION}\nFailures:\n    {MINION}:\n        ERROR: {HEALTH_ERROR}",
              changes={"ret": {MINION: f"ERROR: {HEALTH_ERROR}"}}),
        _requisite_failed("pigeon-release-routes-function", 3, name="haproxy_runtime.set_routes", kind="function"),
        _step("pigeon-release-cleanup-state", 4, kind="state", changes={"ret": {MINION: {}}}),
        _requisite_failed("pigeon-release-commit-runner", 5, name="stacks.commit"),
        _step("pigeon-release-abort-runner", 6, name="stacks.abort", changes={"return": {"aborted": "app"}}),
        retcode=1,
    )


REFUSAL = ("app 1.0 is already active; release a new version, or deactivate it first")


def refused_payload():
    return _orch(
        _step("pigeon-release-refused", 0, kind="configurable_test_state", module="test",
              name="release refused", result=False, comment=REFUSAL, duration=0.5),
        retcode=1,
    )


# ---------------------------------------------------------------------------
# orchestration_outcome
def test_outcome_success():
    out = stacks.orchestration_outcome(success_payload())
    assert out["ok"] is True
    assert out["error"] is None
    assert out["result"] == COMMIT_RETURN
    assert [s["step"] for s in out["steps"]] == [
        "lock", "containers", "health", "routes", "cleanup", "commit", "abort"]
    assert [s["skipped"] for s in out["steps"]] == [False, False, False, False, True, False, True]
    assert all(s["result"] is True for s in out["steps"])
    assert out["steps"][0] == {"step": "lock", "result": True, "skipped": False,
                               "comment": "Runner function 'stacks.lock' executed.", "duration_ms": 300.0}
    assert out["steps"][2]["duration_ms"] == 2500.0
    assert "raw" not in out["steps"][0]
    assert not out.get("refused")


def test_outcome_steps_follow_run_num_not_dict_order():
    ret = success_payload()
    ret["data"][MASTER] = dict(reversed(list(ret["data"][MASTER].items())))
    out = stacks.orchestration_outcome(ret)
    assert [s["step"] for s in out["steps"]] == [
        "lock", "containers", "health", "routes", "cleanup", "commit", "abort"]


def test_outcome_step_name_from_key_without_id():
    ret = success_payload()
    for value in ret["data"][MASTER].values():
        del value["__id__"]
    out = stacks.orchestration_outcome(ret)
    assert [s["step"] for s in out["steps"]][:3] == ["lock", "containers", "health"]


@pytest.mark.parametrize("sid, name", [
    ("pigeon-release-health-function", "health"),
    ("pigeon-activate-gate-function", "gate"),
    ("pigeon-deactivate-drain-1.0-function", "drain-1.0"),
    ("pigeon-release-containers-state", "containers"),
    ("pigeon-rollback-commit-runner", "commit"),
    ("pigeon-release-refused", "pigeon-release-refused"),
    ("something-else", "something-else"),
    (None, "?"),
])
def test_step_name(sid, name):
    assert stacks.step_name(sid) == name


def test_outcome_nonzero_retcode_without_failed_step():
    ret = success_payload()
    ret["retcode"] = 2
    out = stacks.orchestration_outcome(ret)
    assert out["ok"] is False
    assert out["error"] == "the orchestration returned retcode 2; see the master's log"


def test_outcome_refused():
    out = stacks.orchestration_outcome(refused_payload())
    assert out["ok"] is False
    assert out["refused"] is True
    assert out["error"] == REFUSAL
    assert out["steps"] == []
    assert out["result"] is None


def test_outcome_lock_held_by_another_action():
    message = "app is locked by release 2.0 of alice since 2024-05-01T12:00:00Z; try again when it ends"
    ret = _orch(
        _step("pigeon-release-lock-runner", 0, name="stacks.lock", result=False,
              comment="Runner function 'stacks.lock' failed.", changes={"return": {"Error": message}}),
        _requisite_failed("pigeon-release-containers-state", 1, kind="state",
                          failed="pigeon-release-lock-runner"),
        _requisite_failed("pigeon-release-commit-runner", 2, name="stacks.commit",
                          failed="pigeon-release-lock-runner"),
        _step("pigeon-release-abort-runner", 3, name="stacks.abort"),
        retcode=1,
    )
    out = stacks.orchestration_outcome(ret)
    assert out["ok"] is False
    assert message in out["error"]
    # nothing ran: reported like a refusal, with the runner's own message
    assert out.get("refused") is True
    assert out["error"] == message


def test_outcome_runner_step_error():
    message = "app: this orchestration does not hold the lock; nothing recorded"
    ret = _orch(
        _step("pigeon-release-lock-runner", 0, name="stacks.lock"),
        _step("pigeon-release-commit-runner", 1, name="stacks.commit", result=False,
              comment="Runner function 'stacks.commit' failed.", changes={"return": {"Error": message}}),
        _step("pigeon-release-abort-runner", 2, name="stacks.abort"),
        retcode=1,
    )
    out = stacks.orchestration_outcome(ret)
    assert out["ok"] is False
    assert out["error"] == f"step commit failed: {message}"
    assert not out.get("refused")
    assert [s["result"] for s in out["steps"]] == [True, False, True]


def test_outcome_function_failure():
    out = stacks.orchestration_outcome(health_failure_payload())
    assert out["ok"] is False
    assert out["error"] == f"step health failed: {MINION}: {HEALTH_ERROR}"
    assert out["result"] is None
    assert [(s["step"], s["result"]) for s in out["steps"]] == [
        ("lock", True), ("containers", True), ("health", False), ("routes", False),
        ("cleanup", True), ("commit", False), ("abort", True)]
    assert out["steps"][2]["comment"].startswith("Run failed on minions: lab-minion\nFailures:")


def test_outcome_requisite_failure_is_never_the_reported_step():
    ret = health_failure_payload()
    # even when a requisite failure comes first in the run order
    for value in ret["data"][MASTER].values():
        if value["__id__"] == "pigeon-release-routes-function":
            value["__run_num__"] = 1
        elif value["__id__"] == "pigeon-release-containers-state":
            value["__run_num__"] = 3
    out = stacks.orchestration_outcome(ret)
    assert out["steps"][1]["step"] == "routes" and out["steps"][1]["result"] is False
    assert out["error"] == f"step health failed: {MINION}: {HEALTH_ERROR}"
    assert "requisite" not in out["error"]


def test_outcome_function_failure_from_comment_only():
    ret = _orch(
        _step("pigeon-release-lock-runner", 0, name="stacks.lock"),
        _step("pigeon-release-health-function", 1, kind="function", name="haproxy_runtime.wait_up",
              result=False, comment="No minions matched the target. No command was sent, no jid was assigned."),
        retcode=1,
    )
    out = stacks.orchestration_outcome(ret)
    assert out["error"] == ("step health failed: No minions matched the target. No command was sent, "
                            "no jid was assigned.; is the minion up? (salt-run manage.status)")


def test_outcome_function_failure_without_minion_return():
    # no usable changes.ret (minion answered True/None): the ERROR line of the comment
    ret = _orch(
        _step("pigeon-release-health-function", 0, kind="function", name="haproxy_runtime.wait_up",
              result=False, changes={"ret": {MINION: True, "other-minion": None}},
              comment=f"Run failed on minions: {MINION}\nFailures:\n    {MINION}:\n        ERROR: {HEALTH_ERROR}\n"),
        retcode=1,
    )
    out = stacks.orchestration_outcome(ret)
    assert out["error"] == f"step health failed: {HEALTH_ERROR}"


def test_outcome_state_failure():
    ret = _orch(
        _step("pigeon-release-lock-runner", 0, name="stacks.lock"),
        _step("pigeon-release-containers-state", 1, kind="state", result=False,
              comment=f"Run failed on minions: {MINION}\nFailures:\n----------\n          ID: x\n    Function: docker_container.running",
              changes={"out": "highstate", "ret": {MINION: {
                  "docker_network_|-net_|-pigeon-app-1.0_|-present": {
                      "result": True, "comment": "Network created", "__run_num__": 0},
                  "docker_container_|-w_|-app-1.0-worker-1_|-running": {
                      "result": False, "comment": "One or more requisite failed: stacks.running.x",
                      "__run_num__": 1},
                  # the minion's states come in no particular order: __run_num__ tells
                  "docker_container_|-z_|-z_|-running": {
                      "result": False, "comment": "Failed to start container 'z'", "__run_num__": 4},
                  "docker_container_|-x_|-y_|-running": {
                      "result": False, "__run_num__": 3,
                      "comment": "Failed to start container 'y': port 8080 is already allocated\nmore detail"},
              }}}),
        _requisite_failed("pigeon-release-health-function", 2, kind="function",
                          failed="pigeon-release-containers-state"),
        retcode=1,
    )
    out = stacks.orchestration_outcome(ret)
    assert out["ok"] is False
    assert out["error"] == (f"step containers failed: {MINION}: "
                            "Failed to start container 'y': port 8080 is already allocated")


def test_outcome_render_error():
    ret = {"data": {MASTER: ["Rendering SLS 'base:orch.release' failed: Jinja variable 'dict object' "
                             "has no attribute 'start'\n/srv/salt/orch/release.sls(22):\n---\n..."]},
           "outputter": "highstate", "retcode": 1}
    out = stacks.orchestration_outcome(ret)
    assert out["ok"] is False
    assert out["steps"] == []
    assert out["result"] is None
    assert out["error"] == ("the orchestration could not be rendered: Jinja variable 'dict object' has no "
                            "attribute 'start'; check the pillar (salt-run pillar.show_pillar) and the "
                            "master's log")


@pytest.mark.parametrize("ret, shown", [
    ("'state.orchestrate' is not available.", "'state.orchestrate' is not available."),
    (None, "null"),
    (["a", "b"], '["a", "b"]'),
    ({"return": "no data key"}, '{"return": "no data key"}'),
    ("ERROR: something broke\nTraceback ...", "something broke"),
])
def test_outcome_not_an_orchestration(ret, shown):
    out = stacks.orchestration_outcome(ret)
    assert out["ok"] is False
    assert out["steps"] == []
    assert out["result"] is None
    assert out["error"] == f"unexpected answer from the master: {shown}"


# ---------------------------------------------------------------------------
# parse_args
def _usage_error(capsys, argv, *needles):
    with pytest.raises(SystemExit) as info:
        stacks.parse_args(argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("stacks.py: ")
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def test_parse_args_action_first():
    args = stacks.parse_args(["release", "--app-name", "a", "--version", "1"])
    assert (args.command, args.app, args.version) == ("release", "a", "1")
    assert args.force is False and args.json is False and args.wait == 0
    assert args.saltapi_url is None and args.saltapi_eauth == "auto" and args.timeout == 600


def test_parse_args_original_form():
    args = stacks.parse_args(["--app-name", "a", "--version", "1", "--action", "release"])
    assert (args.command, args.app, args.version) == ("release", "a", "1")


def test_parse_args_both_forms_agreeing_and_short_flags():
    args = stacks.parse_args(["deactivate", "-a", "shop", "-V", "2.0", "--action", "deactivate", "--force"])
    assert (args.command, args.app, args.version, args.force) == ("deactivate", "shop", "2.0", True)


@pytest.mark.parametrize("argv", [["activate", "--app-name", "a"], ["rollback", "-a", "a"],
                                  ["status"], ["status", "--app-name", "a", "--json"],
                                  ["history", "-a", "a", "--limit", "5"]])
def test_parse_args_accepts(argv):
    args = stacks.parse_args(argv)
    assert args.command == argv[0]


def test_parse_args_disagreement(capsys):
    _usage_error(capsys, ["release", "--app-name", "a", "--version", "1", "--action", "activate"],
                 "ACTION release and --action activate disagree")


@pytest.mark.parametrize("argv, needle", [
    (["release", "--version", "1"], "release needs --app-name"),
    (["--action", "activate"], "activate needs --app-name"),
    (["history"], "history needs --app-name"),
    (["deactivate", "--app-name", "a"], "deactivate needs --version"),
    (["--app-name", "a", "--version", "1"], "name an ACTION"),
    ([], "name an ACTION"),
    (["deploy", "--app-name", "a"], "invalid choice: 'deploy'"),
    (["--action", "status"], "invalid choice: 'status'"),
    (["release", "--app-name", "a", "--bogus"], "unrecognized arguments: --bogus"),
    (["release", "--app-name"], "expected one argument"),
    (["release", "-a", "a", "--wait", "soon"], "--wait"),
])
def test_parse_args_usage_errors(capsys, argv, needle):
    line = _usage_error(capsys, argv, needle)
    assert line.endswith("(see ./stacks.py --help)")


def test_parse_args_env_defaults(monkeypatch):
    monkeypatch.setenv("SALTAPI_URL", "https://salt.example:8000")
    monkeypatch.setenv("SALTAPI_USER", "deployer")
    monkeypatch.setenv("SALTAPI_PASS", "s3cret")
    monkeypatch.setenv("SALTAPI_EAUTH", "pam")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/pigeon/ca.pem")
    args = stacks.parse_args(["status"])
    assert args.saltapi_url == "https://salt.example:8000"
    assert args.saltapi_user == "deployer"
    assert args.saltapi_pass == "s3cret"
    assert args.saltapi_eauth == "pam"
    assert args.ca_file == "/etc/pigeon/ca.pem"


def test_parse_args_flags_override_env(monkeypatch):
    monkeypatch.setenv("SALTAPI_URL", "https://salt.example:8000")
    monkeypatch.setenv("SALTAPI_USER", "deployer")
    monkeypatch.setenv("SALTAPI_PASS", "s3cret")
    monkeypatch.setenv("SALTAPI_EAUTH", "pam")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/pigeon/ca.pem")
    args = stacks.parse_args(["status", "--saltapi-url", "https://other:8000", "--saltapi-user", "bob",
                              "--saltapi-pass", "pw", "--saltapi-eauth", "sharedsecret",
                              "--ca-file", "/tmp/ca.pem", "--timeout", "5"])
    assert args.saltapi_url == "https://other:8000"
    assert args.saltapi_user == "bob"
    assert args.saltapi_pass == "pw"
    assert args.saltapi_eauth == "sharedsecret"
    assert args.ca_file == "/tmp/ca.pem"
    assert args.timeout == 5.0


def test_make_client_verify(monkeypatch):
    base = ["status", "--saltapi-url", "https://salt:8000/"]
    assert stacks.make_client(stacks.parse_args(base)).verify is True
    assert stacks.make_client(stacks.parse_args(base + ["--ca-file", "/x/ca.pem"])).verify == "/x/ca.pem"
    assert stacks.make_client(stacks.parse_args(base + ["--ca-file", "/x/ca.pem", "--insecure"])).verify is False
    assert stacks.make_client(stacks.parse_args(base)).url == "https://salt:8000"


# ---------------------------------------------------------------------------
# a fake salt-api
class FakeSaltApi:
    """rest_cherrypy's /login and / (low-state runs), plain http on an ephemeral port."""

    PASSWORD = "secret"
    TOKEN = "t"

    def __init__(self):
        self.reset()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, code, body, content_type="application/json"):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                body = json.loads(raw) if raw else None
                fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if self.path == "/login":
                    if isinstance(body, dict) and body.get("password") == fake.PASSWORD:
                        self._send(200, {"return": [{"token": fake.TOKEN, "user": body.get("username"),
                                                     "eauth": body.get("eauth"), "perms": ["@runner"],
                                                     "start": time.time(), "expire": time.time() + 43200}]})
                    else:
                        self._send(401, b"<html><body>401 Unauthorized</body></html>", "text/html")
                elif self.path == "/":
                    if self.headers.get("X-Auth-Token") != fake.TOKEN:
                        self._send(401, b"<html><body>401 Unauthorized</body></html>", "text/html")
                    elif isinstance(body, list) and body and body[0].get("client") == "runner_async":
                        # a master without runner_async: stacks.py falls back to the runner client
                        self._send(400, b"<html><body>400 Bad Request: Client disabled</body></html>",
                                   "text/html")
                    elif fake.not_json:
                        self._send(200, b"<html><body>500 Internal Server Error</body></html>", "text/html")
                    else:
                        self._send(200, {"return": [copy.deepcopy(fake.payload)]})
                else:
                    self._send(404, b"not found", "text/plain")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def reset(self):
        self.payload = success_payload()
        self.not_json = False
        self.requests = []

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=2)


@pytest.fixture(scope="module")
def _server():
    fake = FakeSaltApi()
    yield fake
    fake.close()


@pytest.fixture
def api(_server):
    _server.reset()
    return _server


@pytest.fixture
def closed_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def _client(url, password=FakeSaltApi.PASSWORD):
    return stacks.SaltApi(url, "deployer", password, "pam", timeout=5)


def test_saltapi_login_and_runner(api):
    client = _client(api.url + "/")
    assert client.url == api.url
    ret = client.runner("state.orchestrate", arg=["orch.release"],
                        kwarg={"pillar": {"pigeon": {"app": "app", "version": "1.0"}}})
    assert ret == success_payload()
    assert client.token == "t"
    login, run = api.requests
    assert login["path"] == "/login"
    assert login["body"] == {"username": "deployer", "password": "secret", "eauth": "pam"}
    assert run["path"] == "/"
    assert run["headers"]["X-Auth-Token"] == "t"
    assert run["headers"]["Accept"] == "application/json"
    assert run["body"] == [{"client": "runner", "fun": "state.orchestrate", "arg": ["orch.release"],
                            "kwarg": {"pillar": {"pigeon": {"app": "app", "version": "1.0"}}}}]
    # logged in once: a second run reuses the token
    client.runner("stacks.status")
    assert [r["path"] for r in api.requests] == ["/login", "/", "/"]
    assert api.requests[2]["body"] == [{"client": "runner", "fun": "stacks.status", "arg": [], "kwarg": {}}]


def test_saltapi_wrong_password(api):
    with pytest.raises(stacks.StacksError) as info:
        _client(api.url, password="wrong").runner("stacks.status")
    assert info.value.code == 3
    assert "refused the credentials" in str(info.value)
    assert "'deployer'" in str(info.value) and "pam" in str(info.value)
    assert [r["path"] for r in api.requests] == ["/login"]


def test_saltapi_unreachable(closed_port):
    url = f"http://127.0.0.1:{closed_port}"
    with pytest.raises(stacks.StacksError) as info:
        _client(url).runner("stacks.status")
    assert info.value.code == 3
    assert str(info.value).startswith(f"cannot reach salt-api at {url} (connection refused)")


def test_saltapi_not_json(api):
    api.not_json = True
    with pytest.raises(stacks.StacksError) as info:
        _client(api.url).runner("stacks.status")
    assert info.value.code == 3
    assert str(info.value) == "salt-api answered something that is not JSON on /"


def test_saltapi_http_error(api):
    with pytest.raises(stacks.StacksError) as info:
        _client(api.url)._post("/nowhere", {})
    assert info.value.code == 3
    assert str(info.value) == "salt-api answered HTTP 404 on /nowhere: not found"


def test_saltapi_needs_url_and_credentials():
    with pytest.raises(stacks.StacksError) as info:
        stacks.SaltApi("", "u", "p")
    assert info.value.code == 2 and "SALTAPI_URL" in str(info.value)
    with pytest.raises(stacks.StacksError) as info:
        stacks.SaltApi("http://127.0.0.1:9", None, "p").login()
    assert info.value.code == 2 and "SALTAPI_USER" in str(info.value)


# ---------------------------------------------------------------------------
# main, end to end against the fake salt-api
def _argv(api, *extra, action=("release", "--app-name", "app", "--version", "1.0")):
    return [*action, "--saltapi-url", api.url, "--saltapi-user", "deployer",
            "--saltapi-pass", FakeSaltApi.PASSWORD, "--timeout", "5", *extra]


def test_main_success(api, capsys):
    assert stacks.main(_argv(api)) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = captured.out.splitlines()
    assert lines[0] == f"release app 1.0 through {api.url}"
    assert lines[-2] == "app 1.0 released in slot b"
    assert lines[-1].startswith("Finished release app 1.0 in ")
    assert lines[-1].endswith(" s")
    step_lines = [ln.split() for ln in lines[1:-2]]
    # skipped steps (cleanup, abort) are not shown
    assert step_lines == [["lock", "ok", "0.3", "s"], ["containers", "ok", "4.2", "s"],
                          ["health", "ok", "2.5", "s"], ["routes", "ok", "0.1", "s"],
                          ["commit", "ok", "0.0", "s"]]
    run = api.requests[-1]
    assert run["body"] == [{"client": "runner", "fun": "state.orchestrate", "arg": ["orch.release"],
                            "kwarg": {"pillar": {"pigeon": {"app": "app", "version": "1.0", "source": "cli"}}}}]


def test_main_settings_from_env_and_pillar_flags(api, capsys, monkeypatch):
    monkeypatch.setenv("SALTAPI_URL", api.url)
    monkeypatch.setenv("SALTAPI_USER", "deployer")
    monkeypatch.setenv("SALTAPI_PASS", FakeSaltApi.PASSWORD)
    api.payload = success_payload({"app": "app", "version": "2.0", "message": "app 2.0 is active; 1.0 is inactive"})
    assert stacks.main(["--app-name", "app", "--action", "activate", "--wait", "30", "--keep-failed", "-q"]) == 0
    assert capsys.readouterr().out == ""
    pillar = api.requests[-1]["body"][0]["kwarg"]["pillar"]["pigeon"]
    assert pillar == {"app": "app", "source": "cli", "wait": 30, "keep_failed": True}
    assert api.requests[-1]["body"][0]["arg"] == ["orch.activate"]
    assert api.requests[0]["body"]["eauth"] == "auto"


def test_main_reports_the_version_the_orchestration_chose(api, capsys):
    api.payload = success_payload({"app": "app", "version": "2.0", "message": "app 2.0 is active"})
    assert stacks.main(_argv(api, action=("activate", "--app-name", "app"))) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"activate app through {api.url}"
    assert lines[-1].startswith("Finished activate app 2.0 in ")


def test_main_failed_orchestration(api, capsys):
    api.payload = health_failure_payload()
    assert stacks.main(_argv(api)) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"stacks.py: release app 1.0 failed: step health failed: {MINION}: {HEALTH_ERROR}"]
    assert "Finished" not in captured.out
    assert [ln.split()[:2] for ln in captured.out.splitlines()[1:]] == [
        ["lock", "ok"], ["containers", "ok"], ["health", "FAILED"], ["routes", "FAILED"],
        ["cleanup", "ok"], ["commit", "FAILED"], ["abort", "ok"]]


def test_main_refused(api, capsys):
    api.payload = refused_payload()
    assert stacks.main(_argv(api)) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"stacks.py: release app 1.0 refused: {REFUSAL}"]


def test_main_wrong_password(api, capsys):
    argv = _argv(api)
    argv[argv.index("--saltapi-pass") + 1] = "wrong"
    assert stacks.main(argv) == 3
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "refused the credentials" in err[0]


def test_main_unreachable(closed_port, capsys):
    assert stacks.main(["status", "--saltapi-url", f"http://127.0.0.1:{closed_port}",
                        "--saltapi-user", "u", "--saltapi-pass", "p", "--timeout", "5"]) == 3
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("stacks.py: cannot reach salt-api")


def test_main_without_url(capsys):
    assert stacks.main(["status"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "no salt-api URL" in err[0]


JSON_KEYS = {"action", "app", "version", "ok", "error", "seconds", "steps"}


def test_main_json_success(api, capsys):
    assert stacks.main(_argv(api, "--json")) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    doc = json.loads(captured.out)
    assert JSON_KEYS <= set(doc)
    assert (doc["action"], doc["app"], doc["version"], doc["ok"], doc["error"]) == (
        "release", "app", "1.0", True, None)
    assert isinstance(doc["seconds"], float) and 0 <= doc["seconds"] < 3
    assert doc["result"] == COMMIT_RETURN
    assert [s["step"] for s in doc["steps"]] == ["lock", "containers", "health", "routes", "cleanup",
                                                 "commit", "abort"]
    assert set(doc["steps"][0]) == {"step", "result", "comment", "duration_ms"}


def test_main_json_failure(api, capsys):
    api.payload = health_failure_payload()
    assert stacks.main(_argv(api, "--json")) == 1
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert JSON_KEYS <= set(doc)
    assert doc["ok"] is False
    assert (doc["action"], doc["app"], doc["version"]) == ("release", "app", "1.0")
    assert doc["error"] == f"release app 1.0 failed: step health failed: {MINION}: {HEALTH_ERROR}"
    assert [(s["step"], s["result"]) for s in doc["steps"]][2] == ("health", False)
    assert len(captured.err.splitlines()) == 1


def test_outcome_names_the_leftovers_a_release_removed():
    ret = success_payload()
    steps = next(iter(ret["data"].values()))
    key = next(k for k in steps if "containers" in k)
    steps[key]["changes"] = {"ret": {"lab-minion": {
        "docker_container_|-stacks-running-leftover-doomed-1-docker-container-absent_|-app-doomed-1-web-1_|-absent":
            {"result": True, "changes": {"removed": ["abc"]}, "comment": "", "__run_num__": 0},
        "docker_container_|-stacks-running-leftover-quiet-docker-container-absent_|-x_|-absent":
            {"result": True, "changes": {}, "comment": "", "__run_num__": 1},
    }}}
    outcome = stacks.orchestration_outcome(ret)
    assert outcome["ok"] is True
    assert outcome["cleaned"] == ["doomed-1"]


def test_connect_timeout_is_unreachable_not_deadline(monkeypatch):
    api = stacks.SaltApi("https://salt.invalid:8000", "u", "p", timeout=5)

    def refuse(*args, **kwargs):
        raise stacks.requests.exceptions.ConnectTimeout("connect timed out")

    monkeypatch.setattr(api.session, "post", refuse)
    with pytest.raises(stacks.StacksError) as error:
        api.login()
    assert error.value.code == stacks.EXIT_API
    assert "cannot reach salt-api" in str(error.value)


# ---------------------------------------------------------------------------
# the token cache
@pytest.fixture(autouse=True)
def _no_token_cache(monkeypatch):
    """main() would keep tokens in ~/.cache: unit tests keep none unless they ask for one."""
    monkeypatch.setenv("PIGEON_TOKEN_CACHE", "off")


def _cached_client(url, path, password=FakeSaltApi.PASSWORD):
    return stacks.SaltApi(url, "deployer", password, "pam", timeout=5,
                          token_cache=stacks.TokenCache(str(path)))


def test_token_cache_logs_in_once_across_runs(api, tmp_path):
    path = tmp_path / "pigeon" / "tokens.json"
    _cached_client(api.url, path).runner("stacks.status")
    _cached_client(api.url, path).runner("stacks.status")
    assert [r["path"] for r in api.requests] == ["/login", "/", "/"]
    assert (path.stat().st_mode & 0o777) == 0o600
    assert "secret" not in path.read_text()  # the password is not stored, only a derived key


def test_token_cache_other_credentials_log_in(api, tmp_path):
    path = tmp_path / "tokens.json"
    _cached_client(api.url, path).runner("stacks.status")
    with pytest.raises(stacks.StacksError) as info:
        _cached_client(api.url, path, password="wrong").runner("stacks.status")
    assert info.value.code == 3 and "refused the credentials" in str(info.value)
    assert [r["path"] for r in api.requests] == ["/login", "/", "/login"]


def test_token_cache_refused_token_logs_in_again(api, tmp_path):
    path = tmp_path / "tokens.json"
    _cached_client(api.url, path).runner("stacks.status")
    api.TOKEN = "t2"  # salt-api no longer knows the cached token (a new master)
    try:
        assert _cached_client(api.url, path).runner("stacks.status") == success_payload()
        assert [r["path"] for r in api.requests] == ["/login", "/", "/", "/login", "/"]
        assert json.loads(path.read_text()).popitem()[1]["token"] == "t2"
    finally:
        api.TOKEN = FakeSaltApi.TOKEN


def test_token_cache_skips_expiring_tokens(tmp_path):
    cache = stacks.TokenCache(str(tmp_path / "tokens.json"))
    key = cache.key("https://m:8000", "u", "pam", "p")
    assert key != cache.key("https://m:8000", "u", "pam", "q")
    assert key != cache.key("https://other:8000", "u", "pam", "p")
    cache.put(key, "soon", time.time() + 30)
    assert cache.get(key) is None
    cache.put(key, "later", time.time() + 3600)
    assert cache.get(key) == "later"
    cache.drop(key)
    assert cache.get(key) is None


def test_token_cache_unreadable_file_is_ignored(tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text("not json")
    cache = stacks.TokenCache(str(path))
    assert cache.get(cache.key("u", "u", "pam", "p")) is None


def test_token_cache_path(tmp_path):
    assert stacks.token_cache_path({"PIGEON_TOKEN_CACHE": "off"}) is None
    assert stacks.token_cache_path({"PIGEON_TOKEN_CACHE": "/x/t.json"}) == "/x/t.json"
    assert stacks.token_cache_path({"XDG_CACHE_HOME": str(tmp_path)}) == str(tmp_path / "pigeon" / "tokens.json")
