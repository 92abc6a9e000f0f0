"""Unit tests for srv/salt/_runners/stacks.py (the registry's views): an unknown app is an error."""

import pytest

from srv_modules import load, utils_dunder

schema = load("_utils/pigeon_schema.py", "pigeon_schema_for_views")
definition_module = load("_utils/pigeon_definition.py", "pigeon_definition_for_views")


@pytest.fixture
def views():
    module = load("_runners/stacks.py", "stacks_views_under_test")
    history = {"app": [{"action": "release", "result": "success"}]}
    utils = utils_dunder(schema, definition_module)
    utils.update({
        "pigeon_registry.definitions": lambda: {"app": {}, "shop": {}},
        "pigeon_registry.apps": lambda: ["app", "old"],
        "pigeon_registry.history": lambda app, limit: history.get(app, []),
        "pigeon_registry.load": lambda app: {"app": app, "stacks": {}, "routes": {}, "generation": 0},
        "pigeon_registry.holder": lambda app: None,
    })
    module.__utils__ = utils
    module.__context__ = {}
    return module


@pytest.mark.parametrize("fun, kwargs", [("history", {}), ("status", {"observe": True})])
def test_an_unknown_app_is_refused_with_a_suggestion(views, fun, kwargs):
    result = getattr(views, fun)(app="ap", **kwargs)
    assert result == {"refused": "unknown app 'ap': no stacks:ap in the master's pillar and nothing "
                                 "in the registry; did you mean app?"}
    assert views.__context__["retcode"] == 1


def test_without_a_close_name_the_known_apps_are_listed(views):
    assert views.history(app="zzz")["refused"].endswith("; known apps: app, old, shop")


def test_an_app_of_the_pillar_or_of_the_registry_is_known(views):
    assert views.history(app="app") == [{"action": "release", "result": "success"}]
    assert views.history(app="shop") == []  # in the pillar, never deployed
    assert views.history(app="old") == []   # in the registry, gone from the pillar


def test_status_without_observing_asks_no_pillar(views):
    # the CLI's silence check (observe=False) must work for an app whose first release runs
    views.__utils__["pigeon_registry.definitions"] = lambda: pytest.fail("pillar compiled")
    assert "brand-new" in views.status(app="brand-new", observe=False)


def _ps(*containers):
    return {f"id{i}": {"Names": [f"/{name}"], "Status": status,
                       "Labels": {"pigeon.app": "app", "pigeon.version": version}}
            for i, (name, version, status) in enumerate(containers)}


ROUTED_A = {"app/production": "app_a", "app/internal": "app_a"}


def _observe_lab(views, monkeypatch, containers, lock_=None, **config):
    """_observe of the lab's app (2 web replicas, 1.0 active in slot a, HAProxy routing it) with
    docker ps answering these (name, version, status) containers."""
    answers = {"docker.ps": {"lab-minion": _ps(*containers)}, "haproxy_runtime.show_map": {"lab-minion": ROUTED_A}}
    monkeypatch.setattr(views, "_ask", lambda tgt, tgt_type, fun, **kw: answers[fun])
    definition = {"config": {"target": "lab-minion", **config}, "loadbal": {"target": "lab-minion"},
                  "task_definitions": {"count": 2, "web": {}}}
    entry = {"stacks": {"1.0": {"state": "active", "slot": "a"}}, "routes": dict(ROUTED_A)}
    return views._observe("app", definition, entry, lock_)


def test_drift_names_the_containers_that_are_not_healthy_and_spares_the_work_in_progress(views, monkeypatch):
    observed = _observe_lab(views, monkeypatch, [
        ("app-1.0-web-1", "1.0", "Up 2 minutes (unhealthy)"), ("app-1.0-web-2", "1.0", "Up 2 minutes (healthy)"),
        ("app-2.0-web-1", "2.0", "Up 1 second (health: starting)"),
        ("app-0.9-web-1", "0.9", "Exited (0) 1 hour ago")], {"action": "release", "version": "2.0"})
    assert observed["in_progress"] == "2.0"  # the release holding the lock is starting it: no drift
    assert observed["drift"] == [
        "app 1.0: 1 of 2 containers not healthy: app-1.0-web-1 on lab-minion (Up 2 minutes (unhealthy)); "
        "see docker logs on the minion, or stacks.py deactivate --app-name app --version 1.0",
        "app 0.9: containers that the registry does not know (left by an interrupted action, or a failed "
        "release kept with --keep-failed); the next release removes them, or run: stacks.py deactivate "
        "--app-name app --version 0.9"]


