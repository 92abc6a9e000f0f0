"""
Tests of the multi-host lab (`make lab TOPOLOGY=multi`, bootstrap/hosts.sh): five hosts,
each a network namespace with its own dockerd and salt-minion, HAProxy on lb1 and lb2.
Hosts are seen through testinfra, with commands run inside their namespace.
"""

import json
import os
import pathlib
import subprocess
import time

import pytest
import requests
import testinfra
from testinfra.backend.local import LocalBackend

REPO = pathlib.Path(__file__).resolve().parents[2]
LAB = REPO / ".lab"
HOSTS_SH = REPO / "bootstrap" / "hosts.sh"
LBS = ["lb1", "lb2"]
APPS = ["app1", "app2", "app3"]
HOSTS = LBS + APPS
BASE_IMAGE = "pigeon/base:bookworm"
VENV = pathlib.Path(os.environ.get("PIGEON_VENV") or LAB / "venv")
OUTSIDE = "198.51.100.1"  # TEST-NET-2: never a real host; the hosts have no route there


def lab_env():
    """The variables .lab/env exports."""
    env = dict(os.environ)
    for line in (LAB / "env").read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = value.strip('"').replace("$PATH", os.environ.get("PATH", ""))
    return env


@pytest.fixture(scope="session")
def env():
    if not (LAB / "env").exists() or lab_env().get("PIGEON_TOPOLOGY") != "multi":
        pytest.fail("the multi-host lab is not up: run `make lab TOPOLOGY=multi` first (make test does)")
    return lab_env()


class NetnsBackend(LocalBackend):
    """testinfra's local backend, every command run in a network namespace of the lab."""

    def __init__(self, namespace, **kwargs):
        super().__init__(**kwargs)
        self.namespace = namespace

    def get_pytest_id(self):
        return self.namespace

    def run(self, command, *args, **kwargs):
        return self.run_local("ip netns exec %s sh -c %s", self.namespace, self.get_command(command, *args))


def in_host(name):
    return testinfra.host.Host(NetnsBackend(f"pigeon-{name}"))


@pytest.fixture(scope="session")
def root():
    """This machine's root namespace."""
    return testinfra.get_host("local://")


def address(name):
    return subprocess.run([str(HOSTS_SH), "address", name], capture_output=True, text=True,
                          check=True).stdout.strip()


def docker(name, *args):
    """The docker CLI against a host's daemon: (returncode, stdout)."""
    proc = subprocess.run(["docker", "-H", f"unix://{LAB}/hosts/{name}/docker.sock", *args],
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout.strip()


def salt(*args, timeout=120):
    """The lab master's salt CLI, JSON out: {minion: return}."""
    proc = subprocess.run([str(VENV / "bin/salt"), "-c", str(LAB / "etc/salt"), "--out", "json", "--static", *args],
                          capture_output=True, text=True, timeout=timeout)
    return json.loads(proc.stdout or "{}")


def wait_for(predicate, timeout=60.0, interval=1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


@pytest.fixture(scope="session")
def get(env):
    """GET a URL from the root namespace, TLS verified with the lab's CA: (status, body)."""

    def fetch(url):
        response = requests.get(url, verify=env["REQUESTS_CA_BUNDLE"], timeout=10)
        return response.status_code, response.text.strip()

    return fetch


def pytest_collection_modifyitems(items):
    """The test that takes the lab down runs last."""
    items.sort(key=lambda item: item.get_closest_marker("last") is not None)


def pytest_configure(config):
    config.addinivalue_line("markers", "last: runs after every other test (it takes the lab down)")
