"""
Blue/green on the multi-host lab (issue 11): the stack on every app host (count replicas on
each), HAProxy on lb1 and lb2 reaching them by address (loadbal:servers), the switch in two
phases over both load balancers. Real minions, daemons, HAProxy and HTTP; nothing mocked.

The tests run in file order and share the lab: the walk first, then the switch under load,
a load balancer rebuilt, an app host's minion killed mid-release, a fourth app host. The
module's fixture removes every stack at the end, as the lab's other tests expect.
"""

import collections
import json
import re
import subprocess
import threading
import time

import pytest
import requests

from conftest import APPS, HOSTS_SH, LAB, LBS, REPO, address, docker, in_host, salt, wait_for

NO_STACK = "503 503 no stack serves this address yet"  # answer(): the status, then HAProxy's text
COUNT = 2  # stacks.sls: count 2 of web (load-balanced) and api
FIRST_PORT = 21000  # bootstrap/lab.sh's topology.sls: loadbal:servers:first_port


def stacks(env, *args, timeout=300):
    return subprocess.run([str(REPO / "stacks.py"), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def ok(env, *args):
    proc = stacks(env, *args)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


def status(env):
    proc = stacks(env, "status", "--app-name", "app", "--json")
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)["status"]["app"]


def versions_on(host):
    """{version: containers running} of the app on one host's daemon."""
    rc, out = docker(host, "ps", "--filter", "label=pigeon.app=app", "--format", '{{.Label "pigeon.version"}}')
    assert rc == 0, out
    return dict(collections.Counter(out.split()))


def answer(env, url, tries=3):
    """The version behind a URL (several requests: every answer must agree), or the 503 text."""
    seen = set()
    for _ in range(tries):
        r = requests.get(url, verify=env["REQUESTS_CA_BUNDLE"], timeout=10)
        seen.add(r.text.split()[1] if r.status_code == 200 else f"{r.status_code} {r.text.strip()}")
    assert len(seen) == 1, (url, seen)
    return seen.pop()


def answer_or_none(env, url):
    """answer(), or None while nothing listens there."""
    try:
        return answer(env, url, tries=1)
    except requests.RequestException:
        return None


def everywhere(env, production, preview):
    """Every LB's production URL answers `production`, every preview URL `preview`."""
    want = {url: production for url in env["PIGEON_PRODUCTION_URLS"].split()}
    want.update({url: preview for url in env["PIGEON_PREVIEW_URLS"].split()})
    got = {url: answer(env, url) for url in want}
    assert got == want


def lb_servers(lb, backend):
    """"address:port" of the UP servers of a backend on one load balancer."""
    found = salt(lb, "haproxy_runtime.servers", backend)[lb]
    return sorted(s["addr"] for s in found if s["status"].startswith("UP"))


@pytest.fixture(scope="module", autouse=True)
def no_stack_after(env):
    """Every stack removed at the end (and at the start, from an earlier broken run)."""

    def clear():
        for version, stack in status(env)["stacks"].items():
            stacks(env, "deactivate", "--app-name", "app", "--version", version, "--force")
        assert status(env)["stacks"] == {}

    clear()
    yield
    clear()


def test_blue_green_walk_on_every_app_host_and_both_load_balancers(env):
    app_addresses = sorted(address(h) for h in APPS)
    ok(env, "release", "--app-name", "app", "--version", "1.0")
    everywhere(env, NO_STACK, "1.0")
    for host in APPS:  # count replicas of every service on each app host
        assert versions_on(host) == {"1.0": 2 * COUNT}, host
    slot = status(env)["stacks"]["1.0"]["slot"]
    port = FIRST_PORT + "abc".index(slot) * 10  # the slot's first published port
    servers = sorted(f"{a}:{port + n}" for a in app_addresses for n in range(COUNT))
    for lb in LBS:  # each LB reaches the web containers on every app host, by address
        assert lb_servers(lb, f"app_{slot}") == servers, lb
    # testinfra, inside each LB's namespace: every app host's published ports answer there,
    # and each app host publishes them on its own address only (its DNAT rules)
    for lb in LBS:
        for host in APPS:
            for n in range(COUNT):
                reply = in_host(lb).run(f"curl -s --max-time 5 http://{address(host)}:{port + n}/")
                assert reply.rc == 0 and reply.stdout.startswith("app 1.0 web"), (lb, host, reply)
    for host in APPS:
        nat = in_host(host).run("iptables -t nat -S DOCKER")
        rule = re.compile(rf"^-A DOCKER -d {re.escape(address(host))}/32 .*--dport {port} -j DNAT ", re.M)
        assert nat.rc == 0 and rule.search(nat.stdout), nat.stdout

    ok(env, "activate", "--app-name", "app")
    everywhere(env, "1.0", "1.0")
    ok(env, "release", "--app-name", "app", "--version", "2.0")
    everywhere(env, "1.0", "2.0")
    for host in APPS:
        assert versions_on(host) == {"1.0": 2 * COUNT, "2.0": 2 * COUNT}, host
    ok(env, "activate", "--app-name", "app")
    everywhere(env, "2.0", "2.0")
    ok(env, "rollback", "--app-name", "app")
    everywhere(env, "1.0", "1.0")
    ok(env, "deactivate", "--app-name", "app", "--version", "2.0")
    everywhere(env, "1.0", "1.0")
    for host in APPS:
        assert versions_on(host) == {"1.0": 2 * COUNT}, host
    seen = status(env)
    assert seen["observed"]["drift"] == [], seen["observed"]
    assert sorted(seen["stacks"]["1.0"]["servers"]) == sorted([a, port + n] for a in app_addresses
                                                                for n in range(COUNT))


class Load:
    """Clients on every production URL, each in a thread: (sent at, version or failure) per
    request, so that answers sent after a switch returned can be told apart."""

    def __init__(self, env, urls, per_url=2):
        self.env, self.answers, self.stop = env, [], threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(url,), daemon=True)
                        for url in urls for _ in range(per_url)]

    def run(self, url):
        session = requests.Session()
        session.trust_env = False
        while not self.stop.is_set():
            sent = time.monotonic()
            try:
                r = session.get(url, verify=self.env["REQUESTS_CA_BUNDLE"], timeout=5)
                got = r.text.split()[1] if r.status_code == 200 else f"HTTP {r.status_code}"
            except requests.RequestException as exc:
                got = f"failed: {type(exc).__name__}"
            self.answers.append((sent, url, got))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(10)