@pytest.mark.parametrize("status, seconds", [
    ("Up Less than a second (health: starting)", 0), ("Up 5 seconds (health: starting)", 5),
    ("Up 1 second", 1), ("Up About a minute (healthy)", 60), ("Up 2 minutes (health: starting)", 120),
    ("Up About an hour", 3600), ("Up 3 hours (unhealthy)", 10800), ("Up 2 days", 172800),
    ("Exited (0) 1 hour ago", None), ("Restarting (1) 2 seconds ago", None), ("", None)])
def test_uptime_from_dockers_status_text(views, status, seconds):
    assert views._uptime(status) == seconds


def test_a_container_starting_for_far_longer_than_the_health_interval_is_drift(views, monkeypatch):
    observed = _observe_lab(views, monkeypatch, [
        ("app-1.0-web-1", "1.0", "Up 3 minutes (health: starting)"),
        ("app-1.0-web-2", "1.0", "Up 1 minute (health: starting)")], health_interval=30)
    assert observed["drift"][0].startswith(
        "app 1.0: 1 of 2 containers not healthy: app-1.0-web-1 on lab-minion (Up 3 minutes (health: starting))")


def test_a_container_docker_has_not_checked_yet_is_starting_not_drift(views, monkeypatch):
    # docker checks a running stack every config:health_interval: until its first check of a
    # (re)started container, it says "health: starting"; the release's gate checked it
    observed = _observe_lab(views, monkeypatch, [
        ("app-1.0-web-1", "1.0", "Up 5 seconds (health: starting)"), ("app-1.0-web-2", "1.0", "Up 2 minutes (healthy)")])
    assert observed["drift"] == []
    seen = observed["containers"]["1.0"]
    assert (seen["total"], seen["running"], seen["healthy"], seen["starting"]) == (2, 2, 1, 1)


@pytest.mark.parametrize("fun", ["details", "logs"])
def test_the_container_views_are_refused_for_an_unknown_app(views, fun):
    assert getattr(views, fun)(app="ap")["refused"].endswith("did you mean app?")


@pytest.mark.parametrize("kwargs, message", [
    ({"app": "app", "tail": 0}, "tail"), ({"app": "app", "tail": "5"}, "tail"),
    ({"app": "app", "service": "web; id"}, "service"), ({"app": "app", "version": "../x"}, "version"),
    ({"app": "app", "follow": True}, "unknown key 'follow'"),
])
def test_the_logs_view_takes_only_its_keys(views, kwargs, message):
    assert message in views.logs(**kwargs)["refused"]


def test_the_container_views_ask_the_apps_minions(views, monkeypatch):
    views.__utils__["pigeon_registry.definitions"] = lambda: {"app": {"config": {"target": "app*"}}}
    asked = []

    def ask(tgt, tgt_type, fun, timeout=10, **kwarg):
        asked.append((tgt, tgt_type, fun, kwarg))
        if fun == "stack_containers.details":
            return {"app1": [{"name": "app-1.4-web-1"}], "app2": "ERROR: docker does not answer\nmore"}
        return {"app1": {"app-1.4-web-1": "a line\n"}}

    monkeypatch.setattr(views, "_ask", ask)
    assert views.details(app="app", version="1.4") == {
        "containers": [{"name": "app-1.4-web-1", "minion": "app1"}],
        "problems": ["app2: ERROR: docker does not answer"]}
    assert views.logs(app="app", service="web", tail=5) == {
        "logs": {"app1": {"app-1.4-web-1": "a line\n"}}, "problems": []}
    assert asked == [
        ("app*", "glob", "stack_containers.details", {"app": "app", "version": "1.4"}),
        ("app*", "glob", "stack_containers.logs", {"app": "app", "version": None, "service": "web", "tail": 5})]


