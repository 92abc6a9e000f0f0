"""
Unit tests for stacks.py, the command line client of salt-api (the pigeon package behind it).

The salt-api side is FakeSaltApi: a real HTTP server (http.server, plain http
on 127.0.0.1, an ephemeral port) in a thread, answering /login, / and /events
like rest_cherrypy does. The deploy runner's answers are its outcomes
({"outcome": ...}, srv/salt/_utils/pigeon_outcome.py): those the lab recorded
(tests/fixtures/orchestrate), or pigeon_outcome.build over a recorded return
changed into a failure the lab did not record. With runner_async, the fake
streams what the master publishes for an action: the runner's table of steps
(salt/run/<jid>/steps), the orchestration's progress (salt/job/<jid>/prog/...),
the runner's return (salt/run/<jid>/ret).

What the outcome says of an orchestration's return is tested in test_outcome.py.
"""

import atexit
import copy
import http.server
import io
import json
import os
import pathlib
import socket
import sys
import tempfile
import threading
import time

import pytest

from srv_modules import load

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pigeon import cli, errors, saltapi  # noqa: E402  pylint: disable=wrong-import-position

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
# the deploy runner's answers: the outcomes the lab recorded (tests/fixtures/record.py)
pigeon_outcome = load("_utils/pigeon_outcome.py", "pigeon_outcome_for_cli")
pigeon_steps = load("_utils/pigeon_steps.py", "pigeon_steps_for_cli")
FIXTURES = REPO / "tests" / "fixtures" / "orchestrate"
MASTER = "lab"
MINION = "lab-minion"
JID = "20261203225048123456"


def recorded(name):
    """{"plan", "ret", "outcome"} of one action the lab ran."""
    return json.loads((FIXTURES / f"{name}.json").read_text())


def answer(name):
    """What deploy.<action> returned for a recorded action."""
    return {"outcome": recorded(name)["outcome"]}


def _state_of(plan, ret, step):
    """The return of ``step`` in an orchestration's return (found by the plan's state ID)."""
    sid = next(s["id"] for s in plan["steps"] if s["step"] == step)
    return next(v for v in ret["data"][MASTER].values() if v["__id__"] == sid)


# HAProxy's gate, in the routes step (haproxy_runtime.set_routes with require_up and wait)
GATE_ERROR = ("backend app_a: 1 of 2 servers UP and checked after 30s (s2 172.18.0.7:8080 DOWN L7STS); "
              "that stack is not healthy (see ./stacks.py status)")


def routes_failure():
    """A release whose containers docker found healthy, but not all of them UP in HAProxy (the lab
    recorded none): release-first's return with its routes step failed and its cleanup run.
    (plan, ret, the runner's answer)."""
    case = recorded("release-first")
    plan, ret = case["plan"], copy.deepcopy(case["ret"])
    _state_of(plan, ret, "routes").update(
        result=False, duration=30012.0, changes={"ret": {MINION: f"ERROR: {GATE_ERROR}"}},
        comment=(f"Running function haproxy_runtime.set_routes failed on minions: {MINION} "
                 f"Function haproxy_runtime.set_routes ran on {MINION}."))
    cleanup = _state_of(plan, ret, "cleanup")
    cleanup.pop("__state_ran__")
    cleanup.update(result=True, duration=1719.4, comment=f"States ran successfully. Updating {MINION}.")
    ret["retcode"] = 1
    return plan, ret, {"outcome": pigeon_outcome.build(plan, ret)}


def with_loadbal():
    """release-first as the first release of a new app: the loadbal step (HAProxy's states on
    the load balancer) runs beside the containers. (plan, ret, the runner's answer)."""
    case = recorded("release-first")
    plan, ret = dict(case["plan"], converge_loadbal=True), copy.deepcopy(case["ret"])
    plan["steps"] = pigeon_steps.steps(plan)
    states = ret["data"][MASTER]
    for value in states.values():
        value["__run_num__"] += 1
    sid = next(s["id"] for s in plan["steps"] if s["step"] == "loadbal")
    states[f"salt_|-{sid}_|-{sid}_|-state"] = {
        "__id__": sid, "__run_num__": 0, "__sls__": "orch.release", "name": sid, "result": True,
        "changes": {}, "comment": f"States ran successfully. No changes made to {MINION}.",
        "start_time": "22:50:48.760754", "duration": 1800.0}
    done = pigeon_outcome.build(plan, ret)
    done.update({k: case["outcome"][k] for k in ("changed", "revision", "version")})  # the runner's commit
    return plan, ret, {"outcome": done}


REFUSAL = "app rec-1 is already active; release a new version, or deactivate it first"
LOCK_HELD = ("app is locked by release 2.0 of alice since 2024-05-01T12:00:00Z; try again when it ends, "
             "or add --wait SECONDS")


def refused(message=REFUSAL, action="release", version="rec-1"):
    """The runner refused after its door: the lock is held, or the plan refused."""
    return {"outcome": pigeon_outcome.refused({"action": action, "app": "app", "version": version}, message)}


def test_the_answers_are_the_runners():
    """The answers the fake gives are what the runner returns (test_outcome.py shows build does)."""
    for name in ("release-first", "release-unhealthy", "activate-remove-inactive"):
        case = recorded(name)
        built = pigeon_outcome.build(case["plan"], case["ret"])
        # (these recordings predate the outcome's "containers")
        assert {k: v for k, v in built.items() if k not in ("changed", "revision", "containers")} == \
            {k: v for k, v in case["outcome"].items() if k not in ("changed", "revision")}
    plan, _, done = routes_failure()
    assert done["outcome"]["failed_step"] == "routes"
    assert plan["steps"] == [{k: v for k, v in s.items() if k != "cancellable"} for s in pigeon_steps.steps(plan)]
    assert [s["step"] for s in with_loadbal()[2]["outcome"]["steps"]] == ["loadbal", "containers", "routes",
                                                                          "cleanup"]


# ---------------------------------------------------------------------------
# parse_args
def _usage_error(capsys, argv, *needles):
    with pytest.raises(SystemExit) as info:
        cli.parse_args(argv)
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
    args = cli.parse_args(["release", "--app-name", "a", "--version", "1"])
    assert (args.command, args.app, args.version) == ("release", "a", "1")
    assert args.force is False and args.json is False and args.wait == 0
    assert args.saltapi_url is None and args.saltapi_eauth == "auto" and args.timeout == 600


def test_parse_args_original_form():
    args = cli.parse_args(["--app-name", "a", "--version", "1", "--action", "release"])
    assert (args.command, args.app, args.version) == ("release", "a", "1")


def test_parse_args_both_forms_agreeing_and_short_flags():
    args = cli.parse_args(["deactivate", "-a", "shop", "-V", "2.0", "--action", "deactivate", "--force"])
    assert (args.command, args.app, args.version, args.force) == ("deactivate", "shop", "2.0", True)


@pytest.mark.parametrize("argv", [["activate", "--app-name", "a"], ["rollback", "-a", "a"],
                                  ["status"], ["status", "--app-name", "a", "--json"],
                                  ["history", "-a", "a", "--limit", "5"]])
def test_parse_args_accepts(argv):
    args = cli.parse_args(argv)
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
    (["deploy", "--app-name", "a"], "unknown ACTION 'deploy'; use one of release, activate"),
    (["relase", "--app-name", "a"], "unknown ACTION 'relase'; did you mean release?"),
    (["histroy", "--app-name", "a"], "unknown ACTION 'histroy'; did you mean history?"),
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
    args = cli.parse_args(["status"])
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
    args = cli.parse_args(["status", "--saltapi-url", "https://other:8000", "--saltapi-user", "bob",
                              "--saltapi-pass", "pw", "--saltapi-eauth", "sharedsecret",
                              "--ca-file", "/tmp/ca.pem", "--timeout", "5"])
    assert args.saltapi_url == "https://other:8000"
    assert args.saltapi_user == "bob"
    assert args.saltapi_pass == "pw"
    assert args.saltapi_eauth == "sharedsecret"
    assert args.ca_file == "/tmp/ca.pem"
    assert args.timeout == 5.0


