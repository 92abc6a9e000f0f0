"""
Unit tests for progressive delivery's logic: the state machine's traffic actions (canary,
abort, maintenance) and their routes map keys, the bake window's judgement of HAProxy's
counters (``_utils/pigeon_bake.py``), the door's checks of the requests and the pillar's
``bake:``, and the CLI's arguments. The lab runs them for real: tests/integration/
test_progressive.py and test_bake.py.
"""

import base64
import copy
import sys

import pytest
import yaml

from srv_modules import SALT_DIR, load

sm = load("_utils/pigeon_statemachine.py", "pigeon_statemachine_for_progressive")
bake = load("_utils/pigeon_bake.py", "pigeon_bake_for_progressive")
schema = load("_utils/pigeon_schema.py", "pigeon_schema_for_progressive")
LAB = yaml.safe_load((SALT_DIR.parent / "pillar" / "stacks.sls").read_text())["stacks"]["app"]
TransitionError = sm.TransitionError


def entry(traffic=None, **stacks):
    e = {"app": "shop", "generation": 4, "stacks": {
        v: {"state": state, "slot": slot} for v, (state, slot) in stacks.items()}}
    e["routes"] = sm.routes("shop", e["stacks"], traffic=traffic)
    if traffic:
        e["traffic"] = traffic
    return e


BOTH = {"1.0": ("active", "a"), "2.0": ("release", "b")}


# --- canary -------------------------------------------------------------------------------------


def test_a_canary_gives_the_release_its_share_of_production():
    p = sm.plan(entry(**BOTH), "canary", asked={"percent": 10})
    assert p["version"] == "2.0" and p["states"] == {} and p["start"] is None and p["stop"] == []
    assert p["routes"]["shop/canary"] == "10" and p["routes_before"]["shop/canary"] is None
    assert p["routes"]["shop/production"] == "shop_a"  # the rest stays on the active stack
    assert p["message"] == "shop 2.0 gets 10 % of production, 1.0 the rest"
    assert sm.apply(entry(**BOTH), p, "now", "me")["traffic"] == {"canary": 10}


def test_a_canary_is_changed_in_steps_and_zero_or_abort_ends_it():
    e = entry(traffic={"canary": 10}, **BOTH)
    assert sm.plan(e, "canary", asked={"percent": 50})["routes"]["shop/canary"] == "50"
    assert sm.plan(e, "canary", asked={"percent": 10})["noop"] is True
    for p in (sm.plan(e, "canary", asked={"percent": 0}), sm.plan(e, "abort")):
        assert p["routes"]["shop/canary"] is None and p["traffic"] == {}
        assert p["message"] == "shop: production all on 1.0 again; 2.0 keeps internal traffic"
    assert sm.plan(entry(**BOTH), "abort")["noop"] is True


@pytest.mark.parametrize("action, version", [("activate", None), ("rollback", None), ("deactivate", "2.0")])
def test_activate_completes_a_canary_and_rollback_or_the_releases_end_ends_it(action, version):
    stacks = dict(BOTH, **({"0.9": ("inactive", "c")} if action == "rollback" else {}))
    p = sm.plan(entry(traffic={"canary": 30}, **stacks), action, version)
    assert p["traffic"] == {} and p["routes"]["shop/canary"] is None


def test_a_canary_needs_a_release_beside_an_active_stack():
    with pytest.raises(TransitionError, match="has no release to send production to"):
        sm.plan(entry(**{"1.0": ("active", "a")}), "canary", asked={"percent": 10})
    with pytest.raises(TransitionError, match="no active stack to share production with; activate 2.0 instead"):
        sm.plan(entry(**{"2.0": ("release", "b")}), "canary", asked={"percent": 10})
    with pytest.raises(TransitionError, match="1.0 is not the release"):
        sm.plan(entry(**BOTH), "canary", "1.0", asked={"percent": 10})


# --- maintenance --------------------------------------------------------------------------------


