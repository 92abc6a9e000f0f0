"""
The registry and the deploy lock against the lab (issue 3): rollback there and
back without a failed request, refusals, concurrent actions on one app, an
orchestration killed half-way, status and history with their JSON forms.
"""

import json
import signal
import subprocess
import threading
import time

import pytest

from conftest import APP, LAB, PRODUCTION, Load, app_status, new_version, reset_app, wait_for


@pytest.fixture(scope="module")
def two_stacks(stacks):
    """Active B, inactive A."""
    reset_app(stacks)
    a, b = new_version("reg-a"), new_version("reg-b")
    for action, version in (("release", a), ("activate", a), ("release", b), ("activate", b)):
        result = stacks(action, "--app-name", APP, "--version", version)
        assert result.rc == 0, result
    return a, b


def versions(get, url, n=6):
    return {get(url)[1].split()[1] for _ in range(n)}


def test_rollback_there_and_back_without_a_failed_request(stacks, get, ca, two_stacks):
    a, b = two_stacks
    with Load(ca) as load:
        time.sleep(0.5)
        result = stacks("rollback", "--app-name", APP)
        assert result.rc == 0, result
        assert versions(get, PRODUCTION) == {a}
        st = app_status(stacks)
        assert {v: s["state"] for v, s in st["stacks"].items()} == {a: "active", b: "inactive"}
        result = stacks("rollback", "--app-name", APP)
        assert result.rc == 0, result
        assert versions(get, PRODUCTION) == {b}
        time.sleep(0.5)
    assert load.failures == []
    assert load.versions.get(a, 0) > 0 and load.versions.get(b, 0) > 0
    assert set(load.versions) == {a, b}


def test_rollback_without_inactive_is_refused(stacks, get, two_stacks):
    a, b = two_stacks
    result = stacks("deactivate", "--app-name", APP, "--version", a)
    assert result.rc == 0, result
    result = stacks("rollback", "--app-name", APP)
    assert result.rc == 1
    assert "no inactive stack" in result.err
    assert versions(get, PRODUCTION) == {b}


def test_concurrent_releases_one_proceeds(stacks, get, env, ca):
    st = app_status(stacks)
    active = [v for v, s in st["stacks"].items() if s["state"] == "active"]
    assert active, st
    candidates = [new_version(f"race{i}") for i in range(3)]
    samples, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            doc = app_status(stacks)
            states = [s["state"] for s in doc["stacks"].values()]
            samples.append((states.count("active"), states.count("release")))

    procs = []
    with Load(ca) as load:
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        for version in candidates:
            procs.append(subprocess.Popen(
                [str(LAB / "venv/bin/python"), "stacks.py", "release", "--app-name", APP,
                 "--version", version], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True))
        outcomes = [(p.wait(300), p.stdout.read(), p.stderr.read()) for p in procs]
        stop.set()
        sampler.join(30)
    ok = [o for o in outcomes if o[0] == 0]
    refused = [o for o in outcomes if o[0] != 0]
    assert len(ok) == 1, outcomes
    for rc, out, err in refused:
        assert rc == 1
        assert "locked by release" in err or "in release already" in err, err
    assert samples and all(active_n <= 1 and release_n <= 1 for active_n, release_n in samples)
    assert load.failures == []
    assert set(load.versions) == set(active)  # production never answered anything else
    st = app_status(stacks)
    assert st["lock"] is None


def test_wait_for_the_lock(stacks, env):
    st = app_status(stacks)
    release = [v for v, s in st["stacks"].items() if s["state"] == "release"]
    assert release
    # an activation and a second one that waits for the lock: the second finds it done
    first = subprocess.Popen([str(LAB / "venv/bin/python"), "stacks.py", "activate", "--app-name", APP,
                              "--version", release[0]], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    wait_for(lambda: app_status(stacks)["lock"] is not None, timeout=20, interval=0.1)
    second = stacks("activate", "--app-name", APP, "--version", release[0], "--wait", "120")
    assert first.wait(120) == 0, first.stderr.read()
    # waiting changed what the second would do (already active): it says so and changes nothing
    assert second.rc in (0, 1), second
    assert "already active" in second.out or "changed" in second.err, second


def test_killed_release_is_shown_and_cleaned(stacks, get, env):
    before = app_status(stacks)
    active = [v for v, s in before["stacks"].items() if s["state"] == "active"][0]
    # room for a release
    for v, s in before["stacks"].items():
        if s["state"] != "active":
            assert stacks("deactivate", "--app-name", APP, "--version", v).rc == 0
    doomed = new_version("doomed")
    cli = subprocess.Popen([str(LAB / "venv/bin/python"), "stacks.py", "release", "--app-name", APP,
                            "--version", doomed], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    lockfile = LAB / "var/cache/salt/master/pigeon/locks" / f"{APP}.lock"

    def containers_started():
        out = subprocess.run(["docker", "ps", "-q", "--filter", f"label=pigeon.version={doomed}"],
                             capture_output=True, text=True).stdout.split()
        return len(out) >= 1

    assert wait_for(containers_started, timeout=60, interval=0.1)
    holder = json.loads(lockfile.read_text())
    subprocess.run(["kill", "-9", str(holder["pid"])], check=True)  # the orchestration dies
    cli.send_signal(signal.SIGINT)
    cli.wait(30)
    # status: no live lock, the leftovers flagged as drift; production untouched
    st = wait_for(lambda: (lambda d: d if d["lock"] is None else None)(app_status(stacks)), timeout=10)
    assert st["lock"] is None
    assert doomed not in st["stacks"]
    assert any(doomed in line for line in st["observed"]["drift"]), st["observed"]
    assert versions(get, PRODUCTION) == {active}
    # the next release runs (the stale lock is released) and removes the leftovers
    nxt = new_version("after")
    result = stacks("release", "--app-name", APP, "--version", nxt)
    assert result.rc == 0, result
    assert f"removed what interrupted actions left of {doomed}" in result.out  # says which
    left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=pigeon.version={doomed}"],
                          capture_output=True, text=True).stdout.split()
    assert left == []
    st = app_status(stacks)
    assert st["observed"]["drift"] == []
    history = stacks("history", "--app-name", APP, "--json", "--limit", "5").json()["history"]
    assert any(h["result"] == "stale lock released" for h in history), history


def test_status_and_history_json(stacks):
    st = stacks("status", "--app-name", APP, "--json")
    assert st.rc == 0
    doc = st.json()
    assert doc["ok"] is True
    entry = doc["status"][APP]
    assert set(entry) >= {"stacks", "routes", "generation", "lock", "observed"}
    for version, stack in entry["stacks"].items():
        assert set(stack) >= {"state", "slot", "since", "by"}
        seen = entry["observed"]["containers"][version]
        # docker says "starting" until its first steady check (config:health_interval)
        assert seen["healthy"] + seen["starting"] == 4 == seen["total"], seen
    hist = stacks("history", "--app-name", APP, "--json")
    assert hist.rc == 0
    items = hist.json()["history"]
    assert items
    last = items[-1]
    assert set(last) >= {"action", "version", "result", "user", "source", "when", "finished", "duration"}
    assert last["user"] == "pigeon" and last["source"] == "cli"
