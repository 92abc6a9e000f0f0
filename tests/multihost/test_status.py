"""
`status` with two load balancers: what each one routes, and drift when they disagree. One
LB's running map is changed behind Pigeon's back (as a person at its admin socket would);
status names the key and both LBs, production on that LB stops answering "no stack", and
applying its haproxy state (routes.map rendered from the registry, applied at runtime when
it changes) brings it back in line with the other.
"""

import json
import subprocess

from conftest import LBS, REPO, address, salt, wait_for

NO_STACK = "503 no stack serves this address yet"


def stacks(env, *args):
    proc = subprocess.run([str(REPO / "stacks.py"), *args], env=env, capture_output=True, text=True, timeout=300)
    return proc


def observed(env):
    proc = stacks(env, "status", "--app-name", "app", "--json")
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)["status"]["app"]["observed"]


def disagreements(env):
    return [line for line in observed(env)["drift"] if "disagree" in line]


def test_status_shows_each_load_balancer_and_their_disagreement(env, get):
    seen = observed(env)
    assert sorted(seen["balancers"]) == LBS and disagreements(env) == [], seen
    production = f"https://{address('lb1')}:8443/"
    try:
        # behind Pigeon's back: lb1 alone sends production to slot a (no server: HAProxy's 503)
        changed = salt("lb1", "haproxy_runtime.set_routes", '{"app/production": "app_a"}')
        assert changed["lb1"]["map"]["app/production"] == "app_a", changed
        status, body = get(production)
        assert status == 503 and body != NO_STACK, body
        assert disagreements(env) == [
            "the load balancers disagree on app/production: lb1 -> app_a, lb2 -> no stack (503); apply the haproxy "
            "state on the load balancers (salt <minion> state.apply haproxy)"]
        text = stacks(env, "status", "--app-name", "app")
        assert "  routes on lb1: app/production -> app_a" in text.stdout.splitlines(), text.stdout
        assert "  routes on lb2: none (503)" in text.stdout.splitlines(), text.stdout
    finally:
        # the cure the drift line names: lb1's haproxy state renders routes.map from the registry
        applied = salt("lb1", "state.apply", "haproxy", timeout=300)
        assert all(r["result"] for r in applied["lb1"].values()), applied
    assert wait_for(lambda: disagreements(env) == [], timeout=20)
    assert get(production) == (503, NO_STACK)
    assert observed(env)["balancers"] == {"lb1": {}, "lb2": {}}