def test_the_proxy_view_names_each_slots_version(views, monkeypatch):
    statemachine = load("_utils/pigeon_statemachine.py", "pigeon_statemachine_for_views")
    views.__utils__.update({
        "pigeon_registry.definitions": lambda: {"app": {"loadbal": {"target": "lb*"}}},
        "pigeon_registry.load": lambda app: {"app": app, "generation": 4, "routes": {}, "stacks": {
            "1.4": {"state": "active", "slot": "b"}, "1.3": {"state": "inactive", "slot": "a"}}},
        "pigeon_statemachine.slots": statemachine.slots, "pigeon_statemachine.backend": statemachine.backend,
    })
    asked = []

    def ask(tgt, tgt_type, fun, timeout=10, **kwarg):
        asked.append((tgt, fun, kwarg))
        if fun == "haproxy_runtime.stats":
            return {"lb1": {"app_b": {"counters": {"hrsp_2xx": 7}, "servers": []}}, "lb2": "ERROR: no socket"}
        return {"lb1": {"app/production": "app_b", "other/production": "other_a"}, "lb2": "ERROR: no socket"}

    monkeypatch.setattr(views, "_ask", ask)
    result = views.proxy(app="app")
    assert result["slots"]["b"] == {"backend": "app_b", "version": "1.4", "state": "active"}
    assert result["slots"]["a"] == {"backend": "app_a", "version": "1.3", "state": "inactive"}
    assert result["slots"]["c"] == {"backend": "app_c", "version": None, "state": None}
    assert result["balancers"] == {"lb1": {"backends": {"app_b": {"counters": {"hrsp_2xx": 7}, "servers": []}},
                                           "routes": {"app/production": "app_b"}}}
    assert result["problems"] == ["lb2: ERROR: no socket"]
    assert asked[0] == ("lb*", "haproxy_runtime.stats", {"backends": ["app_a", "app_b", "app_c"]})
    assert views.proxy(app="ap")["refused"].endswith("did you mean app?")


def test_the_container_views_of_an_app_gone_from_the_pillar_say_so(views, monkeypatch):
    monkeypatch.setattr(views, "_ask", lambda *a, **k: pytest.fail("asked minions of no target"))
    assert views.logs(app="old") == {"logs": {}, "problems": [
        "no stacks:old:config:target in the master's pillar: its minions are unknown"]}
    assert views.details(app="old")["problems"] == [
        "no stacks:old:config:target in the master's pillar: its minions are unknown"]


def _proxy_views(views):
    statemachine = load("_utils/pigeon_statemachine.py", "pigeon_statemachine_for_proxy_log")
    views.__utils__.update({
        "pigeon_registry.definitions": lambda: {"app": {"config": {"target": "app*"},
                                                        "loadbal": {"target": "lb*", "target_type": "glob"}}},
        "pigeon_registry.load": lambda app: {"app": app, "generation": 4, "routes": {}, "stacks": {
            "1.4": {"state": "active", "slot": "b"}, "1.3": {"state": "inactive", "slot": "a"}}},
        "pigeon_statemachine.slots": statemachine.slots, "pigeon_statemachine.backend": statemachine.backend,
    })
    return views


LINE = '04/Dec/2026:09:23:47.011 172.18.0.1:48016 www~ app/production app_b/s1 200 0/0/0/1/1 128 ---- "GET / HTTP/1.1"'


def test_the_proxy_log_asks_the_load_balancers_for_every_slots_backend(views, monkeypatch):
    asked = []

    def ask(tgt, tgt_type, fun, timeout=10, **kwarg):
        asked.append((tgt, tgt_type, fun, kwarg))
        return {"lb1": [LINE], "lb2": "ERROR: HAProxy admin socket /x: no such file\nmore", "lb3": []}

    monkeypatch.setattr(_proxy_views(views), "_ask", ask)
    assert views.logs(app="app", proxy=True, tail=20) == {
        "proxy": {"lb1": [LINE], "lb3": []}, "problems": ["lb2: ERROR: HAProxy admin socket /x: no such file"]}
    assert asked == [("lb*", "glob", "haproxy_runtime.access_log",
                      {"backends": ["app_a", "app_b", "app_c"], "tail": 20, "app": "app"})]  # and its 503s


def test_the_proxy_log_of_a_version_is_its_slots_backend(views, monkeypatch):
    asked = []
    monkeypatch.setattr(_proxy_views(views), "_ask", lambda tgt, tgt_type, fun, timeout=10, **kwarg: (
        asked.append(kwarg) or {"lb1": []}))
    assert views.logs(app="app", proxy=True, version="1.3") == {"proxy": {"lb1": []}, "problems": []}
    assert asked == [{"backends": ["app_a"], "tail": 100}]


@pytest.mark.parametrize("kwargs, message", [
    ({"version": "9.9"}, "logs: app has no stack 9.9, so no slot in HAProxy; see stacks.py status --app-name app"),
    ({"service": "web"}, "logs: service does not apply with proxy: HAProxy has one backend per slot, not per "
                         "service; give version for one stack's requests"),
    ({"proxy": "true"}, "proxy 'true' is not valid: true or false (a boolean)"),
])
def test_the_proxy_log_refuses_what_it_cannot_filter(views, monkeypatch, kwargs, message):
    monkeypatch.setattr(_proxy_views(views), "_ask", lambda *a, **k: pytest.fail("asked the load balancers"))
    assert views.logs(**dict({"app": "app", "proxy": True}, **kwargs)) == {"refused": message}
    assert views.__context__["retcode"] == 1