def test_switch_under_load_on_both_load_balancers(env):
    ok(env, "release", "--app-name", "app", "--version", "2.0")
    urls = env["PIGEON_PRODUCTION_URLS"].split()
    with Load(env, urls) as load:
        time.sleep(2)
        ok(env, "activate", "--app-name", "app")
        switched = time.monotonic()
        time.sleep(2)
    failures = [a for a in load.answers if not a[2][0].isdigit()]
    late_old = [a for a in load.answers if a[0] > switched and a[2] == "1.0"]
    assert failures == [] and late_old == [], (failures[:5], late_old[:5])
    for url in urls:  # both LBs took load, and both switched
        assert {a[2] for a in load.answers if a[1] == url and a[0] > switched} == {"2.0"}, url
    assert len(load.answers) > 100


def test_a_rebuilt_load_balancer_routes_as_the_other(env):
    """lb2's HAProxy container and its files go; its states applied: it routes like lb1."""
    rc, _ = docker("lb2", "rm", "-f", "pigeon-haproxy")
    assert rc == 0
    subprocess.run(["rm", "-rf", str(LAB / "hosts/lb2/haproxy")], check=True)
    lb2 = f"https://{address('lb2')}:8443/"
    with pytest.raises(requests.RequestException):
        requests.get(lb2, verify=env["REQUESTS_CA_BUNDLE"], timeout=3)
    applied = salt("lb2", "state.apply", "haproxy", timeout=300)
    assert applied["lb2"] and all(r["result"] for r in applied["lb2"].values()), applied
    assert wait_for(lambda: answer_or_none(env, lb2) == "2.0", timeout=10)
    everywhere(env, "2.0", "2.0")
    backends = {f"app_{s['slot']}" for s in status(env)["stacks"].values()}
    for backend in backends:
        assert lb_servers("lb2", backend) == lb_servers("lb1", backend), backend
    assert status(env)["observed"]["drift"] == []


def minion_pids(host):
    """The salt-minion processes of one host (its main process and the jobs it forked)."""
    found = subprocess.run(["pgrep", "-f", f"[s]alt-minion -c {LAB}/hosts/{host}/etc/salt"],
                           capture_output=True, text=True)
    assert found.returncode in (0, 1), found
    return [int(p) for p in found.stdout.split()]