def test_make_client_verify(monkeypatch, tmp_path):
    base = ["status", "--saltapi-url", "https://salt:8000/"]
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    assert cli.make_client(cli.parse_args(base)).verify is True
    assert cli.make_client(cli.parse_args(base + ["--ca-file", str(ca)])).verify == str(ca)
    assert cli.make_client(cli.parse_args(base + ["--ca-file", "/x/ca.pem", "--insecure"])).verify is False
    assert cli.make_client(cli.parse_args(base)).url == "https://salt:8000"


# ---------------------------------------------------------------------------
# a fake salt-api
class FakeSaltApi:
    """rest_cherrypy's /login, / (low-state runs) and /events, plain http on an ephemeral port.

    Without a script, runner_async is refused (400: a master without it) and /events says
    nothing: stacks.py falls back to the runner client, which gets ``payload``. With
    ``script(...)``, runner_async starts the action (jid JID) and /events publishes its events."""

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

            def do_GET(self):  # noqa: N802
                fake.streams.append({"path": self.path, "headers": dict(self.headers)})
                if self.path != "/events":
                    self._send(404, b"not found", "text/plain")
                    return
                if self.headers.get("X-Auth-Token") != fake.TOKEN:
                    self._send(401, b"<html><body>401 Unauthorized</body></html>", "text/html")
                    return
                self.send_response(200)  # server-sent events, until the connection closes
                self.send_header("Content-Type", "text/event-stream;charset=utf-8")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                self.wfile.write(b"retry: 400\n\n")
                self.wfile.flush()
                if fake.events is None or not fake.started.wait(5):
                    return
                for tag, data in fake.events:
                    event = {"tag": tag, "data": dict(data, _stamp="2026-12-03T22:50:48.000000")}
                    self.wfile.write(f"tag: {tag}\ndata: {json.dumps(event)}\n\n".encode())
                    self.wfile.flush()

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
                        if fake.events is None:
                            # a master without runner_async: stacks.py falls back to the runner client
                            self._send(400, b"<html><body>400 Bad Request: Client disabled</body></html>",
                                       "text/html")
                        else:
                            self._send(200, {"return": [{"jid": JID, "tag": f"salt/run/{JID}/new"}]})
                            fake.started.set()
                    elif fake.not_json:
                        self._send(200, b"<html><body>500 Internal Server Error</body></html>", "text/html")
                    else:
                        fun = body[0].get("fun") if isinstance(body, list) and body else None
                        self._send(200, {"return": [copy.deepcopy(fake.by_fun.get(fun, fake.payload))]})
                else:
                    self._send(404, b"not found", "text/plain")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def reset(self):
        self.payload = answer("release-first")
        self.by_fun = {}  # the answer of one runner function, else payload
        self.events = None
        self.started = threading.Event()
        self.not_json = False
        self.requests = []
        self.streams = []

    def script(self, plan, ret, done, order=None, extra=()):
        """An action through runner_async: the runner announces the plan's steps, the orchestration
        ``ret`` reports each state as it ends (in run order, or the steps named in ``order``), the
        runner returns ``done``. ``extra``: more events, published before the return."""
        self.payload = done
        table = {s["id"]: s["step"] for s in plan["steps"]}
        states = sorted(ret["data"][MASTER].values(), key=lambda s: s["__run_num__"]) if ret else []
        if order is not None:
            by_step = {table[s["__id__"]]: s for s in states}
            states = [by_step[step] for step in order]
        self.events = [(f"salt/run/{JID}/steps", {"steps": table})] if table else []
        self.events += [(f"salt/job/{JID}/prog/{MASTER}/{s['__run_num__']}", {"ret": s, "len": len(states)})
                        for s in states]
        self.events += list(extra)
        self.events.append((f"salt/run/{JID}/ret", {"fun": f"runner.deploy.{plan['action']}", "jid": JID,
                                                    "user": "deployer", "success": True, "return": done}))

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
    return saltapi.SaltApi(url, "deployer", password, "pam", timeout=5)


def test_saltapi_login_and_runner(api):
    client = _client(api.url + "/")
    assert client.url == api.url
    ret = client.runner("state.orchestrate", arg=["orch.release"],
                        kwarg={"pillar": {"pigeon": {"app": "app", "version": "1.0"}}})
    assert ret == answer("release-first")
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
    with pytest.raises(errors.StacksError) as info:
        _client(api.url, password="wrong").runner("stacks.status")
    assert info.value.code == 3
    assert "refused the credentials" in str(info.value)
    assert "'deployer'" in str(info.value) and "pam" in str(info.value)
    assert [r["path"] for r in api.requests] == ["/login"]


def test_saltapi_unreachable(closed_port):
    url = f"http://127.0.0.1:{closed_port}"
    with pytest.raises(errors.StacksError) as info:
        _client(url).runner("stacks.status")
    assert info.value.code == 3
    assert str(info.value).startswith(f"cannot reach salt-api at {url} (connection refused)")


def test_saltapi_not_json(api):
    api.not_json = True
    with pytest.raises(errors.StacksError) as info:
        _client(api.url).runner("stacks.status")
    assert info.value.code == 3
    assert str(info.value) == "salt-api answered something that is not JSON on /"


def test_saltapi_http_error(api):
    with pytest.raises(errors.StacksError) as info:
        _client(api.url)._post("/nowhere", {})
    assert info.value.code == 3
    assert str(info.value) == "salt-api answered HTTP 404 on /nowhere: not found"


def test_saltapi_needs_url_and_credentials():
    with pytest.raises(errors.StacksError) as info:
        saltapi.SaltApi("", "u", "p")
    assert info.value.code == 2 and "SALTAPI_URL" in str(info.value)
    with pytest.raises(errors.StacksError) as info:
        saltapi.SaltApi("http://127.0.0.1:9", None, "p").login()
    assert info.value.code == 2 and "SALTAPI_USER" in str(info.value)


# ---------------------------------------------------------------------------
# main, end to end against the fake salt-api
def _password_file(password):
    """A file holding ``password`` (--saltapi-pass-file), removed at exit."""
    fd, path = tempfile.mkstemp(prefix="pigeon-test-pass-")
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    atexit.register(os.unlink, path)
    return path


PASSWORD_FILE = _password_file(FakeSaltApi.PASSWORD)
RELEASE = ("release", "--app-name", "app", "--version", "rec-1")  # release-first's


def _argv(api, *extra, action=RELEASE):
    # the fake salt-api speaks plain http: allowed with --insecure only
    return [*action, "--saltapi-url", api.url, "--saltapi-user", "deployer",
            "--saltapi-pass-file", PASSWORD_FILE, "--timeout", "5", "--insecure", *extra]


def test_main_success(api, capsys):
    assert cli.main(_argv(api)) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = captured.out.splitlines()
    assert lines[0] == f"release app rec-1 through {api.url}"
    assert lines[-2] == "app rec-1 released in slot a"
    assert lines[-1].startswith("Finished release app rec-1 in ")
    assert lines[-1].endswith(" s")
    step_lines = [ln.split() for ln in lines[1:-2]]
    # skipped steps (cleanup) are not shown
    assert step_lines == [["containers", "ok", "4.1", "s"], ["routes", "ok", "0.3", "s"]]
    run = api.requests[-1]
    # the deploy runner, with exactly the request's keys (its schema refuses any other)
    assert run["body"] == [{"client": "runner", "fun": "deploy.release", "arg": [],
                            "kwarg": {"app": "app", "version": "rec-1"}}]


def test_main_settings_from_env_and_pillar_flags(api, capsys, monkeypatch):
    monkeypatch.setenv("SALTAPI_URL", api.url)
    monkeypatch.setenv("SALTAPI_USER", "deployer")
    monkeypatch.setenv("SALTAPI_PASS", FakeSaltApi.PASSWORD)
    api.payload = answer("activate")
    assert cli.main(["--app-name", "app", "--action", "release", "--wait", "30", "--keep-failed", "-q",
                     "--insecure"]) == 0  # the fake salt-api speaks plain http
    assert capsys.readouterr().out == ""
    kwarg = api.requests[-1]["body"][0]["kwarg"]
    assert kwarg == {"app": "app", "wait": 30, "keep_failed": True}
    assert api.requests[-1]["body"][0]["fun"] == "deploy.release"
    assert api.requests[0]["body"]["eauth"] == "auto"


