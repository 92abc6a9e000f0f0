"""
The operator's views against the lab: ``details`` (each container as docker has it on
the app's minions), ``logs`` (their last lines, through Salt) and ``lock`` (who holds the
deploy lock; ``lock release`` has nothing stale to release). Checked against docker
itself and against a request whose line the app logs.
"""

import subprocess
import time
import uuid

from conftest import APP, PREVIEW, REPO, new_version, reset_app


def docker_names(version):
    out = subprocess.run(["docker", "ps", "--filter", f"label=pigeon.app={APP}", "--filter",
                          f"label=pigeon.version={version}", "--format", "{{.Names}} {{.Image}}"],
                         capture_output=True, text=True, check=True).stdout
    return sorted(out.split("\n")[:-1])


def test_details_and_logs_of_a_release(stacks, get):
    reset_app(stacks)
    version = new_version("views")
    assert stacks("release", "--app-name", APP, "--version", version).rc == 0
    try:
        # details: every container docker runs for that version, healthy, with its image
        result = stacks("details", "--app-name", APP, "--version", version, "--json")
        assert result.rc == 0, result
        containers = result.json()["details"]["containers"]
        assert sorted(f"{c['name']} {c['image']}" for c in containers) == docker_names(version)
        assert len(containers) == 4 and {c["health"] for c in containers} == {"healthy"}
        assert {c["service"] for c in containers} == {"web", "api"} and {c["slot"] for c in containers} == {"a"}
        text = stacks("details", "--app-name", APP, "--version", version)
        assert text.rc == 0 and f"{APP}-{version}-web-1" in text.out and "healthy" in text.out
        # logs: a request's own line, from the container that served it, through Salt
        path = f"/pigeon-logs-{uuid.uuid4().hex[:8]}"
        status, body = get(PREVIEW, path)
        assert status == 200 and body.startswith(f"{APP} {version} web ")
        result = stacks("logs", "--app-name", APP, "--version", version, "--service", "web", "--tail", "20")
        assert result.rc == 0, result
        lines = [line for line in result.out.splitlines() if f"GET {path} " in line]
        assert len(lines) == 1, result.out
        assert lines[0].startswith(f"{APP}-{version}-web-"), lines
        # docker's time stamp first, then nginx's line
        assert lines[0].split(" | ", 1)[1][:4] == time.strftime("%Y", time.gmtime()), lines
        # the api service logs nothing of it
        result = stacks("logs", "--app-name", APP, "--version", version, "--service", "api")
        assert result.rc == 0 and path not in result.out
    finally:
        reset_app(stacks)


def test_views_of_an_unknown_app_and_hostile_options(stacks):
    result = stacks("logs", "--app-name", "ap")
    assert result.rc == 1 and result.err.strip().endswith("did you mean app?"), result
    assert len(result.err.strip().splitlines()) == 1
    result = stacks("logs", "--app-name", APP, "--service", "web;id")
    assert result.rc == 2 and len(result.err.strip().splitlines()) == 1


def test_lock_status_and_release(stacks, env):
    reset_app(stacks)
    assert stacks("lock", "--app-name", APP).out.strip() == f"{APP} is not locked"
    assert stacks("lock", "release", "--app-name", APP).out.strip() == f"{APP} is not locked: nothing to release"
    version = new_version("locked")
    release = subprocess.Popen([str(REPO / ".lab/venv/bin/python"), str(REPO / "stacks.py"), "release",
                                "--app-name", APP, "--version", version, "--quiet"],
                               env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        held = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and release.poll() is None:
            result = stacks("lock", "--app-name", APP, "--json")
            held = result.json()["lock"]["lock"] if result.rc == 0 else None
            if held:
                break
            time.sleep(0.2)
        assert held and held["action"] == "release" and held["version"] == version, held
        result = stacks("lock", "release", "--app-name", APP)
        assert result.rc == 1 and f"is locked by release {version} of " in result.err
        assert "there is no stale lock to release" in result.err and len(result.err.strip().splitlines()) == 1
        assert release.wait(120) == 0  # the release was not disturbed
    finally:
        if release.poll() is None:
            release.wait(120)
        reset_app(stacks)
    assert stacks("lock", "--app-name", APP).out.strip() == f"{APP} is not locked"