def test_maintenance_on_sets_the_message_in_base64_and_off_deletes_it():
    p = sm.plan(entry(**BOTH), "maintenance", asked={"enable": True, "message": "Back at 5 — sorry;",
                                                     "retry_after": 60})
    seconds, _, encoded = p["routes"]["shop/maintenance"].partition(":")
    assert seconds == "60" and base64.b64decode(encoded).decode() == "Back at 5 — sorry;"
    assert " " not in p["routes"]["shop/maintenance"]  # one token for HAProxy's CLI
    on = sm.apply(entry(**BOTH), p, "now", "me")
    assert on["traffic"] == {"maintenance": {"message": "Back at 5 — sorry;", "retry_after": 60}}
    off = sm.plan(on, "maintenance", asked={"enable": False})
    assert off["routes"]["shop/maintenance"] is None and sm.apply(on, off, "now", "me").get("traffic") is None
    assert sm.plan(on, "maintenance", asked={"enable": True, "message": "Back at 5 — sorry;",
                                             "retry_after": 60})["noop"] is True


def test_a_maintenance_is_kept_by_every_other_action():
    traffic = {"maintenance": {"message": sm.DEFAULT_MESSAGE, "retry_after": 300}}
    for action, version in (("activate", None), ("deactivate", "2.0"), ("repair", None)):
        p = sm.plan(entry(traffic=traffic, **BOTH), action, version)
        assert p["traffic"] == traffic and p["routes"]["shop/maintenance"] == sm.maintenance_value(traffic["maintenance"])


# --- the bake window ------------------------------------------------------------------------------


def stats(hrsp_2xx=0, hrsp_5xx=0, rtime=2, down=0, up=2, minion="lb1", backend="shop_b"):
    servers = [{"name": f"s{n}", "addr": f"10.0.0.{n}:8080", "status": "DOWN" if n <= down else "UP"}
               for n in range(1, up + 1)] + [{"name": "s9", "addr": "", "status": "MAINT (resolution)"}]
    return {minion: {backend: {"counters": {"hrsp_2xx": hrsp_2xx, "hrsp_5xx": hrsp_5xx, "rtime": rtime},
                               "servers": servers}}}


LIMIT = bake.limits({}, 20)


def since(start, *looks):
    """The totals since ``start`` (stats answers) after each look in turn."""
    baseline = bake.counts(start, "shop_b")
    total = bake.since(baseline, {})
    for look in looks:
        total = bake.since(baseline, bake.counts(look, "shop_b"))
    return total


def test_the_bake_counts_only_what_came_after_the_switch():
    start = stats(hrsp_2xx=500, hrsp_5xx=100)  # preview traffic before
    assert bake.judge(since(start, stats(hrsp_2xx=600, hrsp_5xx=101)), 2, LIMIT) is None
    breach = bake.judge(since(start, stats(hrsp_2xx=540, hrsp_5xx=110)), 2, LIMIT)
    assert breach == "5xx 20.0 % of 50 responses, above 5 %"


def test_no_judgement_of_the_share_before_min_requests():
    assert bake.judge(since(stats(), stats(hrsp_5xx=19)), 2, LIMIT) is None
    assert bake.judge(since(stats(), stats(hrsp_5xx=20)), 2, LIMIT).startswith("5xx 100.0 %")


def test_a_server_down_or_a_slow_slot_is_a_breach():
    assert bake.judge(since(stats(), stats(down=1)), 2, LIMIT) == (
        "1 of 2 servers DOWN (failed health checks): lb1/s1")
    slow = since(stats(), stats(hrsp_2xx=100, rtime=70))
    assert bake.judge(slow, 20, LIMIT) == "response time 70 ms, above 3 x the old slot's 20 ms"
    assert bake.judge(slow, 30, LIMIT) is None
    # a fast old slot is taken as 20 ms: a cold start of a few ms is no breach
    assert bake.judge(since(stats(), stats(hrsp_2xx=100, rtime=9)), 1, LIMIT) is None