def test_main_reports_the_version_the_orchestration_chose(api, capsys):
    api.payload = answer("activate-remove-inactive")
    assert cli.main(_argv(api, action=("activate", "--app-name", "app"))) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"activate app through {api.url}"
    assert [ln.split() for ln in lines[1:-2]] == [["routes", "ok", "0.5", "s"], ["remove", "rec-1", "ok", "2.5", "s"]]
    assert lines[1:-2] == [cli.step_line(s) for s in api.payload["outcome"]["steps"]]
    assert lines[-2] == "app rec-3 is active; rec-2 is inactive"
    assert lines[-1].startswith("Finished activate app rec-3 in ")
    assert api.requests[-1]["body"][0]["kwarg"] == {"app": "app"}


def test_step_line():
    assert cli.step_line({"step": "routes", "result": True, "skipped": False, "seconds": 0.284}) == \
        "  routes                   ok      0.3 s"
    assert cli.step_line({"step": "remove 1.0-rc-2", "result": False, "seconds": 30.012}) == \
        "  remove 1.0-rc-2          FAILED  30.0 s"
    assert cli.step_line({"step": "cleanup", "result": None, "seconds": None}).split() == \
        ["cleanup", "FAILED", "0.0", "s"]


def unhealthy():
    """The lab's release whose containers docker marked unhealthy: (plan, ret, the runner's answer)."""
    case = recorded("release-unhealthy")
    return case["plan"], case["ret"], {"outcome": case["outcome"]}


UNHEALTHY_ERROR = recorded("release-unhealthy")["outcome"]["error"]
FAILURES = [
    # docker's health gate: containers fails, routes never runs, cleanup removes what started
    pytest.param(unhealthy, "unhealthy", UNHEALTHY_ERROR,
                 [["containers", "FAILED", "5.9"], ["cleanup", "ok", "1.7"]],
                 [("containers", False), ("routes", None), ("cleanup", True)], id="containers"),
    # HAProxy's gate: routes fails after its wait, cleanup removes what started
    pytest.param(routes_failure, "rec-1", f"step routes failed: {MINION}: {GATE_ERROR}",
                 [["containers", "ok", "4.1"], ["routes", "FAILED", "30.0"], ["cleanup", "ok", "1.7"]],
                 [("containers", True), ("routes", False), ("cleanup", True)], id="routes"),
]


@pytest.mark.parametrize("payload, version, error, step_lines, steps", FAILURES)
def test_main_failed_orchestration(api, capsys, payload, version, error, step_lines, steps):
    api.payload = payload()[2]
    assert cli.main(_argv(api, action=("release", "-a", "app", "-V", version))) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"stacks.py: release app {version} failed: {error}"]
    assert "Finished" not in captured.out
    assert [ln.split()[:3] for ln in captured.out.splitlines()[1:]] == step_lines


@pytest.mark.parametrize("message", [REFUSAL, LOCK_HELD])
@pytest.mark.parametrize("by", ["runner", "door"])
def test_main_refused(api, capsys, message, by):
    # the runner (the lock, the plan) refuses with an outcome; its door (the schema) with one line
    api.payload = refused(message) if by == "runner" else {"refused": message}
    assert cli.main(_argv(api)) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"stacks.py: release app rec-1 refused: {message}"]
    assert captured.out.splitlines() == [f"release app rec-1 through {api.url}"]  # no step lines


def test_main_no_outcome(api, capsys):
    api.payload = "'deploy.release' is not available."
    assert cli.main(_argv(api)) == 1
    assert capsys.readouterr().err.splitlines() == [
        "stacks.py: deploy.release returned no outcome: 'deploy.release' is not available."]


def _run(api, *extra, action=RELEASE):
    """run_action against the fake salt-api: (lines, report or StacksError)."""
    lines = []
    args = cli.parse_args([*action, "--saltapi-url", api.url, "--insecure", *extra])  # plain http
    try:
        report = cli.run_action(_client(api.url), args, lines.append)
    except errors.StacksError as exc:
        return lines, exc
    return lines, report


def _async_runs(api):
    return [r["body"][0] for r in api.requests if r["path"] == "/" and r["body"][0]["client"] == "runner_async"]


def test_progress_lines_as_steps_end(api):
    # loadbal runs in parallel with the containers and ends after them
    api.script(*with_loadbal(), order=["containers", "loadbal", "routes", "cleanup"])
    lines, report = _run(api)
    assert _async_runs(api) == [{"client": "runner_async", "fun": "deploy.release",
                                 "kwarg": {"app": "app", "version": "rec-1"}}]
    assert [s["path"] for s in api.streams] == ["/events"]
    assert lines[0] == f"release app rec-1 through {api.url} (job {JID})"
    # one line per step that ran, as it ended; the skipped onfail step (cleanup) not shown,
    # and no second list of the steps at the end
    assert [ln.split() for ln in lines[1:-2]] == [
        ["containers", "ok", "4.1", "s"], ["loadbal", "ok", "1.8", "s"], ["routes", "ok", "0.3", "s"]]
    assert lines[-2] == "app rec-1 released in slot a"
    assert [s["step"] for s in report["steps"]] == ["loadbal", "containers", "routes", "cleanup"]  # run order
    assert report["ok"] is True and report["changed"] == recorded("release-first")["outcome"]["changed"]
    assert report["job"] == JID


def test_progress_shows_only_the_steps_of_its_action(api):
    """Progress events of other jobs, and states that are not a step of the plan's table, show nothing."""
    plan, ret, done = routes_failure()
    stranger = dict(_state_of(plan, ret, "containers"), __id__="stacks-running-stack-containers-running")
    api.script(plan, ret, done, extra=[
        ("salt/job/20261203225048999999/prog/lab/0", {"ret": _state_of(plan, ret, "routes"), "len": 3}),
        (f"salt/job/{JID}/prog/{MASTER}/7", {"ret": stranger, "len": 3}),
        ("salt/run/20261203225048999999/ret", {"return": answer("release-unhealthy")})])
    lines, error = _run(api)
    assert [ln.split()[:3] for ln in lines[1:]] == FAILURES[1].values[3]
    assert str(error) == f"release app rec-1 failed: {FAILURES[1].values[2]}"


@pytest.mark.parametrize("payload, version, error, step_lines, steps", FAILURES)
def test_progress_lines_of_a_failed_release(api, payload, version, error, step_lines, steps):
    api.script(*payload())
    lines, raised = _run(api, action=("release", "-a", "app", "-V", version))
    assert len(_async_runs(api)) == 1 and [s["path"] for s in api.streams] == ["/events"]
    assert [ln.split()[:3] for ln in lines[1:]] == step_lines
    assert str(raised) == f"release app {version} failed: {error}"
    assert raised.code == errors.EXIT_FAILED
    assert [(s["step"], s["result"]) for s in raised.report["steps"]] == steps


def test_a_waiting_action_says_whose_lock_it_waits_for(api):
    plan, ret, done = with_loadbal()
    api.script(plan, ret, done)
    holder = {"action": "release", "version": "2.0", "user": "alice", "since": "2026-12-04T03:00:00Z"}
    api.events.insert(0, (f"salt/run/{JID}/waiting", {"holder": holder, "wait": 30}))
    lines, report = _run(api, "--wait", "30")
    assert lines[1] == ("  waiting up to 30 s for the lock of app: release 2.0 of alice "
                        "since 2026-12-04T03:00:00Z")
    assert [ln.split()[0] for ln in lines[2:-2]] == ["loadbal", "containers", "routes"]
    assert report["ok"] is True


def test_the_ticker_names_the_running_step_and_is_erased():
    stream = io.StringIO()
    ticker = cli.Ticker(time.monotonic() - 2.0, stream)
    ticker.tick("containers")
    assert stream.getvalue().startswith("\r\033[K  containers")
    assert stream.getvalue().rstrip().endswith(" s") and "2." in stream.getvalue()
    ticker.clear(step_ended=True)
    assert stream.getvalue().endswith("\r\033[K") and ticker.shown is False
    ticker.tick(None)  # before the first step: its time counts from the end of the last
    assert "starting" in stream.getvalue().rsplit("\r\033[K", 1)[-1]
    assert "0.0 s" in stream.getvalue().rsplit("\r\033[K", 1)[-1]


