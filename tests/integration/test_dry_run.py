"""
A plan you can look at (issue "The house", point 4), against the lab:
`stacks.py <action> --dry-run` shows what the action would do from the same
planning code and changes nothing (registry, history, lock, HAProxy's routes
and containers compared before and after); a refused plan exits 1 with the
line the action itself gives. `--expect-revision` with a stale revision is
refused and changes nothing.
"""

import json
import pathlib
import subprocess

import jsonschema
import pytest

from conftest import APP, LAB, REPO, app_status, new_version, reset_app

ROUTES_MAP = pathlib.Path("/srv/pigeon/haproxy/etc/maps/routes.map")
LOCK = LAB / "var/cache/salt/master/pigeon/locks" / f"{APP}.lock"


def snapshot(stacks):
    """Everything an action may change, as data."""
    st = app_status(stacks)
    history = stacks("history", "--app-name", APP, "--json", "--limit", "500")
    assert history.rc == 0, history
    containers = subprocess.run(
        ["docker", "ps", "-a", "--filter", "label=pigeon.managed=true", "--format", "{{.ID}} {{.Names}} {{.Image}}"],
        capture_output=True, text=True, check=True).stdout.split("\n")
    return {
        "registry": {k: st[k] for k in ("stacks", "routes", "generation", "lock")},
        "history": history.json()["history"],
        "routes.map": ROUTES_MAP.read_text() if ROUTES_MAP.exists() else None,
        "lock file": LOCK.read_text() if LOCK.exists() else None,
        "containers": sorted(containers),
    }


@pytest.fixture(scope="module")
def three(stacks):
    """Inactive A, active B, released C: every action has something to do."""
    reset_app(stacks)
    a, b, c = new_version("dry-a"), new_version("dry-b"), new_version("dry-c")
    for action, version in (("release", a), ("activate", a), ("release", b), ("activate", b),
                            ("release", c)):
        result = stacks(action, "--app-name", APP, "--version", version)
        assert result.rc == 0, result
    return a, b, c


def test_dry_run_of_each_action_changes_nothing(stacks, three):
    a, b, c = three
    before = snapshot(stacks)
    revision = before["registry"]["generation"]
    cases = [
        (["activate", "--app-name", APP], [f"route {APP}/production: {APP}_", f"{c}: active"],
         f"dry run: activate {APP} {c} at registry revision {revision}"),
        (["rollback", "--app-name", APP], [f"route {APP}/production: {APP}_", f"{a}: active"], None),
        (["deactivate", "--app-name", APP, "--version", c],
         [f"then stop and remove the containers of {c}", f"{c}: deactivated"], None),
        (["deactivate", "--app-name", APP, "--version", a],
         [f"stop and remove the containers of {a}", f"{a}: deactivated"], None),
        (["deactivate", "--app-name", APP, "--version", b, "--force"],
         [f"drain backend {APP}_", f"{b}: deactivated", "-> none (503)"], None),
    ]
    for argv, needles, first in cases:
        result = stacks(*argv, "--dry-run")
        assert result.rc == 0, result
        for needle in needles:
            assert needle in result.out, (argv, result.out)
        if first:
            assert result.out.splitlines()[0] == first
    assert snapshot(stacks) == before


def test_dry_run_of_a_release_names_its_containers_and_gates(stacks, three):
    before = snapshot(stacks)
    d = new_version("dry-d")
    # a second release: refused, as the release itself would be
    result = stacks("release", "--app-name", APP, "--version", d, "--dry-run")
    assert result.rc == 1
    refusal = result.err.strip()
    assert "\n" not in refusal and refusal.startswith(f"stacks.py: release {APP} {d} refused: ")
    assert snapshot(stacks) == before
    # the same line as the action's own refusal (which the history then records)
    real = stacks("release", "--app-name", APP, "--version", d)
    assert real.rc == 1 and real.err.strip() == refusal
    # room for it: the dry run now shows what it would start, where, and its gates
    c = three[2]
    assert stacks("deactivate", "--app-name", APP, "--version", c).rc == 0
    before = snapshot(stacks)
    result = stacks("release", "--app-name", APP, "--version", d, "--dry-run", "--json")
    assert result.rc == 0, result
    doc = result.json()
    jsonschema.validate(doc, json.loads((REPO / "docs/stacks-output.schema.json").read_text()))
    plan = doc["plan"]
    assert doc["dry_run"] is True and plan["start"]["version"] == d
    assert sorted(c["name"] for c in plan["start"]["containers"]) == sorted(
        f"{APP}-{d}-{service}-{n}" for service in ("web", "api") for n in (1, 2))
    text = stacks("release", "--app-name", APP, "--version", d, "--dry-run")
    assert f"start 4 containers of {d} in slot {plan['start']['slot']}" in text.out
    assert "servers UP in HAProxy backend" in text.out
    assert snapshot(stacks) == before


def test_expect_revision(stacks, get, three):
    st = app_status(stacks)
    revision = st["generation"]
    before = snapshot(stacks)
    stale = stacks("rollback", "--app-name", APP, "--expect-revision", str(revision - 1))
    assert stale.rc == 1
    line = stale.err.strip()
    assert line == (f"stacks.py: rollback {APP} refused: the registry of {APP} is at revision {revision}, "
                    f"not {revision - 1}: it changed since you looked; see ./stacks.py status")
    after = snapshot(stacks)
    # nothing changed but the history, which records the refused action (as every refusal)
    assert {k: v for k, v in after.items() if k != "history"} == \
           {k: v for k, v in before.items() if k != "history"}
    assert after["history"][:-1] == before["history"] and after["history"][-1]["result"] == "refused"
    # a dry run with the stale revision is refused the same way, and records nothing
    dry = stacks("rollback", "--app-name", APP, "--expect-revision", str(revision - 1), "--dry-run")
    assert dry.rc == 1 and dry.err.strip() == line
    assert snapshot(stacks) == after
    # the revision it is at: the action goes through
    inactive = [v for v, s in st["stacks"].items() if s["state"] == "inactive"]
    if inactive:
        ok = stacks("rollback", "--app-name", APP, "--expect-revision", str(revision))
        assert ok.rc == 0, ok
        assert app_status(stacks)["generation"] > revision
