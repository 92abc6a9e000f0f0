"""
Every error issue 13 lists, in one table (its acceptance: "Each error listed above gives
one line, the documented exit code, and no traceback"). The one place an operator reads
to see what ``./stacks.py`` says for each: the argv, the environment, the exit code of
docs/cli.md's "Exit codes", and the words of the one stderr line (the next step it tells).

Each row runs ./stacks.py against the lab and checks: the exit code; stderr is exactly one
line starting with ``stacks.py: ``, without a double space; no ``Traceback`` on stdout or
stderr; the words in that line. Each row also checks, with test_errors.py's ``unchanged``,
that production, the registry's stacks and routes are as before and that no lock is held.

Some rows need the lab in a state first (``during``): the app's deploy lock held by
another action (``locked_by_alice``: a rollback with no version, the case that printed
"locked by rollback  of pigeon"), or an action that runs past ``--deadline`` (the
release is left to end, then deactivated, so the lab is as before).
"""

import contextlib
import importlib.util
import re
import time

import pytest

from conftest import APP, LAB, REPO, app_status, new_version, wait_for
from test_errors import serving, unchanged  # noqa: F401  (fixtures: an active stack; nothing changed)

# exit codes, as docs/cli.md "Exit codes" documents them
USAGE, FAILED, API, DEADLINE = 2, 1, 3, 4

LOCKS = LAB / "var/cache/salt/master/pigeon/locks"
_lock = importlib.util.spec_from_file_location("pigeon_lock_held_by_test",
                                               REPO / "srv/salt/_utils/pigeon_lock.py")
pigeon_lock = importlib.util.module_from_spec(_lock)
_lock.loader.exec_module(pigeon_lock)


@contextlib.contextmanager
def locked_by_alice(stacks):
    """The app's deploy lock held by another action: alice's rollback (no version), taken
    with the deploy runner's own lock code on the master's lock file, as a running action
    holds it (an flock, which the master reads from the kernel)."""
    taken = pigeon_lock.acquire(str(LOCKS), APP, {
        "action": "rollback", "version": None, "user": "alice",
        "since": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()), "started": time.time()})
    assert taken["held"] is None, taken
    try:
        held = app_status(stacks)["lock"]
        assert held and held["user"] == "alice", held
        yield
    finally:
        assert pigeon_lock.release(str(LOCKS), APP)


PAST_DEADLINE = new_version("deadline")


@contextlib.contextmanager
def release_outlives_deadline(stacks):
    """After the row: the release goes on on the master; wait for its end, then remove it."""
    try:
        yield
    finally:
        assert wait_for(lambda: app_status(stacks)["lock"] is None, timeout=180, interval=0.5)
        if PAST_DEADLINE in app_status(stacks)["stacks"]:
            result = stacks("deactivate", "--app-name", APP, "--version", PAST_DEADLINE)
            assert result.rc == 0, result


def deactivate_active(stacks, serving):  # noqa: F811
    return ["deactivate", "--app-name", APP, "--version", serving]