def test_a_minion_killed_during_a_release_fails_it_cleanly(env):
    before = status(env)
    release = subprocess.Popen([str(REPO / "stacks.py"), "release", "--app-name", "app", "--version", "3.0"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # the release has begun: its plan counts app2
    for pid in minion_pids("app2"):
        subprocess.run(["kill", "-9", str(pid)], check=False)
    try:
        out, err = release.communicate(timeout=300)
        assert release.returncode == 1, (out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "app2" in lines[0], err
        for host in APPS:  # nothing of 3.0 left running where the minions answered
            if host != "app2":
                assert "3.0" not in versions_on(host), host
        after = status(env)
        assert after["stacks"] == before["stacks"] and after["lock"] is None
        everywhere(env, "2.0", "2.0")  # production (and preview) untouched
    finally:
        up = subprocess.run([str(HOSTS_SH), "up", "app2"], capture_output=True, text=True, timeout=300)
        assert up.returncode == 0, up.stderr
        assert wait_for(lambda: salt("app2", "test.ping", "--timeout", "5") == {"app2": True}, timeout=90)
    ok(env, "release", "--app-name", "app", "--version", "3.0")
    for host in APPS:
        assert versions_on(host).get("3.0") == 2 * COUNT, host
    everywhere(env, "2.0", "3.0")


def test_a_fourth_app_host_gets_replicas_on_the_next_release(env):
    up = subprocess.run([str(HOSTS_SH), "up", "app4"], capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr
    try:
        assert wait_for(lambda: salt("app4", "test.ping", "--timeout", "5") == {"app4": True}, timeout=90)
        applied = salt("app4", "state.highstate", timeout=600)
        assert applied["app4"] and all(r["result"] for r in applied["app4"].values()), applied
        ok(env, "deactivate", "--app-name", "app", "--version", "3.0")
        ok(env, "release", "--app-name", "app", "--version", "4.0")
        assert versions_on("app4") == {"4.0": 2 * COUNT}
        slot = status(env)["stacks"]["4.0"]["slot"]
        for lb in LBS:
            assert {s.split(":")[0] for s in lb_servers(lb, f"app_{slot}")} == {address(h) for h in APPS + ["app4"]}, lb
        ok(env, "activate", "--app-name", "app")
        everywhere(env, "4.0", "4.0")
        seen = {answer(env, env["PIGEON_PRODUCTION_URLS"].split()[0], tries=1) for _ in range(10)}
        assert seen == {"4.0"}
    finally:
        for version, stack in status(env)["stacks"].items():
            stacks(env, "deactivate", "--app-name", "app", "--version", version, "--force")
        down = subprocess.run([str(HOSTS_SH), "down", "app4"], capture_output=True, text=True, timeout=300)
        assert down.returncode == 0, down.stderr


def test_a_load_balancer_that_cannot_prepare_stops_the_switch_on_every_one(env):
    """lb2's HAProxy stopped: activate fails naming lb2 and lb1 keeps routing as it did; once
    lb2's HAProxy runs again (its routes and servers from its files), the activate goes on."""
    ok(env, "release", "--app-name", "app", "--version", "5.0")
    ok(env, "activate", "--app-name", "app")
    ok(env, "release", "--app-name", "app", "--version", "6.0")
    rc, _ = docker("lb2", "stop", "pigeon-haproxy")
    assert rc == 0
    try:
        refused = stacks(env, "activate", "--app-name", "app")
        assert refused.returncode == 1, refused.stdout
        line = refused.stderr.strip()
        assert "\n" not in line and "lb2:" in line and "no route changed on any load balancer" in line, line
        lb1 = f"https://{address('lb1')}:"
        assert answer(env, lb1 + "8443/") == "5.0" and answer(env, lb1 + "4443/") == "6.0"
        assert status(env)["stacks"]["6.0"]["state"] == "release"
    finally:
        assert docker("lb2", "start", "pigeon-haproxy")[0] == 0
    # restarted, lb2 routes as before from its map file and its server-state file
    assert wait_for(lambda: answer_or_none(env, f"https://{address('lb2')}:4443/") == "6.0", timeout=20)
    everywhere(env, "5.0", "6.0")
    ok(env, "activate", "--app-name", "app")
    everywhere(env, "6.0", "6.0")
