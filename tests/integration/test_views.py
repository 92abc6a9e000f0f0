"""
The operator's views against the lab: ``details`` (each container as docker has it on
the app's minions), ``logs`` (their last lines, through Salt) and ``lock`` (who holds the
deploy lock; ``lock release`` has nothing stale to release). Checked against docker
itself and against a request whose line the app logs.
"""

import pathlib
import re
import subprocess
import time
import uuid

from conftest import APP, PREVIEW, PRODUCTION, REPO, app_status, new_version, reset_app


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
        # the release's gate checked each; docker says "starting" until its first steady check
        assert len(containers) == 4 and {c["health"] for c in containers} <= {"healthy", "starting"}
        assert {c["service"] for c in containers} == {"web", "api"} and {c["slot"] for c in containers} == {"a"}
        text = stacks("details", "--app-name", APP, "--version", version)
        assert text.rc == 0 and f"{APP}-{version}-web-1" in text.out and re.search(r"\b(healthy|starting)\b", text.out)
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


def test_proxy_shows_the_slots_servers_and_counters(stacks, get):
    reset_app(stacks)
    version = new_version("proxy")
    assert stacks("release", "--app-name", APP, "--version", version).rc == 0
    assert stacks("activate", "--app-name", APP).rc == 0
    try:
        def slot_counters():
            result = stacks("proxy", "--app-name", APP, "--json")
            assert result.rc == 0, result
            proxy = result.json()["proxy"]
            [slot] = [s for s, info in proxy["slots"].items() if info["version"] == version]
            [(minion, seen)] = proxy["balancers"].items()
            return slot, proxy["slots"][slot]["backend"], seen

        slot, backend, seen = slot_counters()
        assert seen["routes"][f"{APP}/production"] == backend
        servers = [s for s in seen["backends"][backend]["servers"] if s["addr"]]
        assert len(servers) == 2 and all(s["status"] == "UP" for s in servers), servers
        before = seen["backends"][backend]["counters"]["hrsp_2xx"]
        for _ in range(5):
            assert get(PRODUCTION)[0] == 200
        _, _, seen = slot_counters()
        assert seen["backends"][backend]["counters"]["hrsp_2xx"] >= before + 5
        text = stacks("proxy", "--app-name", APP)
        assert text.rc == 0 and f"slot {slot} ({version} active): 2/2 UP" in text.out, text
    finally:
        reset_app(stacks)