def test_progress_lines_of_a_refusal(api):
    # refused under the lock: no step ran, the runner announced none
    api.script({"action": "release", "steps": []}, None, refused(LOCK_HELD))
    lines, error = _run(api)
    assert [tag for tag, _ in api.events] == [f"salt/run/{JID}/ret"]
    assert lines == [f"release app rec-1 through {api.url} (job {JID})"]
    assert str(error) == f"release app rec-1 refused: {LOCK_HELD}"
    assert error.report["steps"] == [] and error.report["refused"] is True


@pytest.mark.parametrize("flag", ["--no-progress", "--json", "--quiet"])
def test_no_progress_lines_asked(api, flag):
    api.script(*with_loadbal())
    lines, report = _run(api, flag)
    assert _async_runs(api) == [] and api.streams == []  # the runner client, no event stream
    assert api.requests[-1]["body"][0]["client"] == "runner"
    assert report["ok"] is True
    assert [ln.split()[0] for ln in lines[1:-2]] == ["loadbal", "containers", "routes"]  # at the end


def test_main_wrong_password(api, capsys):
    argv = _argv(api)
    argv[argv.index("--saltapi-pass-file") + 1] = _password_file("wrong")
    assert cli.main(argv) == 3
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "refused the credentials" in err[0]


def test_main_unreachable(closed_port, capsys):
    assert cli.main(["status", "--saltapi-url", f"https://127.0.0.1:{closed_port}",
                        "--saltapi-user", "u", "--saltapi-pass-file", PASSWORD_FILE, "--timeout", "5"]) == 3
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("stacks.py: cannot reach salt-api")


def test_main_without_url(capsys):
    assert cli.main(["status"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "no salt-api URL" in err[0]


# the outcome's keys (pigeon_outcome), and the CLI's seconds
JSON_KEYS = {"action", "app", "version", "ok", "refused", "error", "failed_step", "seconds", "steps", "cleaned",
             "containers", "changed", "revision"}


def json_keys(doc):
    """The keys of an action's --json, "containers" added when its recording predates it."""
    return set(doc) | {"containers"}


def test_main_json_success(api, capsys):
    assert cli.main(_argv(api, "--json")) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    doc = json.loads(captured.out)
    assert json_keys(doc) == JSON_KEYS
    assert (doc["action"], doc["app"], doc["version"], doc["ok"], doc["error"]) == (
        "release", "app", "rec-1", True, None)
    assert isinstance(doc["seconds"], float) and 0 <= doc["seconds"] < 3
    assert doc["changed"] == recorded("release-first")["outcome"]["changed"]
    assert doc["revision"] == doc["changed"]["revision"] == 17
    assert (doc["refused"], doc["failed_step"], doc["cleaned"]) == (False, None, [])
    assert [s["step"] for s in doc["steps"]] == ["containers", "routes", "cleanup"]
    assert [s["seconds"] for s in doc["steps"]] == [4.145, 0.284, 0.0]
    assert [s["skipped"] for s in doc["steps"]] == [False, False, True]
    assert set(doc["steps"][0]) == {"step", "result", "skipped", "seconds", "comment"}


def test_main_json_reports_the_version_the_orchestration_chose(api, capsys):
    api.payload = answer("rollback")
    assert cli.main(_argv(api, "--json", action=("rollback", "--app-name", "app"))) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["action"], doc["version"], doc["changed"]["message"]) == (
        "rollback", "rec-2", "app rec-2 is active again; rec-3 is inactive")


@pytest.mark.parametrize("payload, version, error, step_lines, steps", FAILURES)
def test_main_json_failure(api, capsys, payload, version, error, step_lines, steps):
    api.payload = payload()[2]
    assert cli.main(_argv(api, "--json", action=("release", "-a", "app", "-V", version))) == 1
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert json_keys(doc) == JSON_KEYS
    assert doc["ok"] is False and doc["refused"] is False
    assert (doc["action"], doc["app"], doc["version"]) == ("release", "app", version)
    assert doc["error"] == f"release app {version} failed: {error}"
    assert doc["failed_step"] == error.split()[1]
    assert doc["changed"] is None
    # every step, skipped or not, with its result (None: it did not run)
    assert [(s["step"], s["result"]) for s in doc["steps"]] == steps
    assert captured.err.splitlines() == [f"stacks.py: {doc['error']}"]


@pytest.mark.parametrize("by", ["runner", "door"])
def test_main_json_refused(api, capsys, by):
    api.payload = refused(LOCK_HELD) if by == "runner" else {"refused": LOCK_HELD}
    assert cli.main(_argv(api, "--json")) == 1
    doc = json.loads(capsys.readouterr().out)
    assert (doc["ok"], doc["refused"], doc["steps"], doc.get("changed")) == (False, True, [], None)
    assert doc["error"] == f"release app rec-1 refused: {LOCK_HELD}"
    assert (doc["action"], doc["app"], doc["version"]) == ("release", "app", "rec-1")


def test_main_names_the_leftovers_a_release_removed(api, capsys):
    api.payload = answer("release-cleans-leftovers")
    assert cli.main(_argv(api, action=("release", "-a", "app", "-V", "rec-2"))) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-3] == "removed what interrupted actions left of unhealthy"
    assert cli.main(_argv(api, "--json", action=("release", "-a", "app", "-V", "rec-2"))) == 0
    assert json.loads(capsys.readouterr().out)["cleaned"] == ["unhealthy"]
    api.payload = answer("release-unhealthy")  # named only on success
    api.payload["outcome"]["cleaned"] = ["0.8"]
    assert cli.main(_argv(api, action=("release", "-a", "app", "-V", "unhealthy"))) == 1
    assert "removed what" not in capsys.readouterr().out


def test_connect_timeout_is_unreachable_not_deadline(monkeypatch):
    api = saltapi.SaltApi("https://salt.invalid:8000", "u", "p", timeout=5)

    def refuse(*args, **kwargs):
        raise saltapi.requests.exceptions.ConnectTimeout("connect timed out")

    monkeypatch.setattr(api.session, "request", refuse)
    with pytest.raises(errors.StacksError) as error:
        api.login()
    assert error.value.code == errors.EXIT_API
    assert "cannot reach salt-api" in str(error.value)
    assert "connection timed out" in str(error.value)


# ---------------------------------------------------------------------------
# the token cache
@pytest.fixture(autouse=True)
def _no_token_cache(monkeypatch):
    """main() would keep tokens in ~/.cache: unit tests keep none unless they ask for one."""
    monkeypatch.setenv("PIGEON_TOKEN_CACHE", "off")


def _cached_client(url, path, password=FakeSaltApi.PASSWORD):
    return saltapi.SaltApi(url, "deployer", password, "pam", timeout=5,
                          token_cache=saltapi.TokenCache(str(path)))


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
    with pytest.raises(errors.StacksError) as info:
        _cached_client(api.url, path, password="wrong").runner("stacks.status")
    assert info.value.code == 3 and "refused the credentials" in str(info.value)
    assert [r["path"] for r in api.requests] == ["/login", "/", "/login"]


def test_token_cache_refused_token_logs_in_again(api, tmp_path):
    path = tmp_path / "tokens.json"
    _cached_client(api.url, path).runner("stacks.status")
    api.TOKEN = "t2"  # salt-api no longer knows the cached token (a new master)
    try:
        assert _cached_client(api.url, path).runner("stacks.status") == answer("release-first")
        assert [r["path"] for r in api.requests] == ["/login", "/", "/", "/login", "/"]
        assert json.loads(path.read_text()).popitem()[1]["token"] == "t2"
    finally:
        api.TOKEN = FakeSaltApi.TOKEN


def test_token_cache_skips_expiring_tokens(tmp_path):
    cache = saltapi.TokenCache(str(tmp_path / "tokens.json"))
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
    cache = saltapi.TokenCache(str(path))
    assert cache.get(cache.key("u", "u", "pam", "p")) is None


