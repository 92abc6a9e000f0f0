"""
Health gates, draining and lossless reloads against the lab (issue 4): counts,
not timings. Load runs from threads of real HTTPS clients.
"""

import json
import subprocess
import time

import pytest

from conftest import APP, LAB, PREVIEW, PRODUCTION, Load, app_status, new_version, wait_for

SALT = [str(LAB / "venv/bin/salt"), "-c", str(LAB / "etc/salt"), "lab-minion"]
TEST_PILLAR = LAB / "pillar" / "test_stacks.sls"


def salt(*args):
    out = subprocess.run(SALT + list(args) + ["--out=json"], capture_output=True, text=True)
    return json.loads(out.stdout)["lab-minion"]


def containers(version):
    return subprocess.run(["docker", "ps", "-aq", "--filter", f"label=pigeon.version={version}"],
                          capture_output=True, text=True, check=True).stdout.split()


@pytest.fixture(scope="module")
def active(stacks):
    """An active stack and nothing else; its version."""
    st = app_status(stacks)
    for version, stack in st["stacks"].items():
        if stack["state"] != "active":
            assert stacks("deactivate", "--app-name", APP, "--version", version).rc == 0
    st = app_status(stacks)
    if not st["stacks"]:
        version = new_version("zd")
        assert stacks("release", "--app-name", APP, "--version", version).rc == 0
        assert stacks("activate", "--app-name", APP, "--version", version).rc == 0
        return version
    return next(iter(st["stacks"]))


def test_unhealthy_release_never_reaches_preview(stacks, ca, active):
    broken = new_version("unhealthy")  # the demo app fails /healthz for such versions
    before = app_status(stacks)
    with Load(ca, PREVIEW) as preview, Load(ca, PRODUCTION) as production:
        result = stacks("release", "--app-name", APP, "--version", broken)
    assert result.rc == 1, result
    line = result.err.strip()
    assert "\n" not in line and "not healthy" in line and broken in line, line
    assert "broken on purpose" in line or "unhealthy" in line, line  # the last check's output
    assert preview.failures == [] and production.failures == []
    assert set(preview.versions) == {active} and set(production.versions) == {active}
    assert containers(broken) == []  # cleaned up
    after = app_status(stacks)
    assert after["stacks"] == before["stacks"] and after["lock"] is None


def test_keep_failed_leaves_the_containers(stacks, active):
    broken = new_version("unhealthy")
    result = stacks("release", "--app-name", APP, "--version", broken, "--keep-failed")
    assert result.rc == 1, result
    assert len(containers(broken)) == 4
    assert any(broken in line for line in app_status(stacks)["observed"]["drift"])
    result = stacks("deactivate", "--app-name", APP, "--version", broken)
    assert result.rc == 0, result
    assert containers(broken) == []


def test_activate_refuses_a_release_not_fully_up(stacks, get, active):
    version = new_version("paused")
    assert stacks("release", "--app-name", APP, "--version", version).rc == 0
    st = app_status(stacks)
    backend = f"{APP}_{st['stacks'][version]['slot']}"
    web1 = f"{APP}-{version}-web-1"
    subprocess.run(["docker", "pause", web1], check=True)
    try:
        def down():
            servers = salt("haproxy_runtime.servers", backend)
            return any(not s["status"].startswith("UP") for s in servers if s["addr"])
        assert wait_for(down, timeout=30, interval=0.5)
        result = stacks("activate", "--app-name", APP, "--version", version)
        assert result.rc == 1, result
        assert "1 of 2" in result.err and backend in result.err, result
        assert get(PRODUCTION)[1].split()[1] == active
    finally:
        subprocess.run(["docker", "unpause", web1], check=True)
    assert wait_for(lambda: not down(), timeout=30, interval=0.5)
    assert stacks("deactivate", "--app-name", APP, "--version", version).rc == 0


def test_haproxy_reload_under_load_loses_nothing(stacks, ca, active):
    worker = salt("haproxy_runtime.info")["Pid"]
    # a configuration change (a key the lab pillar does not set): the state reloads HAProxy
    TEST_PILLAR.write_text("haproxy:\n  timeouts:\n    client: 31s\n")
    try:
        with Load(ca, PRODUCTION) as load, Load(ca, PREVIEW) as load2:
            time.sleep(1)
            applied = subprocess.run(SALT + ["state.apply", "haproxy", "--out=json"],
                                     capture_output=True, text=True)
            assert applied.returncode == 0, applied.stdout[-2000:]
            time.sleep(2)
        assert salt("haproxy_runtime.info")["Pid"] != worker  # a new worker: it did reload
        assert load.failures == [] and load2.failures == []
        assert sum(load.versions.values()) > 50
    finally:
        TEST_PILLAR.unlink()
        subprocess.run(SALT + ["state.apply", "haproxy"], capture_output=True, check=True)


def test_deactivating_a_stack_that_takes_traffic_drains_it(stacks, ca, active):
    version = new_version("drain")
    assert stacks("release", "--app-name", APP, "--version", version).rc == 0
    with Load(ca, PREVIEW) as preview, Load(ca, PREVIEW) as preview2:
        time.sleep(1)
        result = stacks("deactivate", "--app-name", APP, "--version", version)
        time.sleep(1)
    assert result.rc == 0, result
    assert "drain" in result.out
    assert preview.failures == [] and preview2.failures == []
    assert set(preview.versions) == {version, active}  # served by the release, then by the active
