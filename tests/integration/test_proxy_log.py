"""
HAProxy's access log against the lab: ``stacks.py logs --proxy`` shows the requests production
sent to the app's active slot (backend, status 200), not HAProxy's health checks; ``logs
--proxy -f`` prints the requests made while it runs, each once, and ends with exit 0 on Ctrl-C
(SIGINT). The lab's HAProxy must run the haproxy.cfg of this formula (its ring pigeon_access):
`make lab` applies it.
"""

import signal
import subprocess
import threading
import time
import uuid

from conftest import APP, PRODUCTION, REPO, app_status, new_version, reset_app

def requests_in(out, paths):
    """{path: [the fields of each line of ``out`` (``<load balancer> | <logged line>``) that logged
    a GET of it]}."""
    found = {path: [] for path in paths}
    for line in out.splitlines():
        fields = line.partition(" | ")[2].split(" ")
        if len(fields) > 10 and fields[9] == '"GET' and fields[10] in found:
            found[fields[10]].append(fields)
    return found


def test_the_proxy_log_names_the_active_backend_and_the_status(stacks, get):
    reset_app(stacks)
    version = new_version("plog")
    assert stacks("release", "--app-name", APP, "--version", version).rc == 0
    assert stacks("activate", "--app-name", APP).rc == 0
    try:
        backend = app_status(stacks)["routes"][f"{APP}/production"]
        paths = [f"/pigeon-proxy-log-{uuid.uuid4().hex[:8]}" for _ in range(3)]
        for path in paths:
            assert get(PRODUCTION, path)[0] == 200
        result = stacks("logs", "--app-name", APP, "--proxy", "--tail", "50")
        assert result.rc == 0 and result.err == "", result
        for path, lines in requests_in(result.out, paths).items():
            assert len(lines) == 1, (path, result.out)
            [fields] = lines
            # accept date, client, frontend (~: TLS), route, backend/server, status, timers, bytes, state
            assert fields[2] == "www~" and fields[3] == f"{APP}/production", fields
            assert fields[4].split("/")[0] == backend and fields[5] == "200", fields
        assert "GET /healthz" not in result.out  # health checks pass no frontend: not logged
        # the same through --json, and one version's slot only
        result = stacks("logs", "--app-name", APP, "--proxy", "--version", version, "--json")
        assert result.rc == 0, result
        [lines] = result.json()["logs"]["proxy"].values()  # the lab's one load balancer
        assert lines and all(line.split(" ")[4].split("/")[0] == backend for line in lines), lines
        # a version the registry does not have has no slot: refused in one line
        result = stacks("logs", "--app-name", APP, "--proxy", "--version", "no-such-9")
        assert result.rc == 1 and "has no stack no-such-9" in result.err, result
        assert len(result.err.strip().splitlines()) == 1
    finally:
        reset_app(stacks)


def test_follow_prints_the_new_requests_once_and_ctrl_c_ends_it(stacks, get, env):
    reset_app(stacks)
    version = new_version("plog-f")
    assert stacks("release", "--app-name", APP, "--version", version).rc == 0
    assert stacks("activate", "--app-name", APP).rc == 0
    get(PRODUCTION, "/pigeon-before-follow")  # at least one line for its first answer
    follow = subprocess.Popen([str(REPO / ".lab/venv/bin/python"), str(REPO / "stacks.py"), "logs",
                               "--app-name", APP, "--proxy", "-f"],
                              env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = []
    reader = threading.Thread(target=lambda: out.extend(follow.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not out and follow.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)  # its first answer is printed
        assert out, follow.stderr.read() if follow.poll() is not None else "no line within 30 s"
        paths = []
        for _ in range(5):  # about 5 s of requests while it follows
            paths.append(f"/pigeon-follow-{uuid.uuid4().hex[:8]}")
            assert get(PRODUCTION, paths[-1])[0] == 200
            time.sleep(1)
        time.sleep(3)  # its next ask (every 2 s) prints the last one
        follow.send_signal(signal.SIGINT)
        assert follow.wait(30) == 0
        reader.join(10)
        err = follow.stderr.read()
        assert "Traceback" not in err and err == "", err
        found = requests_in("".join(out), paths)
        assert all(len(lines) == 1 for lines in found.values()), "".join(out)  # each printed, once
        assert all(lines[0][5] == "200" for lines in found.values())
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait(10)
        reset_app(stacks)
