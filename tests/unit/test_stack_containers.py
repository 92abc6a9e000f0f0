"""
Unit tests for srv/salt/_modules/stack_containers.py and srv/salt/_states/stack_containers.py.

Both are loaded by path, as Salt's loader would find them, with their dunders
(__salt__, __opts__) set by the tests. Nothing talks to docker: the functions
that would (_client, _ensure_networks, _ensure_image, _start_one, _inspect)
are replaced by fakes.
"""

import inspect
import socket
import threading
import time

import docker
import pytest

from srv_modules import load

sc = load("_modules/stack_containers.py", "stack_containers_module")
sc_state = load("_states/stack_containers.py", "stack_containers_state")

Error = sc.CommandExecutionError

# What saltext-dockermod's docker.get_client_args(["create_container", "host_config"]) returns:
# the parameter names of docker-py's create_container and HostConfig.
CLIENT_ARGS = {
    "create_container": [p for p in inspect.signature(docker.APIClient.create_container).parameters if p != "self"],
    "host_config": [p for p in inspect.signature(docker.types.HostConfig.__init__).parameters if p != "self"],
}

APP, VERSION, NET, DEFAULT_NET = "app", "1.2", "pigeon-app-1.2", "pigeon-lb"


def plan_container(service, replica=1, registered=False, image="registry.example/app:1.2", **config):
    """One container of the plan, shaped like stacks.containers on the master."""
    networks = [{NET: [{"aliases": [service]}]}]
    if registered:
        networks.append({DEFAULT_NET: [{"aliases": ["pigeon-app-green"]}]})
    docker_config = {"image": image, "stop_timeout": 10, "restart_policy": "unless-stopped", **config}
    return {
        "name": f"{APP}-{VERSION}-{service}-{replica}",
        "service": service,
        "registered": registered,
        "labels": {"pigeon.app": APP, "pigeon.version": VERSION, "pigeon.service": service},
        "networks": networks,
        "docker_config": docker_config,
    }


# --- states as docker inspect reports them ------------------------------------------------


def running(status=None, output=None):
    """A State of a running container; with a HEALTHCHECK when status is given."""
    state = {"Status": "running", "Running": True}
    if status is not None:
        state["Health"] = {"Status": status, "FailingStreak": 0,
                           "Log": [] if output is None else [{"ExitCode": 0, "Output": "earlier check"},
                                                             {"ExitCode": 1, "Output": output}]}
    return state


EXITED = {"Status": "exited", "Running": False, "ExitCode": 1}


def test_sanity_salt_exception_is_bound():
    """With salt importable the module raises Salt's CommandExecutionError (the state catches it)."""
    from salt.exceptions import CommandExecutionError  # pylint: disable=import-outside-toplevel

    assert sc.CommandExecutionError is CommandExecutionError
    assert sc_state.CommandExecutionError is CommandExecutionError


# --- endpoints ---------------------------------------------------------------------------


def test_endpoints_puts_the_stack_network_first_and_gathers_aliases():
    container = {"networks": [
        {DEFAULT_NET: [{"aliases": ["pigeon-app-green"]}]},
        {"pigeon-other": [{"ipv4_address": "10.1.0.5"}]},
        {NET: [{"aliases": ["web"]}, {"aliases": ["web-1", "www"]}, "not-a-dict"]},
    ]}

    assert sc.endpoints(container, NET) == [
        (NET, ["web", "web-1", "www"]),
        (DEFAULT_NET, ["pigeon-app-green"]),
        ("pigeon-other", []),
    ]


def test_endpoints_of_a_container_on_the_stack_network_only():
    assert sc.endpoints(plan_container("worker"), NET) == [(NET, ["worker"])]


def test_endpoints_with_settings_none():
    container = {"networks": [{DEFAULT_NET: None}, {NET: None}]}

    assert sc.endpoints(container, NET) == [(NET, []), (DEFAULT_NET, [])]


# --- split_config --------------------------------------------------------------------------


def test_split_config_pops_image_and_splits_create_from_host_kwargs():
    config = {"image": "x:1", "command": ["serve"], "environment": {"A": "1"}, "stop_timeout": 10,
              "restart_policy": {"Name": "always"}, "mem_limit": "256m", "healthcheck": {"Test": ["NONE"]}}

    image, create, host = sc.split_config(config, CLIENT_ARGS)

    assert image == "x:1"
    assert create == {"command": ["serve"], "environment": {"A": "1"}, "stop_timeout": 10,
                      "healthcheck": {"Test": ["NONE"]}}
    assert host == {"restart_policy": {"Name": "always"}, "mem_limit": "256m"}
    assert config["image"] == "x:1"  # the caller's dict is left alone


@pytest.mark.parametrize("reserved", ["name", "host_config", "networking_config"])
def test_split_config_never_passes_reserved_create_kwargs(reserved):
    with pytest.raises(Error) as error:
        sc.split_config({"image": "x:1", reserved: "whatever", "tty": True}, CLIENT_ARGS)

    assert str(error.value) == f"docker_config arguments docker does not know: {reserved}"


def test_split_config_image_is_not_a_create_kwarg():
    _, create, host = sc.split_config({"image": "x:1"}, CLIENT_ARGS)

    assert create == {} and host == {}


def test_split_config_names_every_unknown_key_sorted():
    with pytest.raises(Error) as error:
        sc.split_config({"image": "x:1", "zzz": 1, "networks": ["a"], "tty": True}, CLIENT_ARGS)

    assert str(error.value) == "docker_config arguments docker does not know: networks, zzz"


def test_split_config_without_image_is_an_error():
    with pytest.raises(KeyError):
        sc.split_config({"tty": True}, CLIENT_ARGS)


def test_translate_then_split_gives_docker_py_kwargs():
    translated = sc._translate({"image": "x:1", "environment": ["ROLE=api"], "restart_policy": "unless-stopped",
                                "stop_timeout": 10, "ports": ["8080"]})

    image, create, host = sc.split_config(translated, CLIENT_ARGS)

    assert image == "x:1"
    assert create["environment"] == {"ROLE": "api"}
    assert create["stop_timeout"] == 10
    assert create["ports"] == [8080]
    assert "restart_policy" not in create
    assert host["restart_policy"] == {"Name": "unless-stopped", "MaximumRetryCount": 0}
    assert set(create) == {"environment", "stop_timeout", "ports"}
    assert set(host) == {"restart_policy"}


# --- health, last_check_output, summarize ------------------------------------------------


def test_health():
    assert sc.health(EXITED) == "not running"
    assert sc.health({}) == "not running"
    assert sc.health(running()) == "healthy"  # no HEALTHCHECK: running is enough
    assert sc.health(running("healthy")) == "healthy"
    assert sc.health(running("starting")) == "starting"
    assert sc.health(running("unhealthy")) == "unhealthy"
    assert sc.health({"Running": True, "Health": {"FailingStreak": 0}}) == "starting"
    assert sc.health({"Running": False, "Health": {"Status": "healthy"}}) == "not running"