def test_the_proxy_log_of_an_app_gone_from_the_pillar_says_so(views, monkeypatch):
    monkeypatch.setattr(_proxy_views(views), "_ask", lambda *a, **k: pytest.fail("asked minions of no target"))
    assert views.logs(app="old", proxy=True) == {"proxy": {}, "problems": [
        "no stacks:old:loadbal:target in the master's pillar: its minions are unknown"]}


def test_without_proxy_the_logs_are_the_containers(views, monkeypatch):
    asked = []
    monkeypatch.setattr(_proxy_views(views), "_ask", lambda tgt, tgt_type, fun, timeout=10, **kwarg: (
        asked.append((tgt, fun)) or {"app1": {}}))
    assert views.logs(app="app", proxy=False) == {"logs": {"app1": {}}, "problems": []}
    assert asked == [("app*", "stack_containers.logs")]


def _two_balancers(views, monkeypatch, lb1, lb2, stacks=None):
    answers = {"docker.ps": {"app1": {}},
               "haproxy_runtime.show_map": {"lb1": lb1, "lb2": lb2}}
    monkeypatch.setattr(views, "_ask", lambda tgt, tgt_type, fun, **kw: answers[fun])
    definition = {"config": {"target": "app*"}, "loadbal": {"target": "lb*"}, "task_definitions": {"count": 1, "web": {}}}
    entry = {"stacks": stacks or {}, "routes": {"app/production": None, "app/internal": None}}
    return views._observe("app", definition, entry)


def test_status_shows_each_load_balancers_routes_and_no_drift_when_they_agree(views, monkeypatch):
    observed = _two_balancers(views, monkeypatch, {"other/production": "other_a"}, {})
    assert observed["balancers"] == {"lb1": {}, "lb2": {}}  # only the app's own keys
    assert observed["drift"] == []


def test_load_balancers_that_disagree_are_drift_with_the_cure(views, monkeypatch):
    observed = _two_balancers(views, monkeypatch, {"app/production": "app_a"}, {})
    assert observed["balancers"] == {"lb1": {"app/production": "app_a"}, "lb2": {}}
    assert observed["drift"] == [
        "lb1: route app/production goes to app_a, the registry says no stack (503)",
        "the load balancers disagree on app/production: lb1 -> app_a, lb2 -> no stack (503); apply the "
        "haproxy state on the load balancers (salt <minion> state.apply haproxy)"]
    with_stacks = _two_balancers(views, monkeypatch, {"app/internal": "app_b"}, {"app/internal": "app_a"},
                                 stacks={"1.0": {"state": "active", "slot": "a"}})
    assert with_stacks["drift"][-1] == ("the load balancers disagree on app/internal: lb1 -> app_b, lb2 -> app_a; "
                                        "run ./stacks.py repair --app-name app")


def test_a_load_balancer_or_app_minion_that_does_not_answer_is_drift(views, monkeypatch):
    # with lb2 silent, the one LB that answers cannot disagree with anyone: status says lb2 is unknown
    views.__utils__["pigeon_minions.expected"] = lambda tgt, tgt_type: {"lb*": ["lb1", "lb2"],
                                                                        "app*": ["app1", "app2"]}[tgt]
    answers = {"docker.ps": {"app1": {}}, "haproxy_runtime.show_map": {"lb1": {"app/production": "app_a"}}}
    monkeypatch.setattr(views, "_ask", lambda tgt, tgt_type, fun, **kw: answers[fun])
    definition = {"config": {"target": "app*"}, "loadbal": {"target": "lb*"}, "task_definitions": {"count": 1, "web": {}}}
    entry = {"stacks": {}, "routes": {"app/production": None, "app/internal": None}}
    observed = views._observe("app", definition, entry)
    assert "app2: no answer: its containers are unknown (is its salt-minion running?)" in observed["drift"]
    assert "lb2: no answer: its routes are unknown (is its salt-minion running?)" in observed["drift"]
    assert not any("app1" in line or "lb1: no answer" in line for line in observed["drift"]), observed["drift"]


def test_when_the_master_cannot_tell_which_minions_should_answer_nothing_is_claimed(views, monkeypatch):
    def broken(tgt, tgt_type):
        raise RuntimeError("no cache")

    views.__utils__["pigeon_minions.expected"] = broken
    observed = _two_balancers(views, monkeypatch, {}, {})
    assert observed["drift"] == []
