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
    parts = re.split(r'^\s*config\.vm\.define\s+"([^"]+)"', text, flags=re.M)
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
    machines = _machines()
    assert {"master", "debian-minion"} <= set(machines)
    for name in ("master", "debian-minion"):
        assert "bootstrap/install.sh" in machines[name], name
    assert "bootstrap/master.sh" in machines["master"]
    assert re.search(r"bootstrap/minion\.sh \S+ debian-minion ", machines["debian-minion"])
    assert 'box = "debian/bookworm64"' in VAGRANTFILE.read_text(encoding="utf-8")


def test_forwarded_ports_reach_haproxy_and_salt_api():
    # host 4443 is the "office view" (preview); the guest side is the port HAProxy
    # publishes for it, the frontend's preview_port in the haproxy pillar
    frontend = yaml.safe_load((REPO / "srv/pillar/haproxy.sls").read_text())["haproxy"]["frontends"]["www"]
    machines = _machines()
    minion = _forwards(machines["debian-minion"])
    assert minion[4443] == frontend["preview_port"]
    assert minion[8443] == frontend["port"]
    assert _forwards(machines["master"])[8000] == 8000