def test_last_check_output_is_the_last_entry_on_one_line():
    state = running("unhealthy", output="curl: (7) Failed to connect\n  to localhost port 8080\n")

    assert sc.last_check_output(state) == "curl: (7) Failed to connect to localhost port 8080"
    assert len(sc.last_check_output(running("unhealthy", output="y" * 500))) == 160
    assert sc.last_check_output(running("starting")) == ""
    assert sc.last_check_output(running()) == ""
    assert sc.last_check_output({"Running": True, "Health": None}) == ""


def test_summarize_all_healthy():
    assert sc.summarize({"a": running("healthy"), "b": running()}, 2) == (True, "2 of 2 containers healthy")


def test_summarize_missing_containers():
    assert sc.summarize({"a": running("healthy")}, 3) == (False, "1 of 3 containers exist")


def test_summarize_names_the_bad_ones_sorted_with_their_output():
    inspected = {
        "web-2": running("unhealthy", output="HTTP 503"),
        "web-1": running("healthy"),
        "db-1": EXITED,
        "api-1": running("starting"),
    }

    ok, message = sc.summarize(inspected, 4)

    assert not ok
    assert message == "1 of 4 containers healthy; api-1 starting, db-1 not running, web-2 unhealthy (HTTP 503)"


# --- _inspect ---------------------------------------------------------------------------


def test_inspect_filters_by_labels_and_returns_states(monkeypatch):
    calls = []

    def ps(**kwargs):
        calls.append(kwargs)
        return {"abc": {"Names": ["/app-1.2-web-1"]}, "def": {"Names": ["/app-1.2-db-1"]}}

    states = {"app-1.2-web-1": running("healthy"), "app-1.2-db-1": EXITED}
    monkeypatch.setattr(sc, "__salt__", {
        "docker.ps": ps, "docker.inspect_container": lambda name: {"State": states[name]}}, raising=False)

    assert sc._inspect(APP, VERSION) == states
    assert calls == [{"all": True, "filters": {"label": ["pigeon.app=app", "pigeon.version=1.2"]}}]


# --- wait_healthy --------------------------------------------------------------------------


@pytest.fixture
def inspections(monkeypatch):
    """Replace _inspect by a sequence of answers (the last one repeats); returns the calls list."""
    answers, calls = [], []

    def fake(app, version):
        calls.append((app, version))
        return answers.pop(0) if len(answers) > 1 else answers[0]

    monkeypatch.setattr(sc, "_inspect", fake)
    monkeypatch.setattr(sc, "_docker_url", lambda: None)
    monkeypatch.setattr(sc, "_describe", lambda url, name: None)  # no test of its own: docker's word
    return answers, calls


def test_wait_healthy_returns_once_every_container_is_healthy(inspections):
    answers, calls = inspections
    answers[:] = [
        {"web-1": running("starting")},
        {"web-1": running("starting"), "web-2": running("starting")},
        {"web-1": running("healthy"), "web-2": running("starting")},
        {"web-1": running("healthy"), "web-2": running()},
    ]

    result = sc.wait_healthy(APP, VERSION, 2, timeout=3, interval=0.01)

    assert result == {"app": APP, "version": VERSION, "healthy": 2, "message": "2 of 2 containers healthy"}
    assert calls == [(APP, VERSION)] * 4


def test_wait_healthy_fails_at_once_on_an_unhealthy_container(inspections):
    answers, calls = inspections
    answers[:] = [
        {"app-1.2-web-1": running("starting"), "app-1.2-web-2": running("starting")},
        {"app-1.2-web-1": running("healthy"),
         "app-1.2-web-2": running("unhealthy", output="curl: (22) The requested URL returned error: 500")},
    ]

    started = time.monotonic()
    with pytest.raises(Error) as error:
        sc.wait_healthy(APP, VERSION, 2, timeout=5, interval=0.01)

    assert time.monotonic() - started < 1
    assert len(calls) == 2
    message = str(error.value)
    assert message.startswith("app 1.2 not healthy (its health check failed, 0s after the gate began): ")
    assert "app-1.2-web-2 unhealthy (curl: (22) The requested URL returned error: 500)" in message
    assert "app-1.2-web-1" not in message


def test_wait_healthy_times_out_while_starting(inspections):
    answers, calls = inspections
    answers[:] = [{"app-1.2-web-1": running("starting"), "app-1.2-web-2": running("healthy")}]

    started = time.monotonic()
    with pytest.raises(Error) as error:
        sc.wait_healthy(APP, VERSION, 2, timeout=0.3, interval=0.05)
    waited = time.monotonic() - started

    assert 0.3 <= waited < 1.5
    assert len(calls) >= 3
    assert str(error.value) == "app 1.2 not healthy after 0.3s: 1 of 2 containers healthy; app-1.2-web-1 starting"


def test_wait_healthy_times_out_when_containers_are_missing(inspections):
    answers, _ = inspections
    answers[:] = [{"app-1.2-web-1": running("healthy")}]

    with pytest.raises(Error, match=r"^app 1.2 not healthy after 0.1s: 1 of 2 containers exist$"):
        sc.wait_healthy(APP, VERSION, "2", timeout=0.1, interval=0.05)


# --- the gate's own checks (docker checks a running stack only every health_interval) ------


def test_health_test_of_a_shell_check_runs_it_as_docker_does():
    inspected = {"Config": {"Healthcheck": {"Test": ["CMD-SHELL", "curl -fsS http://127.0.0.1:8080/healthz || exit 1"],
                                            "Interval": 30 * 10**9, "Timeout": 2 * 10**9, "Retries": 3}}}
    image = {"Config": {"Healthcheck": {"Interval": 10**9}}}
    assert sc.health_test(inspected, image) == {
        "cmd": ["/bin/sh", "-c", "curl -fsS http://127.0.0.1:8080/healthz || exit 1"],
        "timeout": 2.0, "retries": 3, "start_period": 0.0, "every": 1.0}


def test_health_test_uses_the_images_shell_and_docker_defaults():
    inspected = {"Config": {"Shell": ["/bin/bash", "-o", "pipefail", "-c"],
                            "Healthcheck": {"Test": ["CMD-SHELL", "check"], "StartPeriod": 5 * 10**9}}}
    assert sc.health_test(inspected) == {"cmd": ["/bin/bash", "-o", "pipefail", "-c", "check"], "timeout": 30.0,
                                         "retries": 3, "start_period": 5.0, "every": 30.0}


def test_health_test_of_an_exec_check_paced_by_the_containers_shorter_interval():
    inspected = {"Config": {"Healthcheck": {"Test": ["CMD", "/bin/check", "--quick"], "Interval": 2 * 10**9}}}
    image = {"Config": {"Healthcheck": {"Interval": 10 * 10**9}}}
    assert sc.health_test(inspected, image)["cmd"] == ["/bin/check", "--quick"]
    assert sc.health_test(inspected, image)["every"] == 2.0


