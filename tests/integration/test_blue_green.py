"""
The blue/green flow through stacks.py against the lab, checked by HTTP at every
step (issue 2's acceptance): release A, activate A, release B, activate B,
deactivate A. The tests of this module run in order and share the app's state.
"""

import subprocess

import pytest

from conftest import APP, PREVIEW, PRODUCTION, app_status, new_version, office_get, reset_app

A = new_version("blue")
B = new_version("green.2")  # dots are fine in a tag


def containers(version, *filters):
    args = ["docker", "ps", "-a", "--filter", f"label=pigeon.app={APP}",
            "--filter", f"label=pigeon.version={version}", "--format", "{{.Names}} {{.State}}"]
    for f in filters:
        args += ["--filter", f]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return sorted(out.split("\n")[:-1]) if out else []


def answers(get, url, n=12):
    """The distinct bodies of n requests (replicas answer in turn)."""
    return {get(url)[1] for _ in range(n)}


def test_start_from_no_stack(stacks, get):
    reset_app(stacks)
    assert get(PRODUCTION)[0] == 503
    assert "no stack" in get(PRODUCTION)[1]


def test_release_a_serves_preview_only(stacks, get):
    result = stacks("release", "--app-name", APP, "--version", A)
    assert result.rc == 0, result
    assert f"Finished release {APP} {A} in" in result.out
    status, body = get(PREVIEW)
    assert status == 200 and body.startswith(f"{APP} {A} web "), body
    assert get(PRODUCTION)[0] == 503


def test_release_runs_count_2_of_two_services(stacks, get):
    # task_definitions: count 2, services web (register_backend=true) and api
    names = containers(A)
    assert names == sorted(f"{APP}-{A}-{s}-{n} running" for s in ("api", "web") for n in (1, 2)), names
    # both web replicas serve
    webs = {body.split()[-1] for body in answers(get, PREVIEW)}
    assert len(webs) == 2, webs
    # web reaches its companion by service name, on the stack's own network
    status, body = get(PREVIEW, "/api/")
    assert status == 200 and body.startswith(f"{APP} {A} api "), body
    # only the registered service is load-balanced: the api never answers /
    assert all(" web " in body for body in answers(get, PREVIEW))


def test_activate_a_serves_production(stacks, get):
    result = stacks("activate", "--app-name", APP, "--version", A)
    assert result.rc == 0, result
    status, body = get(PRODUCTION)
    assert status == 200 and body.startswith(f"{APP} {A} web "), body
    assert get(PREVIEW)[1].startswith(f"{APP} {A} ")  # no release: internal reaches active


def test_release_b_preview_b_production_a(stacks, get):
    result = stacks("release", "--app-name", APP, "--version", B)
    assert result.rc == 0, result
    assert answers(get, PREVIEW) and all(b.startswith(f"{APP} {B} web ") for b in answers(get, PREVIEW))
    assert all(b.startswith(f"{APP} {A} web ") for b in answers(get, PRODUCTION))
    # the api of B answers B's web: versions are isolated from each other
    assert get(PREVIEW, "/api/")[1].startswith(f"{APP} {B} api ")
    assert get(PRODUCTION, "/api/")[1].startswith(f"{APP} {A} api ")


def test_internal_networks_reach_the_release(stacks):
    # a client in internal_networks (the lab's office network) gets B on the production port
    assert office_get().startswith(f"{APP} {B} web ")


def test_status_shows_both_stacks(stacks):
    st = app_status(stacks)
    assert {v: s["state"] for v, s in st["stacks"].items()} == {A: "active", B: "release"}


def test_activate_b_keeps_a_inactive(stacks, get):
    result = stacks("activate", "--app-name", APP, "--version", B)
    assert result.rc == 0, result
    assert all(b.startswith(f"{APP} {B} web ") for b in answers(get, PRODUCTION))
    assert all(b.startswith(f"{APP} {B} web ") for b in answers(get, PREVIEW))
    # A is inactive: its containers present and running, no traffic
    assert len(containers(A, "status=running")) == 4
    st = app_status(stacks)
    assert {v: s["state"] for v, s in st["stacks"].items()} == {A: "inactive", B: "active"}


def test_deactivate_a_removes_it(stacks, get):
    result = stacks("deactivate", "--app-name", APP, "--version", A)
    assert result.rc == 0, result
    assert containers(A) == []
    assert all(b.startswith(f"{APP} {B} web ") for b in answers(get, PRODUCTION))
    networks = subprocess.run(["docker", "network", "ls", "--format", "{{.Name}}"],
                              capture_output=True, text=True, check=True).stdout.split()
    assert f"pigeon-{APP}-{A}" not in networks
    assert f"pigeon-{APP}-{B}" in networks


def test_repeating_an_action_changes_nothing(stacks, get):
    result = stacks("activate", "--app-name", APP, "--version", B)
    assert result.rc == 0, result
    assert "already active" in result.out
    result = stacks("deactivate", "--app-name", APP, "--version", A)
    assert result.rc == 0, result
    assert "not deployed" in result.out
    assert get(PRODUCTION)[1].startswith(f"{APP} {B} ")
