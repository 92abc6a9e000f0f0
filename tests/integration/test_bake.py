"""
The bake window on the lab: `activate --bake` watches HAProxy's counters of the new slot and
rolls production back by itself when they cross a limit. The demo app's *flaky* versions are
healthy (their health check passes, so release and activate let them through) but answer 500
to half of the requests.
"""

import time

import pytest
import requests

from conftest import APP, PRODUCTION, Load, act, app_status, new_version, only_active


@pytest.fixture
def active(stacks):
    return only_active(stacks, "bk")


def test_a_version_that_answers_5xx_is_rolled_back_within_the_window(stacks, ca, active):
    flaky = new_version("flaky")
    act(stacks, "release", "--app-name", APP, "--version", flaky)
    with Load(ca) as load, Load(ca) as load2:
        time.sleep(0.5)
        started = time.monotonic()
        result = stacks("activate", "--app-name", APP, "--version", flaky, "--bake", "20")
        took = time.monotonic() - started
        time.sleep(0.5)
    assert result.rc == 1, result
    line = result.err.strip()
    assert len(line.splitlines()) == 1
    assert line.startswith(f"stacks.py: activate {APP} {flaky} failed: bake of {APP} {flaky} failed after ")
    assert "5xx" in line and line.endswith(f"; production rolled back to {active}")
    assert took < 20  # the breach ended the window early
    # production is back on the stack it came from, the flaky one kept for a look
    stacks_now = app_status(stacks)["stacks"]
    assert stacks_now[active]["state"] == "active" and stacks_now[flaky]["state"] == "inactive"
    assert all(requests.get(PRODUCTION, verify=ca, timeout=10).text.split()[1] == active for _ in range(20))
    assert set(load.versions) == {active, flaky} and load.failures and set(load.failures) == {500}
    # history and status say so
    history = stacks("history", "--app-name", APP, "--limit", "2", "--json").json()
    items = history["history"] if isinstance(history, dict) and "history" in history else history
    assert [i["action"] for i in items[-2:]] == ["activate", "rollback"]
    assert items[-1]["source"] == "bake" and items[-1]["message"].startswith(f"bake of {APP} {flaky} failed")
    status = stacks("status", "--app-name", APP).out
    assert f"last bake: {flaky} at " in status and f"production rolled back to {active}" in status


def test_a_healthy_version_bakes_and_stays(stacks, ca, active):
    good = new_version("good")
    act(stacks, "release", "--app-name", APP, "--version", good)
    with Load(ca) as load:
        time.sleep(0.5)
        result = act(stacks, "activate", "--app-name", APP, "--version", good, "--bake", "5")
    assert "bake: passed after 5." in result.out
    assert load.failures == []
    assert app_status(stacks)["stacks"][good]["state"] == "active"