@pytest.mark.parametrize("healthcheck", [None, {}, {"Test": ["NONE"]}, {"Test": []}, {"Test": ["CMD"]},
                                         {"Interval": 30 * 10**9}])
def test_health_test_of_a_container_without_one(healthcheck):
    assert sc.health_test({"Config": {"Healthcheck": healthcheck}}) is None


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


TEST = {"cmd": ["true"], "timeout": 2.0, "retries": 3, "start_period": 0.0, "every": 1.0}


def probes(clock, execute, test=TEST, deadline=1e9, describe=None):
    described = []

    def _describe(name):
        described.append(name)
        return test

    found = sc.Probes(describe or _describe, execute, deadline, clock=clock)
    found.described = described
    return found


def started(status, at="t1"):
    return dict(running(status), StartedAt=at)


def test_probes_show_a_starting_container_healthy_once_its_own_check_passed():
    clock, runs = Clock(), []
    answers = [(False, "connection refused"), (True, "ok")]
    p = probes(clock, lambda name, test, limit: runs.append((name, limit)) or answers.pop(0))
    containers = {"w-1": started("starting"), "w-2": started("healthy")}

    first = p.view(containers)
    assert sc.health(first["w-1"]) == "starting" and sc.health(first["w-2"]) == "healthy"
    assert runs == [("w-1", 2.0)] and p.described == ["w-1"]  # docker's healthy one is not checked
    clock.now += 0.1
    p.view(containers)
    assert len(runs) == 1  # not again before PROBE_EVERY
    clock.now += sc.PROBE_EVERY
    shown = p.view(containers)
    assert sc.health(shown["w-1"]) == "healthy" and len(runs) == 2
    clock.now += 5
    p.view(containers)
    assert len(runs) == 2 and p.described == ["w-1"]  # passed: checked no more, described once


def test_probes_check_every_due_container_at_once():
    clock, lock, inside, most = Clock(), threading.Lock(), [0], [0]

    def execute(name, test, limit):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.1)
        with lock:
            inside[0] -= 1
        return True, "ok"

    p = probes(clock, execute)
    shown = p.view({f"w-{n}": started("starting") for n in range(4)})
    assert most[0] == 4 and all(sc.health(state) == "healthy" for state in shown.values())


def test_probes_mark_unhealthy_after_retries_failures_at_the_images_pace():
    clock = Clock()
    p = probes(clock, lambda name, test, limit: (False, "HTTP 500"))
    states = []
    for _ in range(7):  # failures every 0.5 s count once a second (every 1.0): 0, 1, 2 s
        states.append(sc.health(p.view({"w-1": started("starting")})["w-1"]))
        clock.now += 0.5
    assert states == ["starting"] * 4 + ["unhealthy"] * 3
    ok, message = sc.summarize(p.view({"w-1": started("starting")}), 1)
    assert not ok and message == "0 of 1 containers healthy; w-1 unhealthy (HTTP 500)"


def test_probes_pace_a_slow_images_failures_at_its_own_interval():
    clock = Clock()
    p = probes(clock, lambda name, test, limit: (False, "not yet"), test=dict(TEST, every=10.0))
    seen = []
    for _ in range(50):  # 25 s: failures counted at 0, 10 and 20 s
        seen.append(sc.health(p.view({"w-1": started("starting")})["w-1"]))
        clock.now += 0.5
    assert seen.index("unhealthy") == 40


def test_probes_do_not_count_failures_within_the_start_period():
    clock = Clock()
    p = probes(clock, lambda name, test, limit: (False, "starting up"), test=dict(TEST, retries=1, start_period=3.0))
    seen = []
    for _ in range(8):
        seen.append(sc.health(p.view({"w-1": started("starting")})["w-1"]))
        clock.now += 0.5
    assert seen == ["starting"] * 6 + ["unhealthy"] * 2


def test_probes_check_a_container_docker_restarted_afresh():
    clock, answers = Clock(), [(True, "ok"), (False, "crashed again")]
    p = probes(clock, lambda name, test, limit: answers.pop(0))
    assert sc.health(p.view({"w-1": started("starting", at="t1")})["w-1"]) == "healthy"
    clock.now += 1
    # docker restarted it (a new StartedAt): the earlier pass does not count for it
    assert sc.health(p.view({"w-1": started("starting", at="t2")})["w-1"]) == "starting"
    assert p.described == ["w-1", "w-1"]


def test_probes_leave_containers_without_a_test_to_docker():
    clock, runs = Clock(), []
    p = probes(clock, lambda name, test, limit: runs.append(name), test=None)
    for _ in range(4):
        shown = p.view({"w-1": started("starting"), "w-2": EXITED})
        clock.now += 1
    assert runs == [] and p.described == ["w-1"] and sc.health(shown["w-1"]) == "starting"
    assert shown["w-2"] == EXITED


def test_probes_a_container_docker_cannot_describe_is_left_to_docker_this_round():
    clock = Clock()

    def describe(name):
        raise docker.errors.NotFound("gone")

    p = probes(clock, lambda name, test, limit: pytest.fail("not run"), describe=describe)
    assert sc.health(p.view({"w-1": started("starting")})["w-1"]) == "starting"


def test_probes_run_nothing_past_the_deadline_and_bound_each_check_by_it():
    clock, runs = Clock(), []
    p = probes(clock, lambda name, test, limit: runs.append(limit) or (False, "slow"), deadline=101.5)
    p.view({"w-1": started("starting")})
    clock.now = 102
    p.view({"w-1": started("starting")})
    assert runs == [1.5]


def test_wait_healthy_passes_on_the_gates_own_check_while_docker_says_starting(inspections, monkeypatch):
    answers, _ = inspections
    answers[:] = [{"app-1.2-web-1": running("starting"), "app-1.2-api-1": running("healthy")}]
    runs = []
    monkeypatch.setattr(sc, "_describe", lambda url, name: TEST)
    monkeypatch.setattr(sc, "_execute", lambda url, name, test, limit: runs.append(name) or (True, "ok"))

    result = sc.wait_healthy(APP, VERSION, 2, timeout=3, interval=0.01)

    assert result["message"] == "2 of 2 containers healthy" and runs == ["app-1.2-web-1"]


