"""
bootstrap/hosts.sh's door: host names from a fixed pattern only, refused in one line before
anything is made; and the addresses that follow from a name. No namespace is created here.
"""

import pathlib
import subprocess

import pytest

HOSTS_SH = pathlib.Path(__file__).resolve().parents[2] / "bootstrap" / "hosts.sh"


def run(*args):
    return subprocess.run([str(HOSTS_SH), *args], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("verb", ["up", "down", "status", "address"])
@pytest.mark.parametrize("name", ["lb10", "app", "db1", "LB1", "lb1;reboot", "../lb1", "lb1 ", "-h",
                                  "app1$(id)", "", "lb-1", "app1\nlb2"])
def test_names_outside_the_pattern_are_refused_in_one_line(verb, name):
    result = run(verb, name)
    assert result.returncode != 0
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("hosts.sh: not a host name: ")


def test_addresses_follow_from_the_name():
    result = run("address", "uplink", "lb0", "lb1", "lb9", "app1", "app9")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["10.231.0.1", "10.231.0.10", "10.231.0.11", "10.231.0.19",
                                     "10.231.0.21", "10.231.0.29"]


def test_an_unknown_verb_shows_the_usage():
    result = run("destroy")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: bootstrap/hosts.sh up|down|status")