# id, argv (a list, or a function of (stacks, serving)), extra env, exit code, words of the
# one stderr line ("{job}": the job id the action printed), during (a context manager
# factory of stacks, or None)
ERRORS = [
    # Errors that are tracebacks or riddles
    ("ca-file-missing", ["status", "--ca-file", "/nonexistent"], {}, USAGE,
     ["--ca-file /nonexistent: No such file or directory", "give the certificate that signed salt-api's"],
     None),
    ("ca-file-not-pem", ["status", "--ca-file", "README.md"], {}, USAGE,
     ["--ca-file README.md: not a PEM CA bundle", "give the certificate that signed salt-api's",
      ".lab/tls/ca.crt"], None),
    ("deadline-zero", ["status", "--deadline", "0"], {}, USAGE,
     ["--deadline", "above 0", "./stacks.py --help"], None),
    ("http-saltapi-url", ["status"], {"SALTAPI_URL": "http://localhost:8000"}, USAGE,
     ["http://localhost:8000", "use https://", "--insecure"], None),
    ("saltapi-unreachable", ["release", "--app-name", APP, "--version", "x1"],
     {"SALTAPI_URL": "https://localhost:1/"}, API,
     ["cannot reach salt-api at https://localhost:1", "is salt-api running?"], None),
    ("wrong-password", ["release", "--app-name", APP, "--version", "x1", "--no-token-cache"],
     {"SALTAPI_PASS": "wrong"}, API,
     ["refused the credentials", "check SALTAPI_USER, SALTAPI_PASS and SALTAPI_EAUTH"], None),
    ("deadline-passes-while-the-action-runs",
     ["release", "--app-name", APP, "--version", PAST_DEADLINE, "--deadline", "2"], {}, DEADLINE,
     ["the deadline of 2 s passed while job {job} still runs",
      "follow it with ./stacks.py watch {job} --app-name " + APP], release_outlives_deadline),
    ("locked-by-another-action", ["release", "--app-name", APP, "--version", "x1"], {}, FAILED,
     [f"{APP} is locked by rollback of alice since ", "--wait"], locked_by_alice),
    ("lock-release-not-stale", ["lock", "release", "--app-name", APP], {}, FAILED,
     [f"{APP} is locked by rollback of alice since ", "no stale lock", "--wait"], locked_by_alice),
    # Help
    ("typo-command", ["relase", "--app-name", APP], {}, USAGE,
     ["unknown ACTION 'relase'", "did you mean release?"], None),
    ("status-unknown-app", ["status", "-a", "ap"], {}, FAILED, ["unknown app 'ap'", "did you mean app?"], None),
    ("history-unknown-app", ["history", "-a", "ap"], {}, FAILED, ["unknown app 'ap'", "did you mean app?"], None),
    ("details-unknown-app", ["details", "-a", "ap"], {}, FAILED, ["unknown app 'ap'", "did you mean app?"], None),
    ("logs-unknown-app", ["logs", "-a", "ap"], {}, FAILED, ["unknown app 'ap'", "did you mean app?"], None),
    ("proxy-unknown-app", ["proxy", "-a", "ap"], {}, FAILED, ["unknown app 'ap'", "did you mean app?"], None),
    ("cancel-unknown-app", ["cancel", "-a", "ap"], {}, FAILED, ["unknown app 'ap'", "did you mean app?"], None),
    ("repair-unknown-app", ["repair", "-a", "ap"], {}, FAILED, ["unknown app 'ap'", "did you mean app?"], None),
    ("prune-unknown-app", ["prune", "-a", "ap"], {}, FAILED, ["unknown app 'ap'", "did you mean app?"], None),
    # Status: what an operator gets wrong first
    ("activate-never-released", ["activate", "--app-name", APP, "--version", "never-released"], {}, FAILED,
     ["app never-released is not released",
      f"run 'stacks.py release --app-name {APP} --version never-released' first"], None),
    ("deactivate-active-without-force", deactivate_active, {}, FAILED, ["503", "--force"], None),
]


@pytest.mark.parametrize("argv, extra_env, code, words, during", [row[1:] for row in ERRORS],
                         ids=[row[0] for row in ERRORS])
def test_error_is_one_line_with_the_documented_code(stacks, unchanged, serving,  # noqa: F811
                                                    argv, extra_env, code, words, during):
    if callable(argv):
        argv = argv(stacks, serving)
    with during(stacks) if during else contextlib.nullcontext():
        result = stacks(*argv, extra_env=extra_env)
    assert "Traceback" not in result.out and "Traceback" not in result.err, result
    lines = result.err.splitlines()
    assert len(lines) == 1, result
    line = lines[0]
    assert line.startswith("stacks.py: "), result
    assert "  " not in line, result
    job = re.search(r"\(job (\d+)\)", result.out)
    for word in words:
        if "{job}" in word:
            assert job, result
            word = word.format(job=job.group(1))
        assert word in line, result
    assert result.rc == code, result