def test_wait_healthy_fails_when_the_gates_own_check_keeps_failing(inspections, monkeypatch):
    answers, _ = inspections
    answers[:] = [{"app-1.2-web-1": running("starting")}]
    monkeypatch.setattr(sc, "_describe", lambda url, name: dict(TEST, retries=2, every=0.05))
    monkeypatch.setattr(sc, "_execute", lambda url, name, test, limit: (False, "curl: (7) Failed to connect"))
    monkeypatch.setattr(sc, "PROBE_EVERY", 0.01)

    with pytest.raises(Error) as error:
        sc.wait_healthy(APP, VERSION, 1, timeout=5, interval=0.01)

    assert str(error.value).startswith("app 1.2 not healthy (its health check failed, ")
    assert str(error.value).endswith("app-1.2-web-1 unhealthy (curl: (7) Failed to connect)")


# --- running a check: docker's exec stream, with a deadline ---------------------------------


def frame(data, stream=1):
    return bytes([stream, 0, 0, 0]) + len(data).to_bytes(4, "big") + data


def test_read_exec_joins_stdout_and_stderr_frames_until_the_stream_ends():
    ours, theirs = socket.socketpair()
    theirs.sendall(frame(b"ok ") + frame(b"warn", 2)[:5])
    theirs.sendall(frame(b"warn", 2)[5:] + frame(b"\n"))
    theirs.close()
    assert sc.read_exec(ours, time.monotonic() + 2) == (b"ok warn\n", True)


def test_read_exec_stops_at_the_deadline_when_the_check_hangs():
    ours, theirs = socket.socketpair()
    theirs.sendall(frame(b"still trying"))
    began = time.monotonic()
    assert sc.read_exec(ours, began + 0.3) == (b"still trying", False)
    assert 0.25 <= time.monotonic() - began < 1.5
    theirs.close()


def test_read_exec_keeps_at_most_the_limit_of_a_flood():
    ours, theirs = socket.socketpair()

    def flood():
        try:
            for _ in range(200):
                theirs.sendall(frame(b"y\n" * 8000))
        except OSError:
            pass
        theirs.close()

    sender = threading.Thread(target=flood)
    sender.start()
    output, ended = sc.read_exec(ours, time.monotonic() + 5, limit=4096)
    sender.join()
    assert ended and len(output) == 4096


class ExecClient:
    """docker-py's APIClient as _execute uses it; the exec's stream is a socketpair."""

    def __init__(self, frames=b"", code=0, hang=False, fail=None, running_for=0):
        self.frames, self.code, self.hang, self.fail, self.running_for = frames, code, hang, fail, running_for
        self.calls, self.peer = [], None

    def exec_create(self, name, cmd, stdout, stderr):
        self.calls.append((name, cmd))
        if self.fail:
            raise self.fail
        return {"Id": "e1"}

    def exec_start(self, exec_id, socket):
        ours, self.peer = sockets = __import__("socket").socketpair()
        self.peer.sendall(self.frames)
        if not self.hang:
            self.peer.close()
        return sockets[0]

    def exec_inspect(self, exec_id):
        self.calls.append("inspect")
        if self.running_for:
            self.running_for -= 1
            return {"Running": True, "ExitCode": None}
        return {"Running": False, "ExitCode": self.code}

    def close(self):
        self.calls.append("closed")


def test_execute_runs_the_test_and_waits_for_its_exit_code(monkeypatch):
    client = ExecClient(frames=frame(b"ok\n"), running_for=2)
    monkeypatch.setattr(sc, "_client", lambda url, timeout=60: client)
    assert sc._execute(None, "w-1", dict(TEST, cmd=["/bin/sh", "-c", "true"]), 2.0) == (True, "ok")
    assert client.calls == [("w-1", ["/bin/sh", "-c", "true"]), "inspect", "inspect", "inspect", "closed"]


def test_execute_a_failed_test_and_a_docker_error_are_failed_checks(monkeypatch):
    client = ExecClient(frames=frame(b"HTTP 500\n  broken"), code=1)
    monkeypatch.setattr(sc, "_client", lambda url, timeout=60: client)
    assert sc._execute(None, "w-1", TEST, 2.0) == (False, "HTTP 500 broken")
    client = ExecClient(fail=docker.errors.APIError("container is restarting"))
    monkeypatch.setattr(sc, "_client", lambda url, timeout=60: client)
    passed, output = sc._execute(None, "w-1", TEST, 2.0)
    assert not passed and "container is restarting" in output and client.calls[-1] == "closed"


def test_execute_a_check_that_hangs_fails_at_its_timeout(monkeypatch):
    client = ExecClient(frames=frame(b"waiting"), hang=True)
    monkeypatch.setattr(sc, "_client", lambda url, timeout=60: client)
    began = time.monotonic()
    assert sc._execute(None, "w-1", TEST, 0.3) == (False, "health check timed out after 0.3s: waiting")
    assert time.monotonic() - began < 1.5


def test_execute_a_daemon_that_does_not_answer_is_a_failed_check(monkeypatch):
    def refuse(url, timeout=60):
        raise docker.errors.DockerException("Error while fetching server API version")

    monkeypatch.setattr(sc, "_client", refuse)
    assert sc._execute(None, "w-1", TEST, 1.0) == (False, "Error while fetching server API version")


# --- start ---------------------------------------------------------------------------------


class FakeClient:
    def __init__(self, url):
        self.url = url
        self.closed = False

    def close(self):
        self.closed = True


class StartFakes:
    """The docker side of start(), recorded."""

    def __init__(self, monkeypatch, results=None):
        self.results = results or {}  # container name -> result, or an exception to raise
        self.clients, self.networks, self.images, self.started, self.translated = [], [], [], [], []
        self.lock = threading.Lock()
        monkeypatch.setattr(sc, "_client", self._client)
        monkeypatch.setattr(sc, "_ensure_networks", self._ensure_networks)
        monkeypatch.setattr(sc, "_ensure_image", self._ensure_image)
        monkeypatch.setattr(sc, "_start_one", self._start_one)
        monkeypatch.setattr(sc, "_translate", self._translate)
        monkeypatch.delenv("DOCKER_HOST", raising=False)
        monkeypatch.setattr(sc, "__salt__", {
            "docker.get_client_args": self._get_client_args,
            "config.option": lambda key, default=None: {"docker.url": "unix:///run/fake.sock"}.get(key, default),
        }, raising=False)
        self.client_args_asked = []

    def _get_client_args(self, which):
        self.client_args_asked.append(which)
        return CLIENT_ARGS

    def _translate(self, docker_config):
        self.translated.append(docker_config)
        return dict(docker_config)

    def _client(self, url):
        client = FakeClient(url)
        self.clients.append(client)
        return client

    def _ensure_networks(self, client, names):
        self.networks.append((client, list(names)))
        return []

    def _ensure_image(self, client, image):
        self.images.append((client, image))

    def _start_one(self, url, container, stack_network, image, create, host):
        with self.lock:
            self.started.append({"url": url, "name": container["name"], "network": stack_network,
                                 "image": image, "create": create, "host": host})
        result = self.results.get(container["name"], "created")
        if isinstance(result, Exception):
            raise result
        return result


