"""
Bad input gets a clear one-line error, a non-zero exit, and changes nothing in
what serves (issue 2's acceptance). Runs against whatever the lab serves now;
each test compares production and the registry before and after.
"""

import pathlib
import subprocess

import pytest

from conftest import APP, LAB, PRODUCTION, REPO, app_status, new_version, wait_for

TEST_PILLAR = LAB / "pillar" / "test_stacks.sls"


@pytest.fixture(scope="module")
def serving(stacks, get):
    """Make sure an active stack serves, then yield what production answers."""
    st = app_status(stacks)
    if not any(s["state"] == "active" for s in st["stacks"].values()):
        version = new_version("err")
        assert stacks("release", "--app-name", APP, "--version", version).rc == 0
        assert stacks("activate", "--app-name", APP, "--version", version).rc == 0
    status, body = get(PRODUCTION)
    assert status == 200
    return body.split()[1]  # the active version


@pytest.fixture
def unchanged(stacks, get, serving, request):
    """Asserts after the test that production and the registry are as before."""
    before = app_status(stacks)
    yield
    after = app_status(stacks)
    assert after["stacks"] == before["stacks"]
    assert after["routes"] == before["routes"]
    assert after.get("lock") is None
    status, body = get(PRODUCTION)
    assert status == 200 and body.split()[1] == serving


def one_line_error(result, *words):
    assert result.rc != 0, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result
    assert lines[0].startswith("stacks.py: "), result
    assert "Traceback" not in result.err
    for word in words:
        assert word in lines[0], result
    return lines[0]


def test_wrong_password(stacks, unchanged):
    result = stacks("release", "--app-name", APP, "--version", "x1", extra_env={"SALTAPI_PASS": "wrong"})
    one_line_error(result, "refused the credentials", "SALTAPI_PASS")
    assert result.rc == 3


def test_salt_api_unreachable(stacks, unchanged):
    result = stacks("release", "--app-name", APP, "--version", "x1",
                    extra_env={"SALTAPI_URL": "https://localhost:1/"})
    one_line_error(result, "cannot reach salt-api", "https://localhost:1")
    assert result.rc == 3


def test_tls_is_verified(stacks, unchanged):
    # without the lab's CA, salt-api's certificate is not trusted
    result = stacks("status", extra_env={"REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"})
    one_line_error(result, "TLS verification", "REQUESTS_CA_BUNDLE")
    assert result.rc == 3


def test_unknown_app(stacks, unchanged):
    result = stacks("release", "--app-name", "nosuchapp", "--version", "1.0")
    one_line_error(result, "unknown app 'nosuchapp'")
    assert result.rc == 1


@pytest.mark.parametrize("version", ["bad tag", "-leading-dash", "x" * 129, "semi;colon"])
def test_version_not_an_image_tag(stacks, unchanged, version):
    result = stacks("release", "--app-name", APP, f"--version={version}")
    one_line_error(result, "not a valid image tag")


def test_activate_a_version_never_released(stacks, unchanged):
    result = stacks("activate", "--app-name", APP, "--version", "never-released")
    one_line_error(result, "is not released", "stacks.py release")


def test_deactivate_active_needs_force(stacks, unchanged, serving):
    result = stacks("deactivate", "--app-name", APP, "--version", serving)
    one_line_error(result, "503", "--force")


def test_release_of_the_active_version(stacks, unchanged, serving):
    result = stacks("release", "--app-name", APP, "--version", serving)
    one_line_error(result, "already active")


def test_usage_errors_exit_2(stacks, unchanged):
    result = stacks("release")
    assert result.rc == 2 and "--app-name" in result.err


def test_actions_outside_the_acl_are_refused(env, unchanged):
    # the eauth user may run Pigeon's orchestrations and nothing else
    import requests

    session = requests.Session()
    session.trust_env = False  # this machine's environment names another CA bundle
    session.verify = env["REQUESTS_CA_BUNDLE"]
    login = session.post(env["SALTAPI_URL"] + "login", json={
        "username": env["SALTAPI_USER"], "password": env["SALTAPI_PASS"], "eauth": env["SALTAPI_EAUTH"]})
    token = login.json()["return"][0]["token"]
    headers = {"X-Auth-Token": token, "Accept": "application/json"}
    for low in (
        {"client": "runner", "fun": "state.orchestrate", "arg": ["orch.evil"]},
        {"client": "runner", "fun": "jobs.list_jobs"},
        {"client": "runner", "fun": "state.orchestrate", "arg": ["orch.release"],
         "kwarg": {"pillar": {"pigeon": {"app": APP}, "stacks": {"app": {}}}}},
        {"client": "local", "tgt": "*", "fun": "cmd.run", "arg": ["id"]},
    ):
        response = session.post(env["SALTAPI_URL"], json=[low], headers=headers)
        assert response.status_code in (400, 401, 403), (low, response.status_code, response.text[:200])


def test_broken_pillar(stacks, unchanged):
    TEST_PILLAR.write_text("stacks:\n  broken:\n    version: '1'\n    config:\n      target: lab-minion\n")
    try:
        result = stacks("release", "--app-name", "broken", "--version", "1")
        one_line_error(result, "broken pillar", "stacks:broken:loadbal")
    finally:
        TEST_PILLAR.unlink()


@pytest.fixture
def room(stacks, serving):
    """Room for a release (nothing but the active stack), so that one gets as far as a minion."""
    for version, stack in app_status(stacks)["stacks"].items():
        if stack["state"] != "active":
            assert stacks("deactivate", "--app-name", APP, "--version", version).rc == 0


def test_minion_not_answering(stacks, room, unchanged):
    # the minion and all its processes stop
    pattern = f"salt-minion -c {LAB}/etc/salt"
    subprocess.run(["pkill", "-f", pattern], check=True)
    assert wait_for(lambda: subprocess.run(["pgrep", "-f", pattern]).returncode == 1, timeout=30)
    try:
        result = stacks("activate", "--app-name", APP, "--version", "not-released-either")
        # refused before any minion is asked
        one_line_error(result, "is not released")
        result = stacks("release", "--app-name", APP, "--version", new_version("orphan"), timeout=300)
        line = one_line_error(result, "failed")
        assert "lab-minion" in line or "minion" in line, line
    finally:
        subprocess.run([str(REPO / "bootstrap/minion.sh"), str(LAB), "lab-minion", "127.0.0.1"],
                       check=True, env={"PATH": "/usr/local/bin:/usr/bin:/bin", "PIGEON_VENV": str(LAB / "venv")})
        ping = [str(LAB / "venv/bin/salt"), "-c", str(LAB / "etc/salt"), "lab-minion", "test.ping",
                "--timeout", "5"]
        assert wait_for(lambda: subprocess.run(ping, capture_output=True).returncode == 0,
                        timeout=90, interval=1)