def test_token_cache_path(tmp_path):
    assert saltapi.token_cache_path({"PIGEON_TOKEN_CACHE": "off"}) is None
    assert saltapi.token_cache_path({"PIGEON_TOKEN_CACHE": "/x/t.json"}) == "/x/t.json"
    assert saltapi.token_cache_path({"XDG_CACHE_HOME": str(tmp_path)}) == str(tmp_path / "pigeon" / "tokens.json")


# ---------------------------------------------------------------------------
# deploy(): an action whose process died while the event stream stays open

class SilentStream:
    """An /events stream that opened and then says nothing (a master whose processes died)."""

    def __init__(self, api):
        self.status = 200

    def next(self, until):
        return None

    def close(self):
        pass


def _deploy_with_locks(monkeypatch, locks):
    """Run deploy() against a silent stream; stacks.status answers the lock from ``locks``
    in turn (a dict or None), or raises a StacksError given in it. Returns (error, calls)."""
    client = saltapi.SaltApi("http://127.0.0.1:1", "deployer", "pw", "pam", timeout=3600)
    client.token = "t"
    monkeypatch.setattr(saltapi, "EventStream", SilentStream)
    monkeypatch.setattr(saltapi.SaltApi, "SILENCE", 0)
    calls, answers = [], iter(locks)

    def post(path, payload):
        calls.append(payload[0])
        if payload[0]["client"] == "runner_async":
            return {"return": [{"jid": "20261203000000000000", "tag": "salt/run/x/new"}]}
        answer = next(answers)
        if isinstance(answer, errors.StacksError):
            raise answer
        return {"return": [{"app": {"stacks": {}, "routes": {}, "generation": 1, "lock": answer}}]}

    monkeypatch.setattr(client, "_post", post)
    with pytest.raises(errors.StacksError) as raised:
        client.deploy("release", {"app": "app", "version": "1.0"}, on_step=lambda step: None)
    return raised.value, calls


def test_deploy_gives_up_on_an_action_whose_lock_is_gone(monkeypatch):
    held = {"action": "release", "version": "1.0", "user": "deployer"}
    error, calls = _deploy_with_locks(monkeypatch, [held, held, None, held, None, None])
    assert error.code == errors.EXIT_FAILED
    assert str(error).startswith("the action ended without a result")
    assert "\n" not in str(error)
    # asked of the registry alone (observe=False): cheap, and no minion needs to answer
    asks = [c for c in calls if c["client"] == "runner"]
    assert len(asks) == 6  # one free lock between held ones is not enough: two in a row are
    assert all(c["fun"] == "stacks.status" and c["kwarg"] == {"app": "app", "observe": False} for c in asks)


def test_deploy_names_a_master_that_stopped_answering(monkeypatch):
    down = errors.StacksError("salt-api answered HTTP 500 on /: master not responding", errors.EXIT_API)
    error, _ = _deploy_with_locks(monkeypatch, [{"action": "release"}, down])
    assert error.code == errors.EXIT_API
    assert str(error) == "lost the action: salt-api answered HTTP 500 on /: master not responding"


CHERRYPY_PAGE = """<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"
"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html>
<head>
    <meta http-equiv="Content-Type" content="text/html; charset=utf-8"></meta>
    <title>500 Internal Server Error</title>
</head>
    <body>
        <h2>500 Internal Server Error</h2>
        <p>The server encountered an unexpected condition
 which prevented it from fulfilling the request.</p>
    </body>
</html>
"""


class _Response:
    def __init__(self, status, text):
        self.status_code, self.text = status, text


def test_an_html_error_page_is_one_line():
    client = saltapi.SaltApi("http://127.0.0.1:1", "deployer", "pw")
    with pytest.raises(errors.StacksError) as info:
        client._answer("/", _Response(500, CHERRYPY_PAGE))
    assert str(info.value) == ("salt-api answered HTTP 500 on /: 500 Internal Server Error - The server "
                               "encountered an unexpected condition which prevented it from fulfilling "
                               "the request.")
    assert info.value.code == errors.EXIT_API


def test_503_says_the_master_does_not_answer():
    client = saltapi.SaltApi("http://127.0.0.1:1", "deployer", "pw")
    with pytest.raises(errors.StacksError) as info:
        client._answer("/", _Response(503, CHERRYPY_PAGE.replace("500 Internal Server Error", "503 x")))
    assert "\n" not in str(info.value)
    assert "the salt-master does not answer" in str(info.value) and "make lab" in str(info.value)


def test_one_request_primitive_logs_in_again_once_for_any_request(monkeypatch):
    """A cached token salt-api refuses: one new login, the same request again (the event
    stream's GET as much as a POST), and no loop when the new token is refused too."""
    client = saltapi.SaltApi("http://127.0.0.1:1", "deployer", "pw", "pam")
    client.cached, logins, sent = True, [], []

    def login(fresh=False):
        logins.append(fresh)
        client.cached = False

    def send(method, path, **kwargs):
        sent.append((method, path))
        return _Response(401 if len(sent) < 3 else 200, "")

    monkeypatch.setattr(client, "login", login)
    monkeypatch.setattr(client, "_send", send)
    assert client.request("GET", "/events", stream=True).status_code == 401
    assert logins == [True] and sent == [("GET", "/events")] * 2
    assert client.request("GET", "/events", stream=True).status_code == 200  # not cached: no login
    assert logins == [True]


# ---------------------------------------------------------------------------
# --dry-run and --expect-revision
DRY_PLAN = {
    "action": "release", "app": "app", "version": "1.5", "generation": 7, "force": False,
    "noop": False, "message": "app 1.5 released in slot b",
    "start": {"version": "1.5", "slot": "b", "backend": "app_b", "network": "pigeon-app-1.5",
              "expected_up": 2, "keep": ["1.4"],
              "containers": [{"name": "app-1.5-web-1", "image": "pigeon/demoapp:1.5", "registered": True},
                             {"name": "app-1.5-api-1", "image": "pigeon/demoapp:1.5", "registered": False}]},
    "stop": [], "states": {"1.5": "release"},
    "routes_before": {"app/production": "app_a", "app/internal": "app_a", "app/version/b": None},
    "routes": {"app/production": "app_a", "app/internal": "app_b", "app/version/b": "1.5"},
    "config": {"target": "app-*", "target_type": "glob", "formula": "demoapp"},
    "loadbal": {"target": "lb-*", "target_type": "glob", "healthcheck_timeout": 30, "drain_timeout": 10},
    "converge_loadbal": False,
}


def test_dry_run_prints_the_plan_and_sends_dry_run(api, capsys):
    api.payload = {"dry_run": DRY_PLAN}
    assert cli.main(_argv(api, "--dry-run", action=("release", "--app-name", "app", "--version", "1.5"))) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "dry run: release app 1.5 at registry revision 7"
    assert "  start 2 containers of 1.5 in slot b on app-* (glob), network pigeon-app-1.5:" in out
    assert "  route app/internal: app_a -> app_b" in out
    assert "  route app/version/b: none -> 1.5" in out  # a version, not a backend: no 503
    assert not any(line.startswith("  route app/production:") for line in out)  # production unchanged
    assert "  1.5: release" in out
    sent = [r["body"][0] for r in api.requests if r["path"] == "/"]
    assert sent == [{"client": "runner", "fun": "deploy.release", "arg": [],
                     "kwarg": {"app": "app", "version": "1.5", "dry_run": True}}]  # runner, not runner_async


def test_dry_run_refused_exits_1_with_the_actions_line(api, capsys):
    api.payload = {"refused": REFUSAL}
    assert cli.main(_argv(api, "--dry-run")) == 1
    assert capsys.readouterr().err.splitlines() == [f"stacks.py: release app rec-1 refused: {REFUSAL}"]


def test_dry_run_json(api, capsys):
    api.payload = {"dry_run": DRY_PLAN}
    assert cli.main(_argv(api, "--dry-run", "--json")) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True and doc["dry_run"] is True and doc["plan"] == DRY_PLAN and doc["error"] is None


def test_expect_revision_is_sent(api, capsys):
    assert cli.main(_argv(api, "--expect-revision", "12", "--no-progress")) == 0
    sent = [r["body"][0]["kwarg"] for r in api.requests if r["path"] == "/"]
    assert sent[-1] == {"app": "app", "version": "rec-1", "expect_revision": 12}