def three_containers():
    return [
        plan_container("web", 1, registered=True),
        plan_container("web", 2, registered=True),
        plan_container("db", 1, image="postgres:16", environment={"POSTGRES_DB": "app"}),
    ]


def test_start_returns_only_what_changed(monkeypatch):
    fakes = StartFakes(monkeypatch, results={"app-1.2-web-2": None, "app-1.2-db-1": "started"})
    containers = three_containers()

    changed = sc.start(APP, VERSION, NET, containers)

    assert changed == {"app-1.2-web-1": "created", "app-1.2-db-1": "started"}
    assert fakes.client_args_asked == [["create_container", "host_config"]]
    assert fakes.translated == [c["docker_config"] for c in containers]
    assert sorted(s["name"] for s in fakes.started) == sorted(c["name"] for c in containers)
    db = next(s for s in fakes.started if s["name"] == "app-1.2-db-1")
    assert db == {"url": "unix:///run/fake.sock", "name": "app-1.2-db-1", "network": NET, "image": "postgres:16",
                  "create": {"stop_timeout": 10, "environment": {"POSTGRES_DB": "app"}},
                  "host": {"restart_policy": "unless-stopped"}}
    # one client of its own for the networks and images, closed after
    assert [c.url for c in fakes.clients] == ["unix:///run/fake.sock"]
    assert fakes.clients[0].closed
    assert [image for _, image in fakes.images] == ["postgres:16", "registry.example/app:1.2"]


def test_start_requests_the_stack_network_first_then_the_others_once(monkeypatch):
    fakes = StartFakes(monkeypatch)
    containers = three_containers()
    containers[2]["networks"].append({"pigeon-aaa-shared": [{"aliases": ["db"]}]})

    sc.start(APP, VERSION, NET, containers)

    assert [names for _, names in fakes.networks] == [[NET, "pigeon-aaa-shared", DEFAULT_NET]]


def test_start_uses_docker_host_when_no_docker_url_is_configured(monkeypatch):
    fakes = StartFakes(monkeypatch)
    monkeypatch.setattr(sc, "__salt__", {**sc.__salt__, "config.option": lambda key, default=None: default})
    monkeypatch.setenv("DOCKER_HOST", "tcp://docker.example:2375")

    sc.start(APP, VERSION, NET, [plan_container("web")])

    assert fakes.clients[0].url == "tcp://docker.example:2375"
    assert [s["url"] for s in fakes.started] == ["tcp://docker.example:2375"]


def test_start_raises_one_error_naming_the_container_that_did_not_start(monkeypatch):
    fakes = StartFakes(monkeypatch, results={
        "app-1.2-web-2": Error("app-1.2-web-2: Conflict. The container name is already in use")})

    with pytest.raises(Error) as error:
        sc.start(APP, VERSION, NET, three_containers())

    assert str(error.value) == ("app 1.2: 1 of 3 containers did not start: "
                                "app-1.2-web-2: Conflict. The container name is already in use")
    assert len(fakes.started) == 3  # the others were still started


def test_start_names_the_container_of_an_unexpected_exception(monkeypatch):
    StartFakes(monkeypatch, results={"app-1.2-db-1": ValueError("boom"),
                                     "app-1.2-web-1": Error("app-1.2-web-1: no such image")})

    with pytest.raises(Error) as error:
        sc.start(APP, VERSION, NET, three_containers())

    assert str(error.value) == ("app 1.2: 2 of 3 containers did not start: "
                                "app-1.2-db-1: boom; app-1.2-web-1: no such image")


def test_start_turns_a_docker_error_on_the_networks_into_one_line(monkeypatch):
    import docker

    fakes = StartFakes(monkeypatch)

    def refuse(client, names):
        raise docker.errors.APIError("500 Server Error", explanation="could not find an available, "
                                     "non-overlapping IPv4 address pool")

    monkeypatch.setattr(sc, "_ensure_networks", refuse)

    with pytest.raises(Error) as error:
        sc.start(APP, VERSION, NET, three_containers())

    assert str(error.value) == ("app 1.2: docker refused the stack's networks or images: could not "
                                "find an available, non-overlapping IPv4 address pool")
    assert fakes.started == [] and fakes.clients[0].closed


def test_start_refuses_an_unknown_docker_config_key_before_touching_docker(monkeypatch):
    fakes = StartFakes(monkeypatch)
    containers = [plan_container("web", bogus_option=True)]

    with pytest.raises(Error, match="docker does not know: bogus_option"):
        sc.start(APP, VERSION, NET, containers)

    assert fakes.clients == [] and fakes.networks == [] and fakes.started == []


# --- removing stacks (remove, remove_leftovers) ---------------------------------------------


class DockerFake:
    """The docker daemon as docker-py's APIClient sees it, for the removal functions: the
    containers (name -> labels), networks, and what was stopped/removed, from any thread."""

    def __init__(self, monkeypatch, containers, networks=()):
        self.containers_ = dict(containers)
        self.networks_ = set(networks)
        self.stopped, self.removed, self.removed_networks, self.timeouts = [], [], [], []
        self.stop_timeouts = []
        self.lock = threading.Lock()
        fake = self

        class Client:
            def __init__(self, timeout):
                fake.timeouts.append(timeout)

            def containers(self, **kwargs):
                assert kwargs["all"] is True  # stopped containers too
                wanted = dict(f.split("=", 1) for f in kwargs["filters"]["label"])
                return [{"Names": [f"/{name}"], "Labels": marks}
                        for name, marks in sorted(fake.containers_.items())
                        if all(marks.get(k) == v for k, v in wanted.items())]

            def inspect_container(self, name):
                return {"Config": {"StopTimeout": 7}}

            def stop(self, name, timeout=None):
                with fake.lock:
                    fake.stopped.append(name)
                    fake.stop_timeouts.append(timeout)

            def remove_container(self, name, force=False):
                with fake.lock:
                    fake.removed.append((name, force))
                    fake.containers_.pop(name, None)

            def remove_network(self, name):
                import docker  # pylint: disable=import-outside-toplevel

                if name not in fake.networks_:
                    raise docker.errors.NotFound("no such network")
                fake.networks_.discard(name)
                fake.removed_networks.append(name)

            def close(self):
                pass

        monkeypatch.setattr(sc, "_client", lambda url, timeout=60: Client(timeout))
        monkeypatch.setattr(sc, "_docker_url", lambda: None)


def labels(app, version, network=True):
    marks = {"pigeon.app": app, "pigeon.version": version}
    if network:
        marks["pigeon.network"] = f"pigeon-{app}-{version}"
    return marks


