"""
The shell examples of README.md and docs/*.md that are meant to run against the lab
(fenced as ```sh lab) run as written: each block in bash, from the repository, with the
lab's settings (.lab/env), stopping at the first command that fails. A doc that drifts
from the code fails here.
"""

import re
import subprocess

import pytest

from conftest import APP, REPO, reset_app

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```sh lab\n(.*?)^```", re.S | re.M)


def blocks():
    found = []
    for doc in DOCS:
        for n, match in enumerate(BLOCK.finditer(doc.read_text(encoding="utf-8"))):
            found.append(pytest.param(match.group(1), id=f"{doc.relative_to(REPO)}#{n + 1}"))
    return found


def test_there_are_examples_to_run():
    assert len(blocks()) >= 2  # README's and docs/cli.md's, at least


@pytest.mark.parametrize("block", blocks())
def test_a_documented_example_runs_as_written(block, stacks):
    reset_app(stacks)
    try:
        script = "set -euo pipefail\ncd " + str(REPO) + "\n. .lab/env\nset -x\n" + block
        proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
        assert "Traceback" not in proc.stdout + proc.stderr
    finally:
        reset_app(stacks, APP)
