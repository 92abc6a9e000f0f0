"""
The lab's minion as testinfra sees it: the salt daemons, the docker engine, the
HAProxy container with its listeners and admin socket, the app's containers
with their labels and networks.
"""

import json

from conftest import LAB, APP, app_status, new_version


def test_salt_daemons_run(host):
    for name in ("salt-master", "salt-minion", "salt-api"):
        pid = int((LAB / f"var/run/{name}.pid").read_text())
        assert host.run(f"kill -0 {pid}").rc == 0, name


def test_salt_api_listens_with_tls(host):
    assert host.socket("tcp://127.0.0.1:8000").is_listening
    out = host.check_output(f"curl -s --cacert {LAB}/tls/ca.crt https://localhost:8000/")
    assert "return" in out


def test_docker_engine_runs(host):
    assert host.socket("unix:///var/run/docker.sock").is_listening
    assert host.run("docker info --format '{{.ServerVersion}}'").rc == 0


def test_haproxy_container_runs_with_listeners(host):
    state = json.loads(host.check_output("docker inspect pigeon-haproxy"))[0]
    assert state["State"]["Running"]
    assert state["Config"]["Labels"]["pigeon.role"] == "haproxy"
    assert state["Config"]["StopSignal"] == "SIGUSR1"  # a graceful stop
    assert set(state["NetworkSettings"]["Networks"]) >= {"pigeon", "pigeon-office"}
    for port in (8443, 4443):
        assert host.socket(f"tcp://0.0.0.0:{port}").is_listening
    # master-worker as PID 1, the admin socket in the bind-mounted folder
    assert "-W" in state["Config"]["Cmd"] or "-W" in " ".join(state["Config"]["Cmd"])
    assert host.file("/srv/pigeon/haproxy/run/admin.sock").is_socket
    assert host.file("/srv/pigeon/haproxy/etc/haproxy.cfg").contains("managed by Salt")
    assert host.file("/srv/pigeon/haproxy/etc/maps/routes.map").exists


def test_haproxy_has_a_backend_per_slot(host):
    # asked through the minion's haproxy_runtime module, over the admin socket
    out = json.loads(host.check_output(
        f"{LAB}/venv/bin/salt -c {LAB}/etc/salt lab-minion haproxy_runtime.backends --out=json"))
    out = out["lab-minion"]
    for slot in "abc":
        assert f"{APP}_{slot}" in out
    assert "pigeon_no_stack" in out


def test_app_containers_carry_their_labels(host, stacks):
    st = app_status(stacks)
    if not st["stacks"]:
        version = new_version("lab")
        assert stacks("release", "--app-name", APP, "--version", version).rc == 0
        st = app_status(stacks)
    version, stack = next(iter(st["stacks"].items()))
    names = host.check_output(
        f"docker ps --filter label=pigeon.app={APP} --filter label=pigeon.version={version} "
        "--format '{{.Names}}'").split()
    assert len(names) == 4
    for name in names:
        info = json.loads(host.check_output(f"docker inspect {name}"))[0]
        labels = info["Config"]["Labels"]
        assert labels["pigeon.managed"] == "true"
        assert labels["pigeon.slot"] == stack["slot"]
        networks = info["NetworkSettings"]["Networks"]
        assert f"pigeon-{APP}-{version}" in networks
        if labels["pigeon.service"] == "web":
            assert labels["register_backend"] == "true"
            assert f"pigeon-{APP}-{stack['slot']}" in networks["pigeon"]["Aliases"]
        else:  # the companion is not on HAProxy's network
            assert "pigeon" not in networks
        # the image's check at Pigeon's steady interval (config:health_interval, 30 s by
        # default); docker says "starting" until the first one, the release's gate checked it
        check = info["Config"]["Healthcheck"]
        assert check["Test"][0] == "CMD-SHELL" and "healthz" in check["Test"][1], check
        assert check["Interval"] == 30 * 10**9, check
        assert info["State"]["Health"]["Status"] in ("healthy", "starting")