def test_remove_stops_and_removes_one_stack_and_its_network(monkeypatch):
    fake = DockerFake(monkeypatch, {
        "app-1.2-web-1": labels("app", "1.2"), "app-1.2-web-2": labels("app", "1.2"),
        "app-1.3-web-1": labels("app", "1.3"), "other-1.2-web-1": labels("other", "1.2")},
        networks={"pigeon-app-1.2", "pigeon-app-1.3"})
    assert sc.remove("app", "1.2", "pigeon-app-1.2") == ["app-1.2-web-1", "app-1.2-web-2"]
    assert sorted(fake.stopped) == ["app-1.2-web-1", "app-1.2-web-2"]  # gracefully, first
    assert sorted(fake.containers_) == ["app-1.3-web-1", "other-1.2-web-1"]
    assert fake.removed_networks == ["pigeon-app-1.2"]
    # every call is bounded (60 s); a stop gets the container's own stop timeout on top
    assert None not in fake.timeouts and fake.stop_timeouts == [7, 7]


def test_remove_of_a_stack_that_is_gone_removes_its_network_only(monkeypatch):
    fake = DockerFake(monkeypatch, {}, networks={"pigeon-app-1.2"})
    assert sc.remove("app", "1.2", "pigeon-app-1.2") == []
    assert fake.removed_networks == ["pigeon-app-1.2"]
    assert sc.remove("app", "1.2", "pigeon-app-1.2") == []  # and again: nothing, no error


def test_remove_leftovers_keeps_the_registrys_versions(monkeypatch):
    fake = DockerFake(monkeypatch, {
        "app-1.1-web-1": labels("app", "1.1"), "app-1.2-web-1": labels("app", "1.2"),
        "app-bad-web-1": labels("app", "bad"), "app-bad-web-2": labels("app", "bad"),
        "app-old-web-1": labels("app", "old", network=False), "other-9-web-1": labels("other", "9")},
        networks={"pigeon-app-bad"})
    removed = sc.remove_leftovers("app", ["1.1", "1.2"])
    assert removed == {"bad": ["app-bad-web-1", "app-bad-web-2"], "old": ["app-old-web-1"]}
    assert fake.stopped == []  # they never took traffic: removed at once
    assert all(force for _, force in fake.removed)
    assert sorted(fake.containers_) == ["app-1.1-web-1", "app-1.2-web-1", "other-9-web-1"]
    assert fake.removed_networks == ["pigeon-app-bad"]
    assert sc.remove_leftovers("app", ["1.1", "1.2"]) == {}


def test_a_container_docker_will_not_remove_fails_in_one_line(monkeypatch):
    import docker  # pylint: disable=import-outside-toplevel

    fake = DockerFake(monkeypatch, {"app-1.2-web-1": labels("app", "1.2")})

    def refuse(url, name, graceful):
        raise sc.CommandExecutionError(f"{name}: removal of container is already in progress")

    monkeypatch.setattr(sc, "_remove_one", refuse)
    with pytest.raises(sc.CommandExecutionError) as info:
        sc.remove("app", "1.2")
    assert str(info.value) == ("1 of 1 containers could not be removed: app-1.2-web-1: removal of "
                               "container is already in progress")
    assert "\n" not in str(info.value) and fake.removed == [] and docker


# --- the state -----------------------------------------------------------------------------


class StateSalt(dict):
    """A __salt__ for the state: stack_containers.start and .wait_healthy, recorded."""

    def __init__(self, start=None, healthy=None):
        super().__init__()
        self.calls = []
        self._start, self._healthy = start, healthy
        self["stack_containers.start"] = self.start
        self["stack_containers.wait_healthy"] = self.wait_healthy

    def start(self, app, version, network, containers, addresses=None):
        self.calls.append(("start", app, version, network, len(containers)))
        if isinstance(self._start, Exception):
            raise self._start
        return self._start if self._start is not None else {}

    def wait_healthy(self, app, version, count, timeout=60):
        self.calls.append(("wait_healthy", app, version, count, timeout))
        if isinstance(self._healthy, Exception):
            raise self._healthy
        return {"app": app, "version": version, "healthy": count, "message": self._healthy}


def run_state(monkeypatch, salt, test=False, **kwargs):
    monkeypatch.setattr(sc_state, "__opts__", {"test": test}, raising=False)
    monkeypatch.setattr(sc_state, "__salt__", salt, raising=False)
    return sc_state.running("app 1.2 containers", APP, VERSION, NET, three_containers(), **kwargs)


def test_state_running_with_changes(monkeypatch):
    salt = StateSalt(start={"app-1.2-web-1": "created", "app-1.2-db-1": "started"})

    ret = run_state(monkeypatch, salt)

    assert ret == {"name": "app 1.2 containers", "result": True,
                   "changes": {"containers": {"app-1.2-web-1": "created", "app-1.2-db-1": "started"}},
                   "comment": "3 containers of app 1.2 running"}
    assert salt.calls == [("start", APP, VERSION, NET, 3)]


def test_state_running_without_changes(monkeypatch):
    ret = run_state(monkeypatch, StateSalt(start={}))

    assert ret["result"] is True and ret["changes"] == {}


def test_state_healthy_timeout_waits_and_uses_its_message(monkeypatch):
    salt = StateSalt(start={"app-1.2-web-1": "created"}, healthy="3 of 3 containers healthy")

    ret = run_state(monkeypatch, salt, healthy_timeout=30)

    assert ret["result"] is True
    assert ret["comment"] == "3 of 3 containers healthy"
    assert ret["changes"] == {"containers": {"app-1.2-web-1": "created"}}
    assert salt.calls == [("start", APP, VERSION, NET, 3), ("wait_healthy", APP, VERSION, 3, 30)]


def test_state_failing_start(monkeypatch):
    salt = StateSalt(start=Error("app 1.2: 1 of 3 containers did not start: app-1.2-web-2: Conflict"),
                     healthy="unused")

    ret = run_state(monkeypatch, salt, healthy_timeout=30)

    assert ret["result"] is False
    assert ret["comment"] == "app 1.2: 1 of 3 containers did not start: app-1.2-web-2: Conflict"
    assert ret["changes"] == {}
    assert [call[0] for call in salt.calls] == ["start"]


def test_state_failing_health(monkeypatch):
    message = "app 1.2 not healthy after 30s: 2 of 3 containers healthy; app-1.2-db-1 starting"
    salt = StateSalt(start={"app-1.2-db-1": "created"}, healthy=Error(message))

    ret = run_state(monkeypatch, salt, healthy_timeout=30)

    assert ret["result"] is False
    assert ret["comment"] == message
    assert ret["changes"] == {"containers": {"app-1.2-db-1": "created"}}
    assert [call[0] for call in salt.calls] == ["start", "wait_healthy"]


def test_state_test_mode_calls_nothing(monkeypatch):
    salt = StateSalt(start=Error("must not be called"), healthy=Error("must not be called"))

    ret = run_state(monkeypatch, salt, test=True, healthy_timeout=30)

    assert ret == {"name": "app 1.2 containers", "result": None, "changes": {},
                   "comment": "3 containers of app 1.2 would be running"}
    assert salt.calls == []


