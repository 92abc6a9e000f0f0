"""
Deployments from CI (issue 5): signed webhooks posted to the lab's salt-api reach
the reactor, which runs the orchestration and publishes the outcome as an event;
unsigned, badly signed or malformed ones change nothing and are logged.
"""

import hashlib
import hmac
import json
import subprocess
import time
import uuid

import pytest
import requests

from conftest import APP, LAB, PREVIEW, PRODUCTION, app_status, new_version

HOOK = "https://localhost:8001/hook/pigeon/deploy"  # Pigeon's webhook front (srv/netapi)


class Events:
    """Listens on the master's event bus (salt-run state.event) for tags matching a glob."""

    def __init__(self, tagmatch, count=1):
        self.proc = subprocess.Popen(
            [str(LAB / "venv/bin/salt-run"), "-c", str(LAB / "etc/salt"), "state.event",
             f"tagmatch={tagmatch}", f"count={count}", "--out=quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(2)  # subscribed before anything is fired

    def wait(self, timeout=180):
        out, _ = self.proc.communicate(timeout=timeout)
        events = []
        for line in out.splitlines():
            tag, _, data = line.partition("\t")
            if data:
                events.append((tag, json.loads(data)))
        return events


def fresh(body):
    """A request body with what replay protection needs: the time and a nonce."""
    return dict(body, timestamp=int(time.time()), nonce=uuid.uuid4().hex)


def post(env, body, signature="good", status=202):
    raw = body if isinstance(body, bytes) else json.dumps(fresh(body)).encode()
    headers = {"Content-Type": "application/json"}
    secret = env["PIGEON_WEBHOOK_SECRET"].encode()
    if signature == "good":
        headers["X-Pigeon-Signature"] = "sha256=" + hmac.new(secret, raw, hashlib.sha256).hexdigest()
    elif signature == "bad":
        headers["X-Pigeon-Signature"] = "sha256=" + hmac.new(b"wrong", raw, hashlib.sha256).hexdigest()
    session = requests.Session()
    session.trust_env = False
    response = session.post(HOOK, data=raw, headers=headers, verify=env["REQUESTS_CA_BUNDLE"], timeout=10)
    assert response.status_code == status, response.text
    return response


@pytest.fixture(scope="module")
def room(stacks):
    for version, stack in app_status(stacks)["stacks"].items():
        if stack["state"] == "release":
            assert stacks("deactivate", "--app-name", APP, "--version", version).rc == 0


def test_signed_webhook_releases_then_activates(env, stacks, get, room):
    version = new_version("ci")
    events = Events(f"pigeon/deploy/{APP}/release")
    post(env, {"app": APP, "version": version, "action": "release"})
    [(tag, outcome)] = events.wait()
    assert outcome["ok"] is True, outcome
    assert outcome["version"] == version and outcome["via"] == "webhook"
    assert get(PREVIEW)[1].split()[1] == version

    events = Events(f"pigeon/deploy/{APP}/activate")
    post(env, {"app": APP, "version": version, "action": "activate"})
    [(tag, outcome)] = events.wait()
    assert outcome["ok"] is True, outcome
    assert get(PRODUCTION)[1].split()[1] == version
    history = stacks("history", "--app-name", APP, "--json").json()["history"]
    assert history[-1]["source"] == "reactor" and history[-1]["action"] == "activate"


def test_failed_ci_deployment_is_published(env, room):
    events = Events(f"pigeon/deploy/{APP}/activate")
    post(env, {"app": APP, "version": "never-released", "action": "activate"})
    [(tag, outcome)] = events.wait()
    assert outcome["ok"] is False and "is not released" in outcome["error"], outcome


@pytest.mark.parametrize("body, signature, reason", [
    ({"app": APP, "version": "x1", "action": "release"}, None, "unsigned"),
    ({"app": APP, "version": "x1", "action": "release"}, "bad", "bad signature"),
    (b"{not json", "good", "not JSON"),
    ({"app": APP, "version": "x1", "action": "cmd.run"}, "good", "action 'cmd.run'"),
    ({"app": APP, "version": "bad tag", "action": "release"}, "good", "not a valid image tag"),
    ({"app": "../etc", "version": "x1", "action": "release"}, "good", "app '../etc' is not valid"),
])
def test_invalid_webhooks_change_nothing(env, stacks, get, body, signature, reason):
    before = app_status(stacks)
    production = get(PRODUCTION)[1].split()[1]
    events = Events("pigeon/deploy/rejected")
    post(env, body, signature)
    [(tag, rejected)] = events.wait(timeout=60)
    assert reason in rejected["reason"], rejected
    after = app_status(stacks)
    assert after["stacks"] == before["stacks"] and after["routes"] == before["routes"]
    assert get(PRODUCTION)[1].split()[1] == production
    log = (LAB / "var/log/salt/master").read_text()
    assert f"ignored: " in log and reason.split("'")[0] in log


# --- the Jenkinsfile's shell steps, run as Jenkins would run them ----------------------
import re  # noqa: E402

from conftest import REPO  # noqa: E402


def jenkins_steps():
    """{stage name: {"steps": [sh ...], "failure": [sh ...]}} from the Jenkinsfile."""
    text = (REPO / "Jenkinsfile").read_text()
    stages = {}
    for match in re.finditer(r"stage\('([^']+)'\) \{(.*?)\n    \}\n", text, re.S):
        name, body = match.group(1), match.group(2)
        failure = body.split("failure {", 1)[1] if "failure {" in body else ""
        main = body.split("post {", 1)[0]
        stages[name] = {"steps": re.findall(r"sh '([^']+)'", main),
                        "failure": re.findall(r"sh '([^']+)'", failure)}
    return stages


def jenkins_env(env, version):
    # what Jenkins gives the steps: parameters, environment, credentials as SALTAPI_USER/PASS
    return dict(env, APP=APP, VERSION=version, DEADLINE="600", PREVIEW_URL=PREVIEW,
                PRODUCTION_URL=PRODUCTION)


def sh(command, environment, tmp_path):
    return subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=REPO,
                          env=dict(environment, PATH=f"{LAB}/venv/bin:" + environment["PATH"]),
                          capture_output=True, text=True, timeout=600)


def test_jenkins_pipeline_deploys(env, stacks, get, room, tmp_path):
    stages = jenkins_steps()
    assert list(stages) == ["Build", "Release", "Smoke test the preview", "Activate",
                            "Smoke test production"]
    version = new_version("jenkins")
    environment = jenkins_env(env, version)
    for name in ("Release", "Smoke test the preview", "Activate", "Smoke test production"):
        for command in stages[name]["steps"]:
            result = sh(command, environment, tmp_path)
            assert result.returncode == 0, (name, command, result.stdout, result.stderr)
    report = json.loads((REPO / "activate.json").read_text())
    assert report["ok"] is True and report["action"] == "activate" and report["version"] == version
    assert get(PRODUCTION)[1].split()[1] == version
    for artefact in ("release.json", "activate.json"):
        (REPO / artefact).unlink()


def test_jenkins_pipeline_failed_smoke_test_deactivates_the_release(env, stacks, get, room, tmp_path):
    stages = jenkins_steps()
    version = new_version("jenkins")
    production = get(PRODUCTION)[1].split()[1]
    environment = jenkins_env(env, version)
    for command in stages["Release"]["steps"]:
        assert sh(command, environment, tmp_path).returncode == 0
    # the preview answers another version than the one built: the smoke test fails
    broken = dict(environment, VERSION="not-" + version)
    [smoke] = stages["Smoke test the preview"]["steps"]
    assert sh(smoke, broken, tmp_path).returncode != 0
    for command in stages["Smoke test the preview"]["failure"]:
        result = sh(command, environment, tmp_path)
        assert result.returncode == 0, result.stderr
    assert version not in app_status(stacks)["stacks"]
    assert get(PRODUCTION)[1].split()[1] == production
    for artefact in ("release.json", "deactivate.json"):
        (REPO / artefact).unlink()


# --- the --json document, checked against its documented schema ------------------------
def test_json_output_matches_the_schema(stacks, room):
    import jsonschema

    schema = json.loads((REPO / "docs/stacks-output.schema.json").read_text())
    version = new_version("schema")
    success = stacks("release", "--app-name", APP, "--version", version, "--json")
    assert success.rc == 0, success
    jsonschema.validate(success.json(), schema)
    assert success.json()["ok"] is True
    refused = stacks("activate", "--app-name", APP, "--version", "never-" + version, "--json")
    assert refused.rc == 1
    jsonschema.validate(refused.json(), schema)
    assert refused.json()["ok"] is False and "is not released" in refused.json()["error"]
    down = stacks("status", "--json", extra_env={"SALTAPI_URL": "https://localhost:1/"})
    assert down.rc == 3 and json.loads(down.out)["ok"] is False
    assert stacks("deactivate", "--app-name", APP, "--version", version).rc == 0
