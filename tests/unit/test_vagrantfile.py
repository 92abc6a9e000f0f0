"""
The Vagrantfile: `vagrant validate` accepts it, and it builds the VMs the docs
describe with the lab's bootstrap scripts. No VM is started.
"""

import os
import pathlib
import re
import shutil
import subprocess

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
VAGRANTFILE = REPO / "Vagrantfile"


def _machines():
    """{name: text of its `config.vm.define` block} (a block runs to the next define)."""
    text = VAGRANTFILE.read_text(encoding="utf-8")
    parts = re.split(r'^\s*config\.vm\.define\s+"?([^",\s]+)"?[^\n]*\sdo\b', text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def _forwards(block):
    """{host port: guest port} of the block's forwarded_port lines."""
    found = {}
    for line in block.splitlines():
        if "forwarded_port" in line:
            guest = re.search(r"guest:\s*(\d+)", line)
            host = re.search(r"host:\s*(\d+)", line)
            found[int(host.group(1))] = int(guest.group(1))
    return found


def test_vagrant_validate(tmp_path):
    assert shutil.which("vagrant"), "vagrant is not installed: `make test` installs it (apt-get install vagrant)"
    # --ignore-provider: plain validate also asks the default provider (VirtualBox,
    # libvirt) whether it is usable, and none needs to be installed to check the file.
    # VAGRANT_DOTFILE_PATH keeps validate from leaving .vagrant/ in the repo.
    env = dict(os.environ, VAGRANT_DOTFILE_PATH=str(tmp_path / "dotfile"), VAGRANT_CHECKPOINT_DISABLE="1")
    proc = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_machines_and_bootstrap():
    """The multi-host topology: a master, a load balancer, two app minions, each made by the
    lab's bootstrap scripts; the master writes the topology's pillar as bootstrap/lab.sh does."""
    machines = _machines()
    text = VAGRANTFILE.read_text(encoding="utf-8")
    assert set(machines) == {"master", "id"}  # the minions are defined in a loop over MINIONS
    minions = dict(re.findall(r'"((?:lb|app)\d)" => \["#\{NETWORK\}\.(\d+)"', text))
    assert minions == {"lb1": "11", "app1": "21", "app2": "22"}
    assert "bootstrap/install.sh --no-images" in machines["master"] and "bootstrap/master.sh" in machines["master"]
    assert re.search(r"bootstrap/topology\.sh \S+/pillar/topology\.sls #\{NETWORK\}\.0/24", machines["master"])
    assert "bootstrap/install.sh" in machines["id"]
    assert "bootstrap/minion.sh #{ROOT} #{id} #{MASTER_IP}" in machines["id"]
    assert 'box = "debian/bookworm64"' in text
    # the pillar gives the minions their roles by these names
    top = yaml.safe_load((REPO / "srv/pillar/top.sls").read_text())["base"]
    assert "haproxy" in top["^lb[0-9]$"] and "demoapp" in top["^app[0-9]$"]


def test_forwarded_ports_reach_haproxy_and_salt_api():
    # host 4443 is the "office view" (preview); the guest side is the port HAProxy
    # publishes for it, the frontend's preview_port in the haproxy pillar
    frontend = yaml.safe_load((REPO / "srv/pillar/haproxy.sls").read_text())["haproxy"]["frontends"]["www"]
    machines = _machines()
    minion = _forwards(machines["id"])
    assert 'if id.start_with?("lb")' in machines["id"]  # only the load balancers forward them
    assert minion[4443] == frontend["preview_port"]
    assert minion[8443] == frontend["port"]
    assert _forwards(machines["master"])[8000] == 8000