def test_state_running_removes_leftovers_first_and_says_so(monkeypatch):
    salt = StateSalt(start={"app-1.2-web-1": "created"})
    salt["stack_containers.remove_leftovers"] = lambda app, keep: (
        salt.calls.append(("leftovers", app, keep)) or {"bad": ["app-bad-web-1"]})

    ret = run_state(monkeypatch, salt, keep=["1.1"])

    assert ret["result"] is True
    assert ret["changes"] == {"leftovers_removed": {"bad": ["app-bad-web-1"]},
                              "containers": {"app-1.2-web-1": "created"}}
    # only the registry's versions are kept (an earlier try of this one goes); then the stack starts
    assert salt.calls == [("leftovers", APP, ["1.1"]), ("start", APP, VERSION, NET, 3)]


def test_state_absent(monkeypatch):
    monkeypatch.setattr(sc_state, "__opts__", {"test": False}, raising=False)
    removed = []
    monkeypatch.setattr(sc_state, "__salt__", {"stack_containers.remove": lambda app, version, network: (
        removed.append((app, version, network)) or ["app-1.2-web-1"])}, raising=False)
    ret = sc_state.absent("app 1.2", "app", "1.2", "pigeon-app-1.2")
    assert ret == {"name": "app 1.2", "result": True, "changes": {"removed": ["app-1.2-web-1"]},
                   "comment": "1 containers of app 1.2 removed"}
    assert removed == [("app", "1.2", "pigeon-app-1.2")]


def test_a_docker_that_does_not_answer_is_one_line(monkeypatch):
    import docker  # pylint: disable=import-outside-toplevel

    def down(url, timeout=60):
        raise docker.errors.DockerException("Error while fetching server API version: connection refused")

    monkeypatch.setattr(sc, "_client", down)
    monkeypatch.setattr(sc, "_docker_url", lambda: None)
    for call in (lambda: sc.remove("app", "1.2"), lambda: sc.remove_leftovers("app", ["1.1"])):
        with pytest.raises(sc.CommandExecutionError) as info:
            call()
        assert "docker does not answer: DockerException: Error while fetching" in str(info.value)
        assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------
# the operator's views: details and logs
class ViewClient:
    """docker's APIClient as the views use it: containers() by label, logs() of one."""

    def __init__(self):
        self.filters, self.logged = [], []
        self.listed = [
            {"Names": ["/app-1.4-web-1"], "Image": "pigeon/demoapp:1.4", "State": "running",
             "Status": "Up 3 minutes (healthy)", "Created": 1764817200,
             "Ports": [{"PrivatePort": 8080, "Type": "tcp"},
                       {"IP": "0.0.0.0", "PrivatePort": 8080, "PublicPort": 32768, "Type": "tcp"}],
             "Labels": {"pigeon.app": "app", "pigeon.version": "1.4", "pigeon.slot": "a",
                        "pigeon.service": "web", "pigeon.replica": "1"}},
            {"Names": ["/app-1.3-web-1"], "Image": "pigeon/demoapp:1.3", "State": "exited",
             "Status": "Exited (137) 1 minute ago", "Created": 1764817000, "Ports": [],
             "Labels": {"pigeon.app": "app", "pigeon.version": "1.3", "pigeon.slot": "b",
                        "pigeon.service": "web", "pigeon.replica": "1"}},
        ]

    def containers(self, all=False, filters=None):  # pylint: disable=redefined-builtin
        self.filters.append(filters)
        return self.listed

    def logs(self, name, **kwargs):
        self.logged.append((name, kwargs))
        return f"2026-12-04T03:00:00Z {name} says hello\n".encode()

    def close(self):
        pass


@pytest.fixture
def view_client(monkeypatch):
    client = ViewClient()
    monkeypatch.setattr(sc, "_client", lambda url, timeout=60: client)
    monkeypatch.setattr(sc, "_docker_url", lambda: None)
    return client


def test_details_lists_each_container_with_its_health(view_client):
    found = sc.details("app", "1.4")
    assert view_client.filters == [{"label": ["pigeon.app=app", "pigeon.version=1.4"]}]
    assert [c["name"] for c in found] == ["app-1.3-web-1", "app-1.4-web-1"]  # by version, then name
    web = found[1]
    assert web == {"name": "app-1.4-web-1", "version": "1.4", "slot": "a", "service": "web", "replica": "1",
                   "image": "pigeon/demoapp:1.4", "state": "running", "status": "Up 3 minutes (healthy)",
                   "health": "healthy", "created": 1764817200, "ports": ["0.0.0.0:32768->8080/tcp"]}
    assert found[0]["health"] == "exited"


@pytest.mark.parametrize("status, state, health", [
    ("Up 1 second (health: starting)", "running", "starting"),
    ("Up 2 minutes (unhealthy)", "running", "unhealthy"),
    ("Up 2 minutes", "running", "running"),
    ("Created", "created", "created"),
])
def test_the_health_is_read_from_dockers_status(status, state, health):
    assert sc._health_of_status(status, state) == health


def test_logs_of_one_service_time_stamped(view_client):
    found = sc.logs("app", service="web", tail=5)
    assert view_client.filters == [{"label": ["pigeon.app=app", "pigeon.service=web"]}]
    assert found == {"app-1.4-web-1": "2026-12-04T03:00:00Z app-1.4-web-1 says hello\n",
                     "app-1.3-web-1": "2026-12-04T03:00:00Z app-1.3-web-1 says hello\n"}
    assert view_client.logged[0][1] == {"stdout": True, "stderr": True, "timestamps": True, "tail": 5}


def test_the_views_say_in_one_line_that_docker_does_not_answer(monkeypatch):
    def down(url, timeout=60):
        raise docker.errors.DockerException("Error while fetching server API version: connection refused")

    monkeypatch.setattr(sc, "_client", down)
    monkeypatch.setattr(sc, "_docker_url", lambda: None)
    for call in (lambda: sc.details("app"), lambda: sc.logs("app")):
        with pytest.raises(sc.CommandExecutionError) as info:
            call()
        assert str(info.value).startswith("app: docker does not answer: DockerException") and "\n" not in str(info.value)


@pytest.mark.parametrize("template, repo_tag, version", [
    ("pigeon/demoapp", "pigeon/demoapp:1.4", "1.4"),
    ("pigeon/demoapp", "pigeon/demoapp-x:1.4", None),
    ("pigeon/demoapp", "other/demoapp:1.4", None),
    ("registry:5000/shop/web", "registry:5000/shop/web:2.0-rc1", "2.0-rc1"),
    ("shop/web:{version}-slim", "shop/web:2.0-slim", "2.0"),
    ("shop/web:{version}-slim", "shop/web:2.0", None),
    ("shop/base:12", "shop/base:12", None),  # a tag of its own: no version
    ("app", "app:1.0", "1.0"),
    # the version only in the tag: no template makes another repository's image the app's
    ("{version}:latest", "redis:latest", None),
    ("{version}/app:1", "other/app:1", None),
    ("reg:5000/{version}", "reg:5000/x", None),
    ("reg:5000/web:{version}", "reg:5000/web:1.2", "1.2"),
])
def test_the_version_of_an_image(template, repo_tag, version):
    assert sc._version_of(template, repo_tag) == version


