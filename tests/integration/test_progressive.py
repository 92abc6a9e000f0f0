"""
Progressive delivery on the lab: a canary's share of production (sticky per client, changed at
runtime, ended by abort or completed by activate) and maintenance mode (production answers 503
with the message while preview still reaches the stacks; kept across a restart of HAProxy and
other actions). Real salt-api, HAProxy and app containers; real HTTP requests.
"""

import subprocess
import time

import pytest
import requests

from conftest import APP, PREVIEW, PRODUCTION, Load, act, app_status, new_version, only_active


@pytest.fixture
def two(stacks):
    """`app` with an active stack and a release beside it: (active, release)."""
    active, release = only_active(stacks, "pa"), new_version("pr")
    act(stacks, "release", "--app-name", APP, "--version", release)
    yield active, release
    stacks("maintenance", "off", "--app-name", APP)
    stacks("abort", "--app-name", APP)


def version_of(response):
    return response.text.split()[1]


def shares(ca, release, clients=1000):
    """The share (percent) of fresh clients (no cookie) that production sends to the release."""
    hits = 0
    with requests.Session() as session:  # one connection; the cookie thrown away each time
        for _ in range(clients):
            session.cookies.clear()
            response = session.get(PRODUCTION, verify=ca, timeout=10)
            assert response.status_code == 200, response.text
            hits += version_of(response) == release
    return 100.0 * hits / clients


def test_a_canary_sends_its_share_of_production_and_each_client_stays_on_its_side(stacks, ca, two):
    active, release = two
    for percent in (10, 50, 100):
        result = act(stacks, "canary", "--app-name", APP, "--percent", str(percent))
        assert f"{release} gets {percent} % of production" in result.out
        share = shares(ca, release)
        assert abs(share - percent) <= 5, (percent, share)
    assert app_status(stacks)["traffic"] == {"canary": 100}

    act(stacks, "canary", "--app-name", APP, "--percent", "50")
    # a client keeps its side: its cookie pigeon_bucket
    sides = []
    for _ in range(20):
        with requests.Session() as session:
            seen = {version_of(session.get(PRODUCTION, verify=ca, timeout=10)) for _ in range(10)}
            assert len(seen) == 1, seen
            sides.append(seen.pop())
    assert set(sides) == {active, release}  # 20 clients at 50 %: both sides (1 in 2**19 to fail)
    # preview and the preview header still reach the release, whatever the share
    assert version_of(requests.get(PREVIEW, verify=ca, timeout=10)) == release

    # abort under load: production all on the active stack again, no request fails
    with Load(ca) as load, Load(ca) as load2:
        time.sleep(1)
        act(stacks, "abort", "--app-name", APP)
        after = time.monotonic()
        time.sleep(1)
    assert load.failures == [] and load2.failures == []
    assert shares(ca, release, clients=200) == 0
    assert app_status(stacks)["traffic"] == {}
    assert after  # the abort returned


def test_activate_completes_a_canary_and_a_canary_needs_a_release_beside_production(stacks, ca, two):
    active, release = two
    act(stacks, "canary", "--app-name", APP, "--percent", "30")
    act(stacks, "activate", "--app-name", APP)
    assert app_status(stacks)["traffic"] == {}
    assert shares(ca, release, clients=100) == 100  # the release is production now
    result = stacks("canary", "--app-name", APP, "--percent", "10")
    assert result.rc == 1
    assert result.err.strip() == (f"stacks.py: canary {APP} refused: {APP} has no release to send production "
                                  "to; run 'stacks.py release' first")
    # refused at the door, before anything: a share above 100
    result = stacks("canary", "--app-name", APP, "--percent", "101")
    assert result.rc == 2 and "--percent" in result.err and len(result.err.strip().splitlines()) == 1


def test_maintenance_answers_503_with_its_message_and_preview_still_reaches_the_stacks(stacks, ca, two, host):
    active, release = two
    message = "Back at 18:00 — sorry"
    with Load(ca) as load, Load(ca, PREVIEW) as preview:
        time.sleep(1)
        window_start = time.monotonic()
        act(stacks, "maintenance", "on", "--app-name", APP, "--message", message, "--retry-after", "60")
        answer = requests.get(PRODUCTION, verify=ca, timeout=10)
        assert answer.status_code == 503 and answer.text.strip() == message
        assert answer.headers["Retry-After"] == "60"
        assert version_of(requests.get(PREVIEW, verify=ca, timeout=10)) == release
        # the preview header is no way around a maintenance: anyone may send it
        assert requests.get(PRODUCTION, verify=ca, timeout=10, headers={"X-Pigeon-Preview": "1"}).status_code == 503
        time.sleep(1)
        act(stacks, "maintenance", "off", "--app-name", APP)
        window_end = time.monotonic()
        time.sleep(1)
    assert preview.failures == []
    assert load.failures and set(load.failures) == {503}  # production answered 503 in the window only
    assert all(window_start <= t <= window_end for t in load.failed_at)
    assert set(load.versions) == {active}

    # kept in the registry across HAProxy's restart and the app's other actions
    act(stacks, "maintenance", "on", "--app-name", APP)
    assert "MAINTENANCE: production answers 503" in stacks("status", "--app-name", APP).out
    subprocess.run(["docker", "restart", "pigeon-haproxy"], capture_output=True, check=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            answer = requests.get(PRODUCTION, verify=ca, timeout=5)
            break
        except requests.RequestException:
            time.sleep(0.5)
    assert answer.status_code == 503 and "down for maintenance" in answer.text
    act(stacks, "activate", "--app-name", APP)
    assert requests.get(PRODUCTION, verify=ca, timeout=10).status_code == 503
    assert version_of(requests.get(PREVIEW, verify=ca, timeout=10)) == release
    act(stacks, "maintenance", "off", "--app-name", APP)
    assert version_of(requests.get(PRODUCTION, verify=ca, timeout=10)) == release


def test_a_hostile_message_is_refused_in_one_line_and_changes_nothing(stacks, ca, two):
    before = app_status(stacks)
    for message in ("two\nlines", "x" * 201, "\u202eevil", "😀"):
        result = stacks("maintenance", "on", "--app-name", APP, "--message", message)
        assert result.rc == 2 and len(result.err.strip().splitlines()) == 1, result
    assert app_status(stacks)["traffic"] == before["traffic"] == {}
    assert requests.get(PRODUCTION, verify=ca, timeout=10).status_code == 200
