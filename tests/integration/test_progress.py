"""
Live progress, against the lab: each step's line reaches the terminal when the step
ends, not with the outcome at the end (the orchestration sends a progress event per
state: pigeon_orchestrate sets ``state_events`` for its run), and an action that waits
for another's lock says so at once, naming the holder. Lines are time-stamped as they
arrive on stacks.py's standard output.
"""

import subprocess
import threading
import time

from conftest import APP, REPO, app_status, new_version, reset_app


def timed_run(env, *args):
    """Run ./stacks.py; [(time.monotonic() when it arrived, line)], and its exit code."""
    proc = subprocess.Popen([str(REPO / ".lab/venv/bin/python"), str(REPO / "stacks.py"), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
    lines = [(time.monotonic(), line.rstrip("\n")) for line in proc.stdout]
    return lines, proc.wait(timeout=300)


def arrival(lines, word):
    return next(t for t, line in lines if line.split()[:1] == [word] or line.startswith(word))


def test_step_lines_arrive_as_the_steps_end(stacks, env):
    reset_app(stacks)
    old, base, new = new_version("live-1"), new_version("live-2"), new_version("live-3")
    for version in (old, base):
        assert stacks("release", "--app-name", APP, "--version", version).rc == 0
        assert stacks("activate", "--app-name", APP).rc == 0
    assert stacks("release", "--app-name", APP, "--version", new).rc == 0
    # activate removes the old inactive stack after the switch: routes, then remove (seconds)
    lines, rc = timed_run(env, "activate", "--app-name", APP)
    assert rc == 0, lines
    routes, remove, finished = arrival(lines, "routes"), arrival(lines, "remove"), arrival(lines, "Finished")
    took = float(next(line for _, line in lines if line.split()[:1] == ["remove"]).split()[-2])
    assert took >= 0.5, lines  # the removal of four containers takes a while
    # the routes line came when the switch ended, while the removal still ran
    assert remove - routes >= took * 0.5, lines
    assert finished - routes >= took * 0.5, lines
    reset_app(stacks)


def test_a_waiting_action_says_whose_lock_it_waits_for(stacks, env):
    reset_app(stacks)
    first = new_version("hold")
    result = {}
    releasing = threading.Thread(target=lambda: result.update(
        first=timed_run(env, "release", "--app-name", APP, "--version", first)))
    releasing.start()
    # the release holds the lock (status says so), not a guess of how long it takes to get it
    deadline = time.monotonic() + 60
    while app_status(stacks)["lock"] is None and time.monotonic() < deadline:
        time.sleep(0.1)
    lines, rc = timed_run(env, "deactivate", "--app-name", APP, "--version", first, "--wait", "120")
    releasing.join(300)
    first_lines, first_rc = result["first"]
    assert first_rc == 0 and rc == 0, (first_lines, lines)
    waiting = [(t, line) for t, line in lines if "waiting up to 120 s for the lock of app" in line]
    assert len(waiting) == 1, lines
    t, line = waiting[0]
    assert f": release {first} of " in line, line
    # said at once, while the release still ran: before the release's own last line
    assert t < first_lines[-1][0], (lines, first_lines)
    # and the deactivate ran after the release: its steps came after the release ended
    assert arrival(lines, "Finished") > first_lines[-1][0]
    reset_app(stacks)