def test_each_load_balancer_is_followed_apart_a_reset_starts_it_again_and_a_late_one_from_its_first_look():
    start = {**stats(hrsp_2xx=1000, minion="lb1"), "lb2": False}
    first = {**stats(hrsp_2xx=1010, hrsp_5xx=0, minion="lb1"), **stats(hrsp_2xx=700, hrsp_5xx=300, minion="lb2")}
    # lb2 answers late: its old counts are not new; lb1 was reloaded: it counts from zero
    second = {**stats(hrsp_2xx=5, hrsp_5xx=5, minion="lb1"), **stats(hrsp_2xx=710, hrsp_5xx=300, minion="lb2")}
    total = since(start, first, second)
    assert (total["responses"], total["5xx"]) == (30, 5)
    assert bake.figures(total, ["lb3"])["5xx_percent"] == 16.7 and bake.figures(total, ["lb3"])["missing"] == ["lb3"]


def test_the_pillar_sets_the_window_and_the_request_overrides_it():
    definition = dict(LAB, bake={"seconds": 60, "max_5xx_percent": 1})
    assert bake.limits(definition)["seconds"] == 60 and bake.limits(definition, 0)["seconds"] == 0
    assert bake.limits(definition)["max_5xx_percent"] == 1 and bake.limits(definition)["min_requests"] == 20


@pytest.mark.parametrize("bad, says", [
    ({"seconds": -1}, "stacks:app:bake:seconds"), ({"seconds": "20"}, "stacks:app:bake:seconds"),
    ({"max_5xx_percent": 101}, "max_5xx_percent"), ({"max_response_ratio": 0}, "max_response_ratio"),
    ({"sconds": 20}, "unknown key 'sconds'"), ("20", "stacks:app:bake must be a mapping"),
])
def test_the_door_refuses_a_broken_bake(bad, says):
    with pytest.raises(schema.Invalid) as error:
        schema.check_definition("app", dict(copy.deepcopy(LAB), bake=bad))
    assert says in str(error.value) and "\n" not in str(error.value)


# --- the door: the requests --------------------------------------------------------------------------


@pytest.mark.parametrize("kind, values, says", [
    ("canary", {"app": "app", "percent": 101}, "percent"),
    ("canary", {"app": "app", "percent": "10"}, "percent"),
    ("canary", {"app": "app"}, "percent is missing"),
    ("maintenance", {"app": "app", "enable": "on"}, "enable"),
    ("maintenance", {"app": "app", "enable": True, "message": "a\u2028b"}, "message"),
    ("maintenance", {"app": "app", "enable": True, "retry_after": 0}, "retry_after"),
    ("activate", {"app": "app", "bake": 3601}, "bake"),
    ("ci", {"action": "canary", "app": "app"}, "action"),  # a webhook cannot move production by shares
])
def test_the_door_refuses_a_bad_traffic_request(kind, values, says):
    with pytest.raises(schema.Invalid) as error:
        schema.check(kind, values)
    assert says in str(error.value)


# --- the CLI -------------------------------------------------------------------------------------------

if str(SALT_DIR.parents[1]) not in sys.path:
    sys.path.insert(0, str(SALT_DIR.parents[1]))
from pigeon import cli  # noqa: E402  pylint: disable=wrong-import-position


@pytest.mark.parametrize("argv, says", [
    (["canary", "-a", "app"], "canary needs --percent"),
    (["canary", "-a", "app", "--percent", "150"], "--percent"),
    (["activate", "-a", "app", "--percent", "10"], "--percent applies to canary only"),
    (["maintenance", "-a", "app"], "maintenance needs on or off"),
    (["maintenance", "maybe", "-a", "app"], "maintenance needs on or off"),
    (["maintenance", "off", "-a", "app", "--message", "x"], "--message applies to maintenance on only"),
    (["maintenance", "on", "-a", "app", "--message", "two\nlines"], "--message"),
    (["release", "-a", "app", "--bake", "20"], "--bake applies to activate only"),
])
def test_the_cli_refuses_bad_traffic_arguments_in_one_line(argv, says, capsys):
    with pytest.raises(SystemExit) as code:
        cli.parse_args(argv + ["--saltapi-url", "https://salt:8000"])
    assert code.value.code == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1


