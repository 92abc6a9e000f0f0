"""
One host down and up again on a running lab (bootstrap/hosts.sh down|up NAME): the others
go on, and it comes back with its minion, its daemon (the same ID) and the base image.
"""

import subprocess

from conftest import BASE_IMAGE, HOSTS_SH, LAB, address, docker, salt, wait_for

NAME = "app3"


def hosts_sh(*args):
    return subprocess.run([str(HOSTS_SH), *args], capture_output=True, text=True, timeout=300)


def lab_processes(root, pattern):
    """pids whose command line has pattern (its first character in brackets: not the shell's)"""
    found = root.run(f"pgrep -f -- '[{pattern[0]}]{pattern[1:]}'")
    assert found.rc in (0, 1), found  # 2: a bad pattern, which would find nothing and prove nothing
    return found.stdout.split()


def test_down_then_up_of_one_host_brings_it_back(root, env, get):
    daemon_id = docker(NAME, "info", "--format", "{{.ID}}")[1]

    down = hosts_sh("down", NAME)
    assert down.returncode == 0, down.stderr
    assert not root.file(f"/run/netns/pigeon-{NAME}").exists
    assert docker(NAME, "info")[0] != 0
    assert not lab_processes(root, f"salt-minion -c {LAB}/hosts/{NAME}/etc/salt")
    assert not lab_processes(root, f"--data-root {LAB}/hosts/{NAME}/docker")
    # the others go on: the switch stays, the load balancers answer
    assert salt("app1", "test.ping") == {"app1": True}
    for url in env["PIGEON_PRODUCTION_URLS"].split():
        assert get(url)[0] == 503

    up = hosts_sh("up", NAME)
    assert up.returncode == 0, up.stderr
    assert wait_for(lambda: salt(NAME, "test.ping", "--timeout", "5") == {NAME: True}, timeout=90)
    assert address(NAME) in salt(NAME, "network.ip_addrs")[NAME]
    assert docker(NAME, "info", "--format", "{{.ID}}") == (0, daemon_id)
    assert docker(NAME, "image", "inspect", BASE_IMAGE)[0] == 0
    # its states apply, and the docker formula starts no second daemon on it
    states = salt(NAME, "state.apply", timeout=300)[NAME]
    assert states and all(state["result"] for state in states.values()), states
    assert len(lab_processes(root, f"--data-root {LAB}/hosts/{NAME}/docker")) == 1
