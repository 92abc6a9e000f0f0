"""
Unit tests of the runner haproxy_switch (srv/salt/_runners/haproxy_switch.py): all load
balancers or none. Salt's LocalClient is replaced by a stand-in that answers each phase as
told; the multi-host lab runs the real one (tests/multihost/test_blue_green.py).
"""

import contextlib

import pytest

from srv_modules import load

OK = {"changes": {}, "map": {}}


@pytest.fixture
def switch(monkeypatch):
    module = load("_runners/haproxy_switch.py", "haproxy_switch_under_test")
    module.__opts__ = {"conf_file": "/etc/salt/master"}
    calls, answers = [], []

    class Client:
        def cmd(self, tgt, fun, kwarg=None, tgt_type=None, timeout=None, full_return=False):
            calls.append({"tgt": tgt, "fun": fun, "kwarg": kwarg, "tgt_type": tgt_type, "timeout": timeout})
            return answers.pop(0)

    import salt.client  # pylint: disable=import-outside-toplevel

    def local_client(c_path):
        assert c_path == "/etc/salt/master"  # the master's own config, not the orchestration's options
        return contextlib.nullcontext(Client())

    monkeypatch.setattr(salt.client, "get_local_client", local_client)
    module.calls, module.answers = calls, answers
    return module


def ok(*minions):
    return {m: {"ret": OK, "retcode": 0} for m in minions}


ROUTES, PREVIOUS = {"app/production": "app_b"}, {"app/production": "app_a"}


def test_both_prepare_then_both_switch(switch):
    switch.answers[:] = [ok("lb1", "lb2"), ok("lb1", "lb2")]
    done = switch.routes(["lb2", "lb1"], ROUTES, PREVIOUS, servers={"app_b": [["10.0.0.1", 21010]]},
                         require_up={"app_b": 1}, wait=30, __pub_user="x")
    assert done == {"switched": ["lb1", "lb2"]}
    prepare, commit = switch.calls
    assert prepare["tgt"] == ["lb1", "lb2"] and prepare["tgt_type"] == "list" and prepare["timeout"] == 60
    assert prepare["kwarg"] == {"routes": {}, "servers": {"app_b": [["10.0.0.1", 21010]]},
                                "require_up": {"app_b": 1}, "wait": 30}
    assert commit["kwarg"] == {"routes": ROUTES, "require_up": {"app_b": 1}}


def test_one_that_fails_to_prepare_changes_none(switch):
    failed = dict(ok("lb1"), lb2={"ret": "ERROR: backend app_b: 1 of 2 servers UP and checked", "retcode": 1})
    switch.answers[:] = [failed]
    done = switch.routes(["lb1", "lb2"], ROUTES, PREVIOUS, require_up={"app_b": 2})
    assert done == {"Error": "lb2: backend app_b: 1 of 2 servers UP and checked; no route changed on any load balancer"}
    assert len(switch.calls) == 1  # no switch was sent


def test_one_that_does_not_answer_changes_none(switch):
    switch.answers[:] = [ok("lb1")]
    done = switch.routes(["lb1", "lb2"], ROUTES, PREVIOUS)
    assert done["Error"].startswith("lb2: did not answer within 30 s") and "no route changed" in done["Error"]
    assert "\n" not in done["Error"] and len(switch.calls) == 1


def test_a_switch_that_fails_on_one_sets_every_one_back(switch):
    failed = dict(ok("lb1"), lb2={"ret": "ERROR: HAProxy map ... after update: x", "retcode": 1})
    switch.answers[:] = [ok("lb1", "lb2"), failed, ok("lb1", "lb2")]
    done = switch.routes(["lb1", "lb2"], ROUTES, PREVIOUS)
    assert done == {"Error": "lb2: HAProxy map ... after update: x; every load balancer set back to its routes"}
    assert switch.calls[2]["kwarg"] == {"routes": PREVIOUS} and switch.calls[2]["tgt"] == ["lb1", "lb2"]


def test_a_set_back_that_fails_says_what_to_run(switch):
    failed = dict(ok("lb1"), lb2={"ret": "ERROR: socket gone", "retcode": 1})
    switch.answers[:] = [ok("lb1", "lb2"), failed, dict(ok("lb1"), lb2={"ret": "ERROR: still gone", "retcode": 1})]
    done = switch.routes(["lb1", "lb2"], ROUTES, PREVIOUS)
    assert done == {"Error": "lb2: socket gone; could not set back lb2: still gone; run ./stacks.py repair"}


def test_no_balancer_is_an_error(switch):
    assert switch.routes([], ROUTES, PREVIOUS)["Error"].startswith("no load balancer to switch")
    assert switch.calls == []


def test_the_prepare_phase_may_wait_for_each_gated_backend_in_turn(switch):
    switch.answers[:] = [ok("lb1", "lb2"), ok("lb1", "lb2")]
    switch.routes(["lb1", "lb2"], ROUTES, PREVIOUS, require_up={"app_a": 2, "app_b": 2}, wait=60)
    assert switch.calls[0]["timeout"] == 2 * 60 + switch.MARGIN


def test_a_switch_a_load_balancer_did_not_answer_says_to_repair(switch):
    switch.answers[:] = [ok("lb1", "lb2"), ok("lb1"), ok("lb1", "lb2")]
    done = switch.routes(["lb1", "lb2"], ROUTES, PREVIOUS)
    assert done["Error"].endswith("every load balancer set back to its routes; run ./stacks.py repair once it answers")