class PruneClient(ViewClient):
    def __init__(self):
        super().__init__()
        self.removed = []
        self.listed = [{"Image": "pigeon/demoapp:1.2", "ImageID": "sha256:c12"}]  # a stopped container of 1.2
        self.stock = [
            {"Id": "sha256:c10", "RepoTags": ["pigeon/demoapp:1.0"], "Created": 100},
            {"Id": "sha256:c11", "RepoTags": ["pigeon/demoapp:1.1"], "Created": 110},
            {"Id": "sha256:c12", "RepoTags": ["pigeon/demoapp:1.2"], "Created": 120},
            {"Id": "sha256:c13", "RepoTags": ["pigeon/demoapp:1.3"], "Created": 130},
            {"Id": "sha256:c14", "RepoTags": ["pigeon/demoapp:1.4"], "Created": 140},
            {"Id": "sha256:b", "RepoTags": ["pigeon/base:bookworm"], "Created": 1},
            {"Id": "sha256:none", "RepoTags": None, "Created": 1},
        ]

    def images(self):
        return self.stock

    def remove_image(self, repo_tag):
        if repo_tag == "pigeon/demoapp:1.1":
            raise docker.errors.APIError("conflict: unable to remove repository reference (in use)")
        self.removed.append(repo_tag)


@pytest.fixture
def prune_client(monkeypatch):
    client = PruneClient()
    monkeypatch.setattr(sc, "_client", lambda url, timeout=60: client)
    monkeypatch.setattr(sc, "_docker_url", lambda: None)
    return client


def test_prune_keeps_the_registrys_the_used_and_the_newest_others(prune_client):
    result = sc.prune_images("app", ["pigeon/demoapp"], keep=["1.4"], last=1)
    # 1.4: the registry's; 1.2: a container uses it; 1.3: the newest other; 1.0 and 1.1 go
    assert result["kept"] == ["pigeon/demoapp:1.2", "pigeon/demoapp:1.3", "pigeon/demoapp:1.4"]
    assert prune_client.removed == ["pigeon/demoapp:1.0"]
    assert result["removed"] == ["pigeon/demoapp:1.0"]
    assert result["errors"] == ["pigeon/demoapp:1.1: conflict: unable to remove repository reference (in use)"]


def test_prune_dry_run_removes_nothing(prune_client):
    result = sc.prune_images("app", ["pigeon/demoapp"], keep=[], last=0, dry_run=True)
    assert prune_client.removed == [] and "pigeon/base:bookworm" not in result["removed"]
    assert result["removed"] == ["pigeon/demoapp:1.0", "pigeon/demoapp:1.1", "pigeon/demoapp:1.3",
                                 "pigeon/demoapp:1.4"]


@pytest.mark.parametrize("dry_run", [False, True])
def test_prune_removes_the_build_folders_of_the_versions_not_kept(prune_client, tmp_path, dry_run):
    build = tmp_path / "build"
    for name in ("1.0", "1.1", "1.2", "1.3", "1.4", "0.1-failed", ".hidden"):
        (build / name).mkdir(parents=True)
        (build / name / "Dockerfile").write_text("FROM x\n")
    (build / "notes.txt").write_text("a file: left alone\n")
    (tmp_path / "elsewhere").mkdir()
    (build / "0.9").symlink_to(tmp_path / "elsewhere")  # a link: left alone
    result = sc.prune_images("app", ["pigeon/demoapp"], keep=["1.4"], last=1, dry_run=dry_run,
                             build_dir=str(build))
    # kept: 1.4 (registry), 1.2 (a container), 1.3 (newest other); 1.0's image goes, and its folder;
    # 1.1's image could not be removed, so its folder stays; a folder of a version with no image of
    # the app (another app's, a failed build) is not the app's: it stays
    # (a dry run does not try: it would remove 1.1's too)
    assert result["folders"] == [str(build / "1.0")] + ([str(build / "1.1")] if dry_run else [])
    left = sorted(p.name for p in build.iterdir())
    gone = [] if dry_run else ["1.0"]
    assert left == sorted({".hidden", "0.1-failed", "0.9", "1.0", "1.1", "1.2", "1.3", "1.4", "notes.txt"}
                          - set(gone))
    assert (tmp_path / "elsewhere").is_dir()


def test_prune_without_the_build_folder_says_nothing_of_folders(prune_client, tmp_path):
    result = sc.prune_images("app", ["pigeon/demoapp"], keep=["1.4"], last=1, build_dir=str(tmp_path / "none"))
    assert result["folders"] == [] and all("none" not in e for e in result["errors"])


class OneContainerClient:
    """A docker client that has one container, with these labels and state."""

    def __init__(self, labels, running):
        self.labels, self.running, self.started = labels, running, []

    def inspect_container(self, name):
        return {"State": {"Running": self.running}, "Config": {"Labels": self.labels}}

    def start(self, name):
        self.started.append(name)

    def close(self):
        pass


CONTAINER = {"name": "shop-web-2-api-1", "labels": {"pigeon.app": "shop", "pigeon.version": "web-2"}}


def test_a_stopped_container_of_the_stack_is_started(monkeypatch):
    client = OneContainerClient({"pigeon.app": "shop", "pigeon.version": "web-2"}, running=False)
    monkeypatch.setattr(sc, "_client", lambda url, timeout=60: client)
    assert sc._start_one(None, CONTAINER, "net", "img", {}, {}) == "started"
    assert client.started == ["shop-web-2-api-1"]


def test_a_container_of_another_app_with_the_same_name_is_never_started(monkeypatch):
    # app shop-web version 2 names its containers as app shop version web-2 does
    client = OneContainerClient({"pigeon.app": "shop-web", "pigeon.version": "2"}, running=False)
    monkeypatch.setattr(sc, "_client", lambda url, timeout=60: client)
    with pytest.raises(sc.CommandExecutionError, match="two apps' names collide"):
        sc._start_one(None, CONTAINER, "net", "img", {}, {})
    assert client.started == []


def test_prune_leaves_a_build_dir_that_is_a_link(prune_client, tmp_path):
    (tmp_path / "real" / "1.0").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    result = sc.prune_images("app", ["pigeon/demoapp"], keep=["1.4"], last=1, build_dir=str(tmp_path / "link"))
    assert result["folders"] == [] and (tmp_path / "real" / "1.0").is_dir()
    assert any("is a link" in e for e in result["errors"])