@pytest.mark.parametrize("argv, needle", [
    (["status", "--dry-run"], "--dry-run applies to actions only"),
    (["history", "--app-name", "app", "--expect-revision", "3"], "--expect-revision applies to actions only"),
    (["rollback", "--app-name", "app", "--expect-revision", "-1"], "is not a revision"),
    (["rollback", "--app-name", "app", "--expect-revision", "x"], "is not a revision"),
    (["rollback", "--app-name", "app", "--expect-revision", "1.5"], "is not a revision"),
])
def test_dry_run_and_revision_usage_errors(capsys, argv, needle):
    _usage_error(capsys, argv, needle)


def test_plan_lines_of_a_deactivation_and_a_noop():
    plan = dict(DRY_PLAN, action="deactivate", version="1.4", start=None,
                stop=[{"version": "1.4", "slot": "a", "state": "active", "backend": "app_a"}],
                states={"1.4": None}, routes={}, message="")
    lines = cli.plan_lines(plan)
    assert "  drain backend app_a (up to 10 s), then stop and remove the containers of 1.4" in lines
    assert "  route app/production: app_a -> none (503)" in lines and "  1.4: deactivated" in lines
    assert cli.plan_lines(dict(DRY_PLAN, noop=True, message="app 1.5 is released already")) == [
        "dry run: release app 1.5 at registry revision 7", "  nothing to do: app 1.5 is released already"]


# ---------------------------------------------------------------------------
# settings that cannot work: one line, exit 2, before anything is sent
@pytest.mark.parametrize("extra, said", [
    (["--ca-file", "/nonexistent/ca.pem"], "--ca-file /nonexistent/ca.pem: No such file or directory; give the certificate"),
    (["--ca-file", str(REPO / "README.md")], "not a PEM CA bundle (no BEGIN CERTIFICATE line)"),
])
def test_a_ca_file_that_cannot_work_is_one_line(capsys, extra, said):
    argv = ["status", "--saltapi-url", "https://127.0.0.1:9", "--saltapi-user", "u",
            "--saltapi-pass-file", PASSWORD_FILE, *extra]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and said in err[0], err


@pytest.mark.parametrize("url, said", [
    ("http://127.0.0.1:8000", "use https://"),
    ("localhost:8000", "is not a URL: https://HOST:PORT"),
    ("https://", "is not a URL"),
])
def test_a_saltapi_url_that_cannot_work_is_one_line(capsys, url, said):
    with pytest.raises(SystemExit) as info:
        cli.parse_args(["status", "--saltapi-url", url])
    assert info.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and said in err[0], err


def test_plain_http_only_with_insecure():
    assert cli.parse_args(["status", "--saltapi-url", "http://127.0.0.1:8000", "--insecure"]).insecure