def test_the_cli_sends_what_a_traffic_action_asks():
    args = cli.parse_args(["maintenance", "on", "-a", "app", "--message", "Back at 6", "--retry-after", "60",
                           "--saltapi-url", "https://salt:8000"])
    assert (args.subject, args.message, args.retry_after) == ("on", "Back at 6", 60)
    assert cli.parse_args(["activate", "-a", "app", "--bake", "20", "--saltapi-url", "https://s:1"]).bake == 20
    assert cli.bake_line({"result": "failed", "seconds": 4.5, "breach": "5xx 50.0 % of 40 responses, above 5 %",
                          "rolled_back_to": "1.0"}) == (
        "bake: failed after 4.5 s: 5xx 50.0 % of 40 responses, above 5 %; production rolled back to 1.0")


# --- notifications (runner pigeon_notify) ----------------------------------------------------------

notify = load("_runners/pigeon_notify.py", "pigeon_notify_for_progressive")


class FakeNotifyMaster:
    """The master as pigeon_notify sees it: a pillar, a history, a cache folder; a receiver."""

    def __init__(self, tmp_path, url, history):
        import http.server
        import threading

        self.got = []
        got = self.got

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                got.append(self.rfile.read(int(self.headers["Content-Length"])).decode())
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        notify.__opts__ = {"cachedir": str(tmp_path), "id": "master"}
        notify.__utils__ = {"pigeon_registry.history": lambda app, limit: history[-limit:],
                            "pigeon_registry.apps": lambda: ["app"]}
        port = self.server.server_address[1]
        notify._settings = lambda: (((url or "").replace("PORT", str(port)), 5), None) if url else (
            None, "no pigeon_notify:url in the master's pillar")


ENTRY = {"action": "activate", "version": "2.0", "result": "success", "user": "alice", "source": "cli",
         "duration": 0.9, "message": "app 2.0 is active", "finished": "2026-12-04T10:00:00"}


def test_an_outcome_is_posted_once_as_a_chat_line(tmp_path):
    master = FakeNotifyMaster(tmp_path, "http://127.0.0.1:PORT/hook", [ENTRY])
    try:
        assert notify.post(tag="pigeon/deploy/app/activate")["posted"] is True
        assert notify.post(tag="pigeon/deploy/app/activate") == {
            "posted": False, "why": "nothing new in app's history since the last post"}
    finally:
        master.server.shutdown()
    assert len(master.got) == 1
    assert '"text": "\\u2705 app 2.0: activate success by alice (cli) in 0.9 s: app 2.0 is active"' in master.got[0]


@pytest.mark.parametrize("tag", ["pigeon/deploy/rejected", "pigeon/deploy/App/activate", "salt/job/1/ret",
                                 "pigeon/deploy/app/activate/x", "pigeon/deploy/app/activate\n"])
def test_a_tag_that_names_no_app_and_action_posts_nothing(tmp_path, tag):
    master = FakeNotifyMaster(tmp_path, "http://127.0.0.1:PORT/hook", [ENTRY])
    try:
        assert notify.post(tag=tag)["posted"] is False
    finally:
        master.server.shutdown()
    assert master.got == []


def test_without_a_url_nothing_is_posted(tmp_path):
    master = FakeNotifyMaster(tmp_path, None, [ENTRY])
    master.server.shutdown()
    assert notify.post(tag="pigeon/deploy/app/activate") == {
        "posted": False, "why": "no pigeon_notify:url in the master's pillar"}


def test_a_failed_action_says_why():
    line = notify.text("app", dict(ENTRY, result="failed", error="step routes failed: lb2 did not answer"))
    assert line == "\u274c app 2.0: activate failed by alice (cli) in 0.9 s: step routes failed: lb2 did not answer"
