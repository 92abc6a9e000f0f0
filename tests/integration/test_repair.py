"""
``repair`` against the lab: a stack whose container was stopped, one whose container was
removed, and a container of a version the registry does not know; ``./stacks.py repair``
brings every stack back to what the registry says (checked with docker, HTTP on production
and preview, and status), without changing the registry, and says what it did.
"""

import re
import subprocess

from conftest import APP, PREVIEW, PRODUCTION, app_status, new_version, reset_app, wait_for


def docker(*args):
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def running(version):
    """{name: status} of the version's containers, as docker lists them."""
    out = docker("ps", "-a", "--filter", f"label=pigeon.app={APP}", "--filter", f"label=pigeon.version={version}",
                 "--format", "{{.Names}}\t{{.Status}}")
    return dict(line.split("\t", 1) for line in out.splitlines())


def test_repair_brings_every_stack_back_to_the_registry(stacks, get):
    reset_app(stacks)
    active, released, stray = new_version("fix-a"), new_version("fix-r"), new_version("stray")
    for args in (("release", active), ("activate", active), ("release", released)):
        result = stacks(args[0], "--app-name", APP, "--version", args[1])
        assert result.rc == 0, result
    try:
        before = app_status(stacks)
        stopped, removed = f"{APP}-{active}-web-1", f"{APP}-{released}-api-2"
        docker("stop", "-t", "1", stopped)
        docker("rm", "-f", removed)
        docker("run", "-d", "--name", f"{APP}-{stray}-web-1", "--label", f"pigeon.app={APP}",
               "--label", f"pigeon.version={stray}", "--label", "pigeon.managed=true",
               f"pigeon/demoapp:{active}")
        drift = app_status(stacks)["observed"]["drift"]
        assert any(stray in line for line in drift) and any("missing" in line for line in drift), drift

        result = stacks("repair", "--app-name", APP)
        assert result.rc == 0, result
        lines = result.out.splitlines()
        assert f"started (it was stopped): {stopped}" in lines, result
        assert f"created (it was missing): {removed}" in lines, result
        assert f"removed what interrupted actions left of {stray}" in lines, result
        steps = [line.split()[0:2] for line in lines if line.startswith("  ")]
        assert ["loadbal", "ok"] in steps and ["routes", "ok"] in steps, result

        # docker: every container of both stacks up and healthy, the stray one gone
        for version in (active, released):
            seen = running(version)
            # docker says "health: starting" until its first steady check of a (re)started one
            assert len(seen) == 4 and all(re.search(r"\((healthy|health: starting)\)$", s)
                                          for s in seen.values()), seen
        assert running(stray) == {}
        # production and preview answer from their stacks; status: no drift, the registry as before
        status, body = get(PRODUCTION)
        assert status == 200 and body.split()[1] == active
        status, body = get(PREVIEW)
        assert status == 200 and body.split()[1] == released
        after = app_status(stacks)
        assert after["observed"]["drift"] == [], after["observed"]
        assert (after["stacks"], after["routes"], after["generation"]) == (
            before["stacks"], before["routes"], before["generation"])
        entry = stacks("history", "--app-name", APP, "--limit", "1", "--json").json()["history"][-1]
        assert (entry["action"], entry["result"]) == ("repair", "success"), entry

        # nothing broken: it says so
        again = stacks("repair", "--app-name", APP)
        assert again.rc == 0 and "every container was running: nothing started" in again.out, again
    finally:
        subprocess.run(["docker", "rm", "-f", f"{APP}-{stray}-web-1"], capture_output=True)
        reset_app(stacks)


def test_repair_of_an_app_without_stacks_changes_nothing(stacks):
    reset_app(stacks)
    result = stacks("repair", "--app-name", APP)
    assert result.rc == 0 and f"{APP} has no stack; nothing to repair" in result.out, result
    assert wait_for(lambda: app_status(stacks)["lock"] is None)
