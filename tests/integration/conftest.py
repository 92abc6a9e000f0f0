"""
Integration tests against the lab: a real salt-master, salt-minion and salt-api,
the docker engine, HAProxy and the demo app's containers, all started by
`make lab` (bootstrap/lab.sh up). Checked with real HTTP requests and testinfra.
"""

import json
import os
import pathlib
import subprocess
import threading
import time
import uuid

import pytest
import requests
import testinfra

REPO = pathlib.Path(__file__).resolve().parents[2]
LAB = REPO / ".lab"
PRODUCTION = "https://localhost:8443/"
PREVIEW = "https://localhost:4443/"
APP = "app"


def lab_env():
    """The variables .lab/env exports (salt-api URL, credentials, CA)."""
    env = dict(os.environ)
    for line in (LAB / "env").read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = value.replace("$PATH", os.environ.get("PATH", ""))
    return env


@pytest.fixture(scope="session")
def env():
    if not (LAB / "env").exists():
        pytest.fail("the lab is not up: run `make lab` first (make test does)")
    return lab_env()


class Result:
    def __init__(self, proc):
        self.rc = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def json(self):
        return json.loads(self.out)

    def __repr__(self):
        return f"rc={self.rc}\nstdout:\n{self.out}\nstderr:\n{self.err}"


@pytest.fixture(scope="session")
def stacks(env):
    """Run ./stacks.py with the lab's settings: stacks("release", "--app-name", "app", ...)."""

    def run(*args, extra_env=None, timeout=300):
        e = dict(env, **(extra_env or {}))
        proc = subprocess.run([str(REPO / ".lab/venv/bin/python"), str(REPO / "stacks.py"), *args],
                              capture_output=True, text=True, env=e, timeout=timeout, cwd=REPO)
        return Result(proc)

    return run


@pytest.fixture(scope="session")
def ca(env):
    return env["REQUESTS_CA_BUNDLE"]


@pytest.fixture(scope="session")
def get(ca):
    """GET a URL of the lab over TLS verified with the lab's CA: (status, body)."""

    def fetch(url, path=""):
        response = requests.get(url + path.lstrip("/"), verify=ca, timeout=10)
        return response.status_code, response.text.strip()

    return fetch


@pytest.fixture(scope="session")
def host():
    return testinfra.get_host("local://")


def office_get(url="https://pigeon-haproxy:8443/"):
    """GET from a client on the lab's office network (172.31.254.0/24, internal_networks)."""
    proc = subprocess.run(
        ["docker", "run", "--rm", "--network", "pigeon-office", "pigeon/base:bookworm",
         "curl", "-sk", "--max-time", "5", url],
        capture_output=True, text=True, timeout=60)
    return proc.stdout.strip()


def new_version(prefix):
    """A version string never used before (any tag-shaped string must work)."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def app_status(stacks, app=APP):
    result = stacks("status", "--app-name", app, "--json")
    assert result.rc == 0, result
    return result.json()["status"].get(app, {"stacks": {}, "routes": {}})


def reset_app(stacks, app=APP):
    """Deactivate every stack of the app: production answers 503 afterwards."""
    for version, stack in app_status(stacks, app)["stacks"].items():
        result = stacks("deactivate", "--app-name", app, "--version", version, "--force")
        assert result.rc == 0, result


def act(stacks, *args):
    """Run a stacks.py action that must succeed; its Result."""
    result = stacks(*args)
    assert result.rc == 0, result
    return result


def only_active(stacks, prefix, app=APP):
    """Every stack of the app deactivated, then a new version released and activated: its version."""
    reset_app(stacks, app)
    version = new_version(prefix)
    act(stacks, "release", "--app-name", app, "--version", version)
    act(stacks, "activate", "--app-name", app, "--version", version)
    return version


def wait_for(predicate, timeout=10.0, interval=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


class Load:
    """Requests production in a loop in a thread; counts answers by version and failures."""

    def __init__(self, ca, url=PRODUCTION, headers=None):
        self.ca, self.url, self.headers = ca, url, headers or {}
        self.versions, self.failures, self.stop = {}, [], threading.Event()
        self.apps = {}  # answers by app (the body's first word)
        self.failed_at = []  # monotonic times of the failures: how long an outage lasted
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        session = requests.Session()
        session.trust_env = False
        deadline = time.monotonic() + 600
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                r = session.get(self.url, verify=self.ca, timeout=5, headers=self.headers)
                if r.status_code != 200:
                    self.failures.append(r.status_code)
                    self.failed_at.append(time.monotonic())
                else:
                    app, version = r.text.split()[:2]
                    self.versions[version] = self.versions.get(version, 0) + 1
                    self.apps[app] = self.apps.get(app, 0) + 1
            except requests.RequestException as exc:
                self.failures.append(repr(exc))
                self.failed_at.append(time.monotonic())

    @property
    def outage(self):
        """Seconds from the first failed request to the last (0 when none failed)."""
        return round(self.failed_at[-1] - self.failed_at[0], 1) if self.failed_at else 0

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)
