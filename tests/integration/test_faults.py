"""
Faults leave nothing broken (issue "Trust", point 7), against the lab: a replica
of the active stack crashing, HAProxy's container restarting, the docker daemon
restarting, and the minion, the master or salt-api dying in the middle of a
release (the main process alone, or its whole process tree).

Each test counts the failed production requests of a client running through
the fault, lets `make lab` (bootstrap/lab.sh up) recover what needs
recovering, then checks that no lock is held, that `status` tells the truth
(every stack it lists has all its containers healthy; containers it does not
list are shown as drift) and that the next action works. The counts are
printed (run with -s to see them); production must not lose a request to a
fault of Salt's daemons, which HAProxy and the containers do not depend on.
"""

import os
import pathlib
import signal
import subprocess
import time

import pytest

from conftest import APP, LAB, PRODUCTION, REPO, Load, app_status, new_version, reset_app, wait_for

CONF = LAB / "etc/salt"
TEST_PILLAR = LAB / "pillar" / "test_stacks.sls"
REPLICAS = 4  # the lab's pillar: count 2 of two services


def lab_up():
    """`make lab`: what a person does after a fault."""
    proc = subprocess.run(["bash", str(REPO / "bootstrap/lab.sh"), "up"], cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def daemon_pids(name):
    """Every process of the lab's salt daemon NAME (salt-master, salt-api, salt-minion)."""
    out = subprocess.run(["pgrep", "-f", f"{name} -c {CONF}( |$)"], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def main_pid(name):
    return int((LAB / "var/run" / f"{name}.pid").read_text())


def kill(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def docker(*args):
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)


def containers(version):
    return docker("ps", "-aq", "--filter", f"label=pigeon.version={version}").stdout.split()


def production_answers(get, version):
    try:
        status, body = get(PRODUCTION)
    except Exception:  # pylint: disable=broad-except
        return False
    return status == 200 and body.split()[1] == version


def truthful(stacks):
    """Status once every stack it lists runs all its containers healthy and no lock is held
    (None until then): what status says is what runs."""
    st = app_status(stacks)
    if st["lock"] is not None:
        return None
    for version in st["stacks"]:
        seen = st["observed"]["containers"].get(version, {})
        # healthy in docker's own checks (every 2 s here: the fixture `active`), not "starting"
        if seen.get("healthy") != REPLICAS or seen.get("total") != REPLICAS:
            return None
    return st


def next_action_works(stacks, get, active):
    """A release and its deactivation go through; production stays on the active stack."""
    version = new_version("after-fault")
    result = stacks("release", "--app-name", APP, "--version", version)
    assert result.rc == 0, result
    assert len(containers(version)) == REPLICAS
    st = app_status(stacks)
    assert st["stacks"][version]["state"] == "release" and st["lock"] is None
    assert st["observed"]["drift"] == [], st["observed"]
    result = stacks("deactivate", "--app-name", APP, "--version", version)
    assert result.rc == 0, result
    assert production_answers(get, active)


@pytest.fixture(scope="module")
def active(stacks):
    """One active stack and nothing else; its version. Every test leaves it active. Docker
    checks its containers every 2 s (config:health_interval, 30 by default), so that `status`
    can wait for docker's own word after a fault, not the gate's."""
    TEST_PILLAR.write_text(f"stacks:\n  {APP}:\n    config:\n      health_interval: 2\n")
    try:
        reset_app(stacks)
        version = new_version("fault")
        for action in ("release", "activate"):
            result = stacks(action, "--app-name", APP, "--version", version)
            assert result.rc == 0, result
        yield version
    finally:
        TEST_PILLAR.unlink(missing_ok=True)


def report(fault, load, **more):
    extra = "".join(f", {key} {value}" for key, value in more.items())
    print(f"\nfault: {fault}: {sum(load.versions.values())} production requests answered, "
          f"{len(load.failures)} failed (over {load.outage} s){extra}")


# ---------------------------------------------------------------------------
# the data path: a replica, HAProxy, the docker daemon

def test_a_replica_of_the_active_stack_crashing(stacks, get, ca, active):
    web1 = f"{APP}-{active}-web-1"
    pid = docker("inspect", "-f", "{{.State.Pid}}", web1).stdout.strip()
    with Load(ca) as load:
        time.sleep(0.5)
        os.kill(int(pid), signal.SIGKILL)  # the app's process dies, as in a crash
        # docker restarts it (restart policy unless-stopped); status says so when it is healthy
        st = wait_for(lambda: truthful(stacks), timeout=60, interval=0.5)
        time.sleep(0.5)
    report("a replica of the active stack killed", load)
    assert st, app_status(stacks)
    assert st["observed"]["drift"] == []
    assert int(docker("inspect", "-f", "{{.RestartCount}}", web1).stdout) >= 1
    assert set(load.versions) == {active}
    # HAProxy's checks take the dead server out: whatever failed, failed around the crash
    assert load.versions[active] > 10 * max(1, len(load.failures))
    next_action_works(stacks, get, active)


def test_haproxy_container_restarting(stacks, get, ca, active):
    routes = app_status(stacks)["routes"]
    with Load(ca) as load:
        time.sleep(0.5)
        assert docker("restart", "pigeon-haproxy").returncode == 0
        assert wait_for(lambda: production_answers(get, active), timeout=30, interval=0.2)
        time.sleep(0.5)
    report("HAProxy's container restarted", load)
    # the routes are kept (the map file is on the host), and so are the servers (state file)
    st = wait_for(lambda: truthful(stacks), timeout=30)
    assert st and st["routes"] == routes and st["observed"]["drift"] == [], app_status(stacks)
    assert set(load.versions) == {active}
    next_action_works(stacks, get, active)


def test_docker_daemon_restarting(stacks, get, ca, active):
    pid = int(pathlib.Path("/var/run/docker.pid").read_text())
    with Load(ca) as load:
        time.sleep(0.5)
        os.kill(pid, signal.SIGTERM)  # the daemon stops its containers and exits
        assert wait_for(lambda: not os.path.exists(f"/proc/{pid}"), timeout=120, interval=0.5)
        lab_up()  # starts the daemon again; restart policies bring HAProxy and the stacks back
        assert wait_for(lambda: production_answers(get, active), timeout=60, interval=0.5)
        time.sleep(0.5)
    report("the docker daemon restarted", load)
    st = wait_for(lambda: truthful(stacks), timeout=60, interval=0.5)
    assert st and st["observed"]["drift"] == [], app_status(stacks)
    assert list(st["stacks"]) == [active] and st["stacks"][active]["state"] == "active"
    next_action_works(stacks, get, active)


# ---------------------------------------------------------------------------
# Salt's daemons dying in the middle of a release

def release_in_background(env, version):
    return subprocess.Popen([str(LAB / "venv/bin/python"), str(REPO / "stacks.py"), "release",
                             "--app-name", APP, "--version", version],
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def interrupted_release(stacks, get, ca, env, active, victims, fault):
    """Start a release, kill `victims()` once its first container runs, recover with
    `make lab`; production serves throughout, and nothing stays broken."""
    doomed = new_version("interrupted")
    with Load(ca) as load:
        cli = release_in_background(env, doomed)
        assert wait_for(lambda: containers(doomed), timeout=90, interval=0.05), cli.communicate()
        kill(victims())
        try:
            out, err = cli.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            cli.kill()
            out, err = cli.communicate()
            pytest.fail(f"the CLI did not end after {fault}: {out} {err}")
        lab_up()
        st = wait_for(lambda: truthful(stacks), timeout=90, interval=1)
    report(fault, load, cli_exit=cli.returncode, cli_said=repr((err.strip() or out.strip()[-120:])[:200]))
    # the CLI ended with a result or one line, never a traceback
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 1, err
    assert st, app_status(stacks)
    # production never noticed: HAProxy and the containers do not depend on Salt's daemons
    assert load.failures == [] and set(load.versions) == {active}
    assert st["stacks"][active]["state"] == "active"
    if doomed in st["stacks"]:  # the release got through after all: then the CLI said so
        assert st["stacks"][doomed]["state"] == "release"
        if cli.returncode == 0:
            assert "Finished release" in out
        assert stacks("deactivate", "--app-name", APP, "--version", doomed).rc == 0
    elif containers(doomed):  # what it left is shown, and the next release removes it
        assert any(doomed in line for line in st["observed"]["drift"]), st["observed"]
        assert cli.returncode != 0
    history = stacks("history", "--app-name", APP, "--json", "--limit", "5")
    assert history.rc == 0, history
    next_action_works(stacks, get, active)
    assert containers(doomed) == [] or doomed in app_status(stacks)["stacks"]


@pytest.mark.parametrize("which", ["main", "tree"])
def test_minion_dying_mid_release(stacks, get, ca, env, active, which):
    victims = (lambda: [main_pid("salt-minion")]) if which == "main" else (lambda: daemon_pids("salt-minion"))
    interrupted_release(stacks, get, ca, env, active, victims, f"salt-minion killed ({which})")


@pytest.mark.parametrize("which", ["main", "tree"])
def test_master_dying_mid_release(stacks, get, ca, env, active, which):
    victims = (lambda: [main_pid("salt-master")]) if which == "main" else (lambda: daemon_pids("salt-master"))
    interrupted_release(stacks, get, ca, env, active, victims, f"salt-master killed ({which})")


@pytest.mark.parametrize("which", ["main", "tree"])
def test_salt_api_dying_mid_release(stacks, get, ca, env, active, which):
    victims = (lambda: [main_pid("salt-api")]) if which == "main" else (lambda: daemon_pids("salt-api"))
    interrupted_release(stacks, get, ca, env, active, victims, f"salt-api killed ({which})")


def test_make_down_leaves_no_process_of_the_lab(stacks):
    """`make down` ends every process of the lab's salt configuration (salt-api's workers
    that ignore SIGTERM included); `make lab` brings it all back."""
    reset_app(stacks)
    proc = subprocess.run(["bash", str(REPO / "bootstrap/lab.sh"), "down"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    left = subprocess.run(["pgrep", "-af", f"-c {CONF}( |$)"], capture_output=True, text=True).stdout
    assert left == "", left
    lab_up()
    assert app_status(stacks)["stacks"] == {}