@pytest.mark.parametrize("command", cli.ACTIONS + cli.VIEWS)
def test_each_command_has_its_own_help(capsys, command):
    with pytest.raises(SystemExit) as info:
        cli.parse_args([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"usage: stacks.py {command} [options]"
    examples = out[out.index("examples:") + 1:]
    assert sum(line.split()[:2] == ["./stacks.py", command] for line in examples if line.strip()) == 2
    assert any("default" in line or "required" in line for line in out)


def test_the_global_help_is_still_there(capsys):
    with pytest.raises(SystemExit) as info:
        cli.parse_args(["--help"])
    assert info.value.code == 0 and "--saltapi-url" in capsys.readouterr().out


# ---------------------------------------------------------------------------
# the operator's views: lock, details, logs
HOLDER = {"action": "release", "version": "2.0", "user": "alice", "since": "2026-12-04T03:00:00Z",
          "owner": "salt-master:4242:140", "pid": 4242, "host": "master"}


def _view(api, capsys, *argv):
    code = cli.main(_argv(api, action=argv))
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err.splitlines(), api.requests[-1]["body"][0]


@pytest.mark.parametrize("argv", [("lock", "-a", "app"), ("lock", "status", "-a", "app")])
def test_lock_status_names_the_holder(api, capsys, argv):
    api.payload = {"app": {"stacks": {}, "routes": {}, "generation": 3, "lock": HOLDER}}
    code, out, err, sent = _view(api, capsys, *argv)
    assert sent == {"client": "runner", "fun": "stacks.status", "arg": [],
                    "kwarg": {"app": "app", "observe": False}}
    assert code == 0 and err == []
    assert out == ["app is locked by release 2.0 of alice since 2026-12-04T03:00:00Z (pid 4242 on master)"]


def test_lock_status_of_a_free_lock(api, capsys):
    api.payload = {"app": {"stacks": {}, "routes": {}, "generation": 3, "lock": None}}
    assert _view(api, capsys, "lock", "-a", "app")[:3] == (0, ["app is not locked"], [])


def test_lock_release_of_a_held_lock_says_why_not(api, capsys):
    api.payload = {"app": {"stacks": {}, "routes": {}, "generation": 3, "lock": HOLDER}}
    code, out, err, _ = _view(api, capsys, "lock", "release", "-a", "app")
    assert code == errors.EXIT_FAILED and out == [] and len(err) == 1
    assert err[0].startswith("stacks.py: app is locked by release 2.0 of alice")
    assert "there is no stale lock to release" in err[0] and "--wait" in err[0]


def test_lock_release_of_a_free_lock(api, capsys):
    api.payload = {"app": {"stacks": {}, "routes": {}, "generation": 3, "lock": None}}
    assert _view(api, capsys, "lock", "release", "-a", "app")[:3] == (
        0, ["app is not locked: nothing to release"], [])


def test_details_prints_each_container(api, capsys):
    api.payload = {"containers": [
        {"minion": "lab-minion", "name": "app-1.4-web-1", "version": "1.4", "slot": "a", "service": "web",
         "replica": "1", "image": "pigeon/demoapp:1.4", "state": "running", "status": "Up 2 minutes (healthy)",
         "health": "healthy", "created": time.time() - 125, "ports": []}], "problems": ["app2: no answer"]}
    code, out, err, sent = _view(api, capsys, "details", "-a", "app", "-V", "1.4")
    assert sent["fun"] == "stacks.details" and sent["kwarg"] == {"app": "app", "version": "1.4"}
    assert code == 0 and err == []
    assert out[0].split() == ["app-1.4-web-1", "healthy", "slot", "a", "on", "lab-minion", "image",
                              "pigeon/demoapp:1.4", "started", "2", "min", "ago", "ports", "-"]
    assert out[1] == "  PROBLEM: app2: no answer"


def test_logs_prints_each_line_after_its_container(api, capsys):
    api.payload = {"logs": {"lab-minion": {"app-1.4-web-2": "2026-12-04T03:00:01Z b\n",
                                           "app-1.4-web-1": "2026-12-04T03:00:00Z a1\n2026-12-04T03:00:02Z a2\n"}},
                   "problems": []}
    code, out, err, sent = _view(api, capsys, "logs", "-a", "app", "--service", "web", "--tail", "5")
    assert sent["fun"] == "stacks.logs" and sent["kwarg"] == {"app": "app", "service": "web", "tail": 5}
    assert code == 0 and err == []
    assert out == ["app-1.4-web-1 | 2026-12-04T03:00:00Z a1", "app-1.4-web-1 | 2026-12-04T03:00:02Z a2",
                   "app-1.4-web-2 | 2026-12-04T03:00:01Z b"]


@pytest.mark.parametrize("argv", [("details", "-a", "ghost"), ("logs", "-a", "ghost")])
def test_views_of_an_unknown_app_are_one_line(api, capsys, argv):
    api.payload = {"refused": "unknown app 'ghost': no stacks:ghost in the master's pillar and nothing in "
                              "the registry; did you mean app?"}
    code, out, err, _ = _view(api, capsys, *argv)
    assert code == errors.EXIT_FAILED and out == []
    assert err == [f"stacks.py: {argv[0]} refused: {api.payload['refused']}"]


@pytest.mark.parametrize("argv, message", [
    (["details"], "details needs --app-name"),
    (["logs", "-a", "app", "--tail", "0"], "--tail: a whole number from 1 to 10000"),
    (["logs", "-a", "app", "--service", "web;id"], "--service 'web;id'"),
    (["status", "release"], "'release' after status is not an option"),
    (["lock", "drop", "-a", "app"], "lock 'drop': use lock status or lock release"),
    (["watch", "-a", "app"], "watch needs the job id an action printed (20 digits)"),
    (["watch", "123; id", "-a", "app"], "watch needs the job id"),
    (["watch", "20261204031000123456"], "watch needs --app-name"),
])
def test_view_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.parse_args(argv + ["--saltapi-url", "https://salt:8000"])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_watch_follows_a_running_action_to_its_outcome(api, capsys):
    plan, ret, done = with_loadbal()
    api.script(plan, ret, done)
    api.by_fun["stacks.status"] = {"app": {"stacks": {}, "routes": {}, "generation": 1, "lock": HOLDER}}
    api.started.set()  # the action runs: its events come
    code = cli.main(_argv(api, action=("watch", JID, "-a", "app")))
    out = capsys.readouterr().out.splitlines()
    assert code == 0, out
    assert out[0] == f"watching job {JID} on app through {api.url}"
    assert [ln.split()[0] for ln in out[1:-1]] == ["loadbal", "containers", "routes"]  # once each, as they ended
    assert out[-1] == "app rec-1 released in slot a"


def test_watch_of_an_action_that_ended_shows_its_history_entry(api, capsys):
    api.by_fun["stacks.history"] = [
        {"action": "release", "version": "1.4", "result": "failed", "job": JID,
         "finished": "2026-12-04T03:00:00Z", "error": "step containers failed: x"},
        {"action": "rollback", "version": "1.3", "result": "success", "job": "20261204030000000009",
         "finished": "2026-12-04T03:01:00Z"}]  # a later action of the app: not this job
    code = cli.main(_argv(api, action=("watch", JID, "-a", "app")))
    captured = capsys.readouterr()
    assert code == errors.EXIT_FAILED
    assert captured.out.splitlines()[-1] == f"job {JID} ended: release 1.4 failed at 2026-12-04T03:00:00Z"
    assert captured.err.splitlines() == ["stacks.py: release app 1.4 failed: step containers failed: x"]


def test_ctrl_c_detaches_and_says_how_to_watch(api, capsys, monkeypatch):
    api.script(*with_loadbal())

    def interrupted(step):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "step_line", lambda step: interrupted(step))
    assert cli.main(_argv(api)) == errors.EXIT_FAILED
    err = capsys.readouterr().err.splitlines()
    assert err == [f"stacks.py: interrupted; detached from job {JID}, which goes on on the master: follow it "
                   f"with ./stacks.py watch {JID} --app-name app, or see ./stacks.py status"]


@pytest.mark.parametrize("answer, sends_cancel", [("cancel", True), ("detach", False)])
def test_ctrl_c_on_a_terminal_asks_detach_or_cancel(api, capsys, monkeypatch, answer, sends_cancel):
    args = cli.parse_args(_argv(api))
    args.job, asked = JID, []
    api.by_fun["deploy.cancel"] = {"cancel": {"app": "app", "holder": None}}
    api.by_fun["stacks.history"] = [{"action": "release", "version": "rec-1", "result": "failed", "job": JID,
                                     "error": "cancelled by pigeon at t before step routes; done: containers, "
                                              "cleanup; not run: routes"}]
    code = cli._on_interrupt(cli.make_client(args), args, print, ask=lambda a: asked.append(a.job) or answer)
    err = capsys.readouterr().err.splitlines()
    assert asked == [JID] and code == errors.EXIT_FAILED
    funs = [r["body"][0]["fun"] for r in api.requests if r["path"] == "/"]
    assert ("deploy.cancel" in funs) is sends_cancel
    if sends_cancel:
        assert err == [f"stacks.py: cancelling job {JID}", "stacks.py: release app rec-1 failed: cancelled by "
                       "pigeon at t before step routes; done: containers, cleanup; not run: routes"]
    else:
        assert err[0].startswith(f"stacks.py: interrupted; detached from job {JID}")


def test_a_cancelled_action_says_what_was_done_and_not(api, capsys):
    plan, ret, done = routes_failure()
    done["outcome"]["error"] = "cancelled by pigeon at t before step routes; done: containers; not run: routes"
    api.payload = done
    assert cli.main(_argv(api, "--no-progress")) == errors.EXIT_FAILED
    assert capsys.readouterr().err.splitlines() == [
        "stacks.py: release app rec-1 cancelled by pigeon at t before step routes; done: containers; not run: routes"]


def test_cancel_of_one_job(api, capsys):
    api.payload = {"cancel": {"app": "app", "holder": {"action": "release", "version": "1.4", "user": "alice",
                                                       "since": "t", "job": JID}}}
    code, out, err, sent = _view(api, capsys, "cancel", JID, "-a", "app")
    assert sent["kwarg"] == {"app": "app", "job": JID} and code == 0 and err == []
    assert out[0] == f"job {JID} of app: cancelled; one that waits for the lock stops now and nothing of it runs"
    assert out[1].startswith("app is locked by release 1.4 of alice since t: it stops before its next step")


def test_a_step_started_in_parallel_is_shown_with_the_outcome_not_as_failed(api):
    """A parallel state's only progress event is its start (result None): its line comes with
    the outcome, never as FAILED."""
    plan, ret, done = with_loadbal()
    api.script(plan, ret, done)
    for n, (tag, data) in enumerate(api.events):
        state = data.get("ret") or {}
        if "/prog/" in tag and state.get("__run_num__") == 0:  # loadbal, parallel: True
            api.events[n] = (tag, dict(data, ret=dict(state, result=None, duration=None,
                                                      comment="Started in a separate process")))
    lines, report = _run(api)
    assert [ln.split()[:2] for ln in lines[1:-2]] == [["containers", "ok"], ["routes", "ok"], ["loadbal", "ok"]]
    assert report["ok"] is True


def test_proxy_prints_each_slot_of_each_balancer(api, capsys):
    api.payload = {
        "slots": {"a": {"backend": "app_a", "version": "1.3", "state": "inactive"},
                  "b": {"backend": "app_b", "version": "1.4", "state": "active"},
                  "c": {"backend": "app_c", "version": None, "state": None}},
        "balancers": {"lb1": {"routes": {"app/production": "app_b", "app/internal": "app_b"}, "backends": {
            "app_a": {"counters": {"scur": 0, "stot": 10, "hrsp_2xx": 9, "hrsp_5xx": 1},
                      "servers": [{"name": "s1", "addr": "10.0.0.2:8080", "status": "UP", "check_status": "L7OK",
                                   "scur": 0}, {"name": "s2", "addr": "", "status": "MAINT (resolution)"}]},
            "app_b": {"counters": {"scur": 2, "stot": 50, "hrsp_2xx": 50},
                      "servers": [{"name": "s1", "addr": "10.0.0.4:8080", "status": "DOWN", "check_status": "L7STS",
                                   "scur": 0}]}}}},
        "problems": ["lb2: no answer"]}
    code, out, err, sent = _view(api, capsys, "proxy", "-a", "app")
    assert sent["fun"] == "stacks.proxy" and sent["kwarg"] == {"app": "app"}
    assert code == 0 and err == []
    assert out[0] == "lb1: app/internal -> app_b, app/production -> app_b"
    assert out[1].startswith("  slot a (1.3 inactive): 1/1 UP  sessions 0 now, 10 in all  responses 2xx 9 4xx 0 5xx 1")
    assert out[2].split() == ["s1", "10.0.0.2:8080", "UP", "check", "L7OK", "sessions", "0"]
    assert out[3].startswith("  slot b (1.4 active): 0/1 UP")
    assert out[4].split()[:3] == ["s1", "10.0.0.4:8080", "DOWN"]
    assert out[5] == "  slot c (app_c): not in HAProxy"
    assert out[6] == "PROBLEM: lb2: no answer"


CANCELLED = "cancelled by deployer at 2026-12-04T03:40:00.000+00:00 while it waited for the lock of app: nothing ran"


def test_cancel_stops_the_waiting_actions(api, capsys):
    api.payload = {"cancel": {"app": "app", "holder": HOLDER}}
    code, out, err, sent = _view(api, capsys, "cancel", "-a", "app")
    assert sent == {"client": "runner", "fun": "deploy.cancel", "arg": [], "kwarg": {"app": "app"}}
    assert code == 0 and err == []
    assert out == ["the actions of app: cancelled; one that waits for the lock stops now and nothing of it runs",
                   "app is locked by release 2.0 of alice since 2026-12-04T03:00:00Z (pid 4242 on master): it "
                   "stops before its next step, unless its routes step ran already (then it runs to its end); "
                   "see ./stacks.py status"]


def test_ctrl_c_while_waiting_for_the_lock_cancels_the_action(api, capsys, monkeypatch):
    api.script({"action": "release", "steps": []}, None, refused(CANCELLED))
    api.events.insert(0, (f"salt/run/{JID}/waiting", {"holder": HOLDER, "wait": 60}))
    api.by_fun["stacks.status"] = {"app": {"stacks": {}, "routes": {}, "generation": 1, "lock": HOLDER}}
    api.by_fun["deploy.cancel"] = {"cancel": {"app": "app", "holder": HOLDER}}
    real_print = print

    def interrupted_while_waiting(*args, **kwargs):
        if args and "waiting up to" in str(args[0]):
            raise KeyboardInterrupt
        return real_print(*args, **kwargs)

    monkeypatch.setattr("builtins.print", interrupted_while_waiting)
    code = cli.main(_argv(api, "--wait", "60"))
    err = capsys.readouterr().err.splitlines()
    assert code == errors.EXIT_FAILED
    assert err == [f"stacks.py: cancelling job {JID}",
                   f"stacks.py: release app rec-1 refused: {CANCELLED}"]
    runs = [r["body"][0] for r in api.requests if r["path"] == "/"][-3:]
    assert [low["fun"] for low in runs] == ["deploy.release", "deploy.cancel", "stacks.history"]
    assert runs[1]["kwarg"] == {"app": "app", "job": JID}  # this job only, not the other waiters


def test_prune_says_what_it_removed_and_kept(api, capsys):
    api.payload = {"prune": {"removed": {"lab-minion": ["pigeon/demoapp:0.9"]},
                             "kept": {"lab-minion": ["pigeon/demoapp:1.4"]}, "errors": [], "dry_run": False}}
    code, out, err, sent = _view(api, capsys, "prune", "-a", "app", "--keep", "1")
    assert sent == {"client": "runner", "fun": "deploy.prune", "arg": [], "kwarg": {"app": "app", "keep_last": 1}}
    assert code == 0 and err == []
    assert out == ["lab-minion: removed 1 images, kept 1", "  removed pigeon/demoapp:0.9", "  kept pigeon/demoapp:1.4"]


def test_prune_dry_run_and_errors(api, capsys):
    api.payload = {"prune": {"removed": {"lab-minion": ["pigeon/demoapp:0.9"]}, "kept": {"lab-minion": []},
                             "errors": ["app2: no answer"], "dry_run": True}}
    code, out, err, sent = _view(api, capsys, "prune", "-a", "app", "--dry-run")
    assert sent["kwarg"] == {"app": "app", "keep_last": 3, "dry_run": True}
    assert code == errors.EXIT_FAILED and out[0] == "lab-minion: would remove 1 images, kept 0"
    assert err == ["stacks.py: prune of app: app2: no answer"]


def test_logs_do_not_pass_terminal_escapes(api, capsys):
    api.payload = {"logs": {"m": {"c1": "2026 \x1b]0;pwned\x07red \x1b[31mX\x1b[0m\tok\n"}}, "problems": []}
    code, out, err, _ = _view(api, capsys, "logs", "-a", "app")
    assert code == 0 and out == ["c1 | 2026 ?]0;pwned?red ?[31mX?[0m\tok"]


class StepThenSilence:
    """An /events stream that gives the runner's table and one step's end, then nothing
    (its master died after the first step)."""

    JID = "20261203000000000000"

    def __init__(self, api):
        self.status = 200
        self.events = [
            (f"salt/run/{self.JID}/steps", {"data": {"steps": {"s1": "containers", "s2": "routes"}}}),
            (f"salt/job/{self.JID}/prog/m/0", {"data": {"ret": {"__id__": "s1", "result": True, "duration": 5}}})]

    def next(self, until):
        return self.events.pop(0) if self.events else None

    def close(self):
        pass


def test_a_master_that_dies_after_a_step_is_one_line(monkeypatch):
    """After a step has ended, the quiet-while check still asks the lock (a regression: the set of
    ended steps once shadowed the history look-up and raised TypeError)."""
    client = saltapi.SaltApi("http://127.0.0.1:1", "deployer", "pw", "pam", timeout=3600)
    client.token = "t"
    monkeypatch.setattr(saltapi, "EventStream", StepThenSilence)
    monkeypatch.setattr(saltapi.SaltApi, "SILENCE", 0)
    ticks, steps = [], []

    def post(path, payload):
        if payload[0]["client"] == "runner_async":
            return {"return": [{"jid": StepThenSilence.JID, "tag": "x"}]}
        return {"return": [{"app": {"stacks": {}, "routes": {}, "generation": 1, "lock": None}}]}

    monkeypatch.setattr(client, "_post", post)
    with pytest.raises(errors.StacksError) as raised:
        client.deploy("release", {"app": "app", "version": "1.0"}, on_step=steps.append, on_tick=ticks.append)
    assert str(raised.value).startswith("the action ended without a result")
    assert [s["step"] for s in steps] == ["containers"] and ticks and set(ticks) == {"routes"}


def test_watch_finds_the_jobs_history_entry_after_a_quiet_while(monkeypatch):
    client = saltapi.SaltApi("http://127.0.0.1:1", "deployer", "pw", "pam", timeout=3600)
    client.token = "t"
    monkeypatch.setattr(saltapi, "EventStream", SilentStream)
    monkeypatch.setattr(saltapi.SaltApi, "SILENCE", 0)
    looked = []

    def ended():
        looked.append(1)
        return {"job": "j", "result": "success"} if len(looked) >= 3 else None

    assert client.watch("j", "app", ended) == {"history": {"job": "j", "result": "success"}}
    assert len(looked) == 3


class StatusClient:
    def __init__(self, status):
        self.status = status

    def runner(self, fun, kwarg=None):
        assert fun == "stacks.status"
        return self.status


def test_status_counts_the_containers_docker_has_not_checked_yet_as_starting():
    entry = {"generation": 3, "stacks": {"2.0": {"state": "active", "slot": "b", "since": "t", "by": "ci"}},
             "observed": {"containers": {"2.0": {"total": 4, "running": 4, "healthy": 1, "starting": 3,
                                                 "minions": ["lab-minion"]}}, "drift": []}}
    lines = []
    cli.show_status(StatusClient({"app": entry}), cli.parse_args(["status", "--app-name", "app"]), lines.append)
    assert "  2.0              active    slot b  1/4 healthy (3 starting) on lab-minion  traffic: production, " \
           "internal/preview  (since t by ci)" in lines, lines


def test_status_prints_each_load_balancers_routes_when_there_are_several():
    entry = {"generation": 3, "stacks": {}, "observed": {
        "containers": {}, "drift": ["the load balancers disagree on app/production: lb1 -> app_a, lb2 -> no stack (503)"],
        "balancers": {"lb2": {}, "lb1": {"app/production": "app_a"}}}}
    lines = []
    cli.show_status(StatusClient({"app": entry}), cli.parse_args(["status", "--app-name", "app"]), lines.append)
    assert lines[2:] == ["  routes on lb1: app/production -> app_a", "  routes on lb2: none (503)",
                         "  DRIFT: the load balancers disagree on app/production: lb1 -> app_a, lb2 -> no stack (503)"]
    one = {"generation": 3, "stacks": {}, "observed": {"containers": {}, "drift": [], "balancers": {"lb1": {}}}}
    lines = []
    cli.show_status(StatusClient({"app": one}), cli.parse_args(["status", "--app-name", "app"]), lines.append)
    assert not any("routes on" in line for line in lines)
