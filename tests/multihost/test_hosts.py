"""
The five hosts of the multi-host lab: their minions, their own docker daemons, HAProxy on
the load balancers answering from the root namespace, the base image, and the walls.
"""

import json

import pytest

from conftest import APPS, BASE_IMAGE, HOSTS, LAB, LBS, OUTSIDE, address, docker, in_host, salt


def test_every_minion_answers_from_its_own_host():
    assert salt("-L", ",".join(HOSTS), "test.ping", "--timeout", "10") == {h: True for h in HOSTS}
    # each minion lives in its host's namespace: the address it sees is its host's
    addrs = salt("-L", ",".join(HOSTS), "network.ip_addrs")
    for h in HOSTS:
        assert address(h) in addrs[h], h


@pytest.mark.parametrize("name", HOSTS)
def test_each_host_runs_its_own_dockerd(name, root):
    rc, out = docker(name, "info", "--format", "{{json .}}")
    assert rc == 0, name
    info = json.loads(out)
    assert info["DockerRootDir"] == f"{LAB}/hosts/{name}/docker"
    pid = int((LAB / f"hosts/{name}/dockerd.pid").read_text())
    assert root.check_output(f"ip netns identify {pid}") == f"pigeon-{name}"
    # the minion's docker modules use this host's daemon (docker.url)
    assert salt(name, "docker.info")[name]["ID"] == info["ID"]


def test_daemon_ids_are_distinct_from_each_other_and_the_default(root):
    """Each host has its own /etc/docker (key.json): not the default daemon's ID."""
    ids = {h: docker(h, "info", "--format", "{{.ID}}")[1] for h in HOSTS}
    assert len(set(ids.values())) == len(HOSTS), ids
    assert root.check_output("docker info --format '{{.ID}}'") not in ids.values()


@pytest.mark.parametrize("name", HOSTS)
def test_each_host_has_its_own_containers(name):
    rc, out = docker(name, "ps", "-a", "--format", "{{.Names}}")
    assert rc == 0
    names = out.split()
    if name in LBS:
        assert names == ["pigeon-haproxy"]
        rc, out = docker(name, "inspect", "--format", "{{.State.Running}}", "pigeon-haproxy")
        assert out == "true"
    else:
        assert names == []  # no stack released yet, and nothing of another host's


@pytest.mark.parametrize("name", HOSTS)
def test_base_image_is_in_every_daemon(name, root):
    want = root.check_output(f"docker image inspect --format '{{{{.Id}}}}' {BASE_IMAGE}")
    assert docker(name, "image", "inspect", "--format", "{{.Id}}", BASE_IMAGE) == (0, want)


def test_one_url_per_lb_host(env):
    for variable, port in (("PIGEON_PRODUCTION_URLS", 8443), ("PIGEON_PREVIEW_URLS", 4443)):
        assert env[variable].split() == [f"https://{address(h)}:{port}/" for h in LBS]


@pytest.mark.parametrize("variable", ["PIGEON_PRODUCTION_URLS", "PIGEON_PREVIEW_URLS"])
def test_haproxy_answers_no_stack_on_every_url(env, get, variable):
    """From the root namespace, TLS verified with the lab's CA (the certificate names the
    LB's address): 503 before any release."""
    for url in env[variable].split():
        assert get(url) == (503, "503 no stack serves this address yet"), url


def test_hosts_reach_each_other_through_the_switch(env):
    app1 = in_host("app1")
    for url in env["PIGEON_PRODUCTION_URLS"].split():
        out = app1.check_output(f"curl -s --max-time 5 --cacert {LAB}/tls/ca.crt {url}")
        assert out == "503 no stack serves this address yet"


@pytest.mark.parametrize("name", HOSTS)
def test_a_host_cannot_reach_outside_the_lab(name, root):
    host = in_host(name)
    # no route out: only the lab's /24 and the host's own docker bridge
    route = host.run(f"ip route get {OUTSIDE}")
    assert route.rc != 0 and "no route to host" in route.stderr.lower(), route
    default = root.check_output("ip route show default").split()  # this machine's way out
    if "via" in default:
        gateway = default[default.index("via") + 1]
        assert host.run(f"ip route get {gateway}").rc != 0
    # a connection fails at once, in the host and in a container on it: nothing leaves
    assert host.run(f"curl -s --max-time 3 http://{OUTSIDE}/").rc == 7
    if name in APPS:
        rc, _ = docker(name, "run", "--rm", BASE_IMAGE, "curl", "-s", "--max-time", "3", f"http://{OUTSIDE}/")
        assert rc == 7
