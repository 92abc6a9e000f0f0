"""
`make down` leaves nothing of the multi-host lab: no namespace, interface, dockerd,
containerd or salt daemon of it. It takes the lab down, so it runs last and only when asked
(make test sets PIGEON_MULTIHOST_DOWN=1).
"""

import os
import subprocess
import time

import pytest

from conftest import LAB, REPO

pytestmark = [
    pytest.mark.last,
    pytest.mark.skipif(os.environ.get("PIGEON_MULTIHOST_DOWN") != "1",
                       reason="takes the lab down: set PIGEON_MULTIHOST_DOWN=1 (make test does)"),
]


def test_lab_down_leaves_nothing(root):
    t0 = time.monotonic()
    proc = subprocess.run([str(REPO / "bootstrap/lab.sh"), "down"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    print(f"lab down in {time.monotonic() - t0:.1f} s")
    assert not [ns for ns in root.run("ip netns list").stdout.split() if ns.startswith("pigeon-")]
    assert "pigeon-" not in root.run("ip -o link show").stdout
    for pattern in (f"--data-root {LAB}/hosts/", "/run/pigeon-lab/", f"salt-minion -c {LAB}/hosts/",
                    f"-c {LAB}/etc/salt"):
        found = root.run(f"pgrep -f -- '[{pattern[0]}]{pattern[1:]}'")
        assert found.rc == 1 and found.stdout == "", (pattern, found)  # 1: none; 2 would be a bad pattern
    assert not root.file("/run/pigeon-lab").exists
    assert root.run("find /sys/fs/cgroup -maxdepth 2 -name 'pigeon-*'").stdout == ""  # --cgroup-parent
    assert not [p for p in root.file("/etc/netns").listdir() if p.startswith("pigeon-")] \
        if root.file("/etc/netns").exists else True