def test_cancel_stops_a_queued_action_and_it_never_runs(stacks, env):
    reset_app(stacks)
    version = new_version("queued")
    run = [str(REPO / ".lab/venv/bin/python"), str(REPO / "stacks.py")]
    release = subprocess.Popen(run + ["release", "--app-name", APP, "--version", version, "--quiet"],
                               env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not stacks("lock", "--app-name", APP, "--json").json()["lock"]["lock"]:
            time.sleep(0.2)
        queued = subprocess.Popen(run + ["deactivate", "--app-name", APP, "--version", version, "--wait", "120"],
                                  env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        job = re.search(r"\(job (\d{20})\)", queued.stdout.readline()).group(1)  # its first line
        time.sleep(1)  # it waits for the release's lock
        result = stacks("cancel", job, "--app-name", APP)  # that job only: the release runs on
        assert result.rc == 0 and f"{APP} is locked by release {version} of " in result.out, result
        assert "another job: it runs on" in result.out, result
        out, err = queued.communicate(timeout=60)
        assert queued.returncode == 1, (out, err)
        assert err.strip().endswith(f"while it waited for the lock of {APP}: nothing ran"), err
        assert "cancelled by " in err and len(err.strip().splitlines()) == 1
        assert release.wait(120) == 0, release.communicate()
        # the cancelled deactivate never ran: the release is there, and the history says why
        states = {v: s["state"] for v, s in app_status(stacks)["stacks"].items()}
        assert states == {version: "release"}, states
        last = stacks("history", "--app-name", APP, "--limit", "3", "--json").json()["history"]
        assert any(e["action"] == "deactivate" and e["result"] == "refused" and "cancelled by" in e["message"]
                   for e in last), last
    finally:
        if release.poll() is None:
            release.wait(120)
        reset_app(stacks)


def test_cancel_stops_a_running_release_before_its_routes_and_leaves_nothing(stacks, env, get):
    reset_app(stacks)
    active = new_version("kept")
    assert stacks("release", "--app-name", APP, "--version", active).rc == 0
    assert stacks("activate", "--app-name", APP, "--version", active).rc == 0
    before = app_status(stacks)
    version = new_version("cancelled")
    run = [str(REPO / ".lab/venv/bin/python"), str(REPO / "stacks.py")]
    release = subprocess.Popen(run + ["release", "--app-name", APP, "--version", version],
                               env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        release.stdout.readline()  # its first line: it has its job, and holds the lock or soon will
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not stacks("lock", "--app-name", APP, "--json").json()["lock"]["lock"]:
            time.sleep(0.1)
        result = stacks("cancel", "--app-name", APP)  # while its containers start (about 4 s)
        assert result.rc == 0 and "it stops before its next step" in result.out, result
        out, err = release.communicate(timeout=120)
        assert release.returncode == 1, (out, err)
        [line] = err.strip().splitlines()
        assert line.startswith(f"stacks.py: release {APP} {version} cancelled by ") and " before step " in line
        assert "not run: " in line and "routes" in line.split("not run: ")[1], line
        # nothing of it is left, the lock is free, production as before, status is true
        after = app_status(stacks)
        assert after["lock"] is None and after["stacks"] == before["stacks"] and after["routes"] == before["routes"]
        assert after["observed"]["drift"] == [] and version not in after["observed"]["containers"], after
        assert docker_names(version) == []
        status, body = get(PRODUCTION)
        assert status == 200 and body.split()[1] == active
        entry = stacks("history", "--app-name", APP, "--limit", "1", "--json").json()["history"][-1]
        assert (entry["action"], entry["result"]) == ("release", "failed") and "cancelled by" in entry["error"]
    finally:
        if release.poll() is None:
            release.wait(120)
        reset_app(stacks)


BUILD = pathlib.Path("/srv/pigeon/build/demoapp")  # stacks:app:config:build_dir (the minion is this machine)


def image_exists(tag):
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


def test_prune_removes_the_images_no_stack_uses(stacks):
    reset_app(stacks)
    gone, active = new_version("prune-gone"), new_version("prune-kept")
    assert stacks("release", "--app-name", APP, "--version", gone).rc == 0
    assert stacks("deactivate", "--app-name", APP, "--version", gone).rc == 0
    assert stacks("release", "--app-name", APP, "--version", active).rc == 0
    try:
        assert image_exists(f"pigeon/demoapp:{gone}") and image_exists(f"pigeon/demoapp:{active}")
        result = stacks("prune", "--app-name", APP, "--keep", "0", "--dry-run")
        assert result.rc == 0, result
        assert f"  would remove pigeon/demoapp:{gone}" in result.out.splitlines()
        assert f"  kept pigeon/demoapp:{active}" in result.out.splitlines()
        assert f"  would remove the build folder {BUILD / gone}" in result.out.splitlines()
        assert image_exists(f"pigeon/demoapp:{gone}") and (BUILD / gone).is_dir()  # a dry run removes nothing
        result = stacks("prune", "--app-name", APP, "--keep", "0")
        assert result.rc == 0, result
        assert not image_exists(f"pigeon/demoapp:{gone}") and image_exists(f"pigeon/demoapp:{active}")
        # the build folders (the lab's pillar: config:build_dir) of the pruned version only
        assert not (BUILD / gone).exists() and (BUILD / active / "Dockerfile").is_file()
        assert image_exists("pigeon/base:bookworm")  # not an image of the app
        last = stacks("history", "--app-name", APP, "--limit", "1", "--json").json()["history"][-1]
        assert last["action"] == "prune" and f"pigeon/demoapp:{gone}" in last["removed"]
    finally:
        reset_app(stacks)
