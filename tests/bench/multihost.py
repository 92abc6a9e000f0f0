#!/usr/bin/env python3
"""
Pigeon's multi-host benchmark (make bench, on the multi-host lab): how a release and an
activate scale with the hosts they reach.

The app `app` is deployed with two placements, one after the other, on the same lab:

    one     config:target app1 (one app host),  loadbal:target lb1 (one load balancer)
    three   config:target ^app[0-9]$ (app1-3), loadbal:target ^lb[0-9]$ (lb1, lb2)

with the same count on each app host. Each round releases a new version (its image built
on every app host beforehand, as bench.py does: the target is for images present), activates
it, and removes the stack it replaced (untimed), so that an activate is only the switch. A
round before the timed ones lets the load balancers converge to the placement. It prints the
CLI's duration of each release and activate (median, max) for both, and the ratios.

    .lab/venv/bin/python tests/bench/multihost.py [--rounds 5] [--json FILE]
"""

import argparse
import json
import pathlib
import platform
import statistics
import subprocess
import sys
import time
import uuid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench  # noqa: E402  pylint: disable=wrong-import-position
from bench import APP, REPO, lab_env, status  # noqa: E402  pylint: disable=wrong-import-position

PILLAR = REPO / ".lab/pillar/test_stacks.sls"  # the pillar top reads it last (srv/pillar/top.sls)
PLACEMENTS = {
    "one": {"config": "app1", "loadbal": "lb1", "app_hosts": 1, "load_balancers": 1},
    "three": {"config": "^app[0-9]$", "loadbal": "^lb[0-9]$", "app_hosts": 3, "load_balancers": 2},
}


def salt(*args):
    proc = subprocess.run([str(REPO / ".lab/venv/bin/salt"), "-c", str(REPO / ".lab/etc/salt"), *args,
                           "--out=txt"], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench: salt {' '.join(args[:2])} failed: {(proc.stderr or proc.stdout).strip()[-300:]}")


def stacks(env, *args):
    """stacks.py for the app (bench.stacks: it exits when one fails): its duration, seconds."""
    started, ended = bench.stacks(env, *args)
    return round(ended - started, 3)


def place(name):
    """The app's targets for a placement, in the pillar the lab's top reads last."""
    where = PLACEMENTS[name]
    PILLAR.write_text(
        "# written by tests/bench/multihost.py while it runs\n"
        f"stacks:\n  {APP}:\n"
        f"    loadbal:\n      target: {json.dumps(where['loadbal'])}\n      target_type: pcre\n"
        f"    config:\n      target: {json.dumps(where['config'])}\n      target_type: pcre\n")


def build(version):
    pillar = json.dumps({"pigeon_stack": {"app": APP, "version": version}})
    salt("-E", "^app[0-9]$", "state.sls", "demoapp", f"pillar={pillar}")


def clear(env):
    for version in status(env):
        stacks(env, "deactivate", "--version", version, "--force")


def round_of(env):
    """One round: release, activate (timed), the replaced stack removed (untimed)."""
    version = f"mh-{uuid.uuid4().hex[:8]}"
    build(version)
    before = [v for v, s in status(env).items() if s["state"] == "active"]
    release = stacks(env, "release", "--version", version)
    activate = stacks(env, "activate", "--version", version)
    for old in before:
        stacks(env, "deactivate", "--version", old)
    return release, activate


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    env = lab_env()
    if env.get("PIGEON_TOPOLOGY") != "multi":
        sys.exit("bench: the multi-host lab is not up: make lab TOPOLOGY=multi")
    figures = {}
    try:
        for name in PLACEMENTS:
            clear(env)
            place(name)
            round_of(env)  # the load balancers converge to this placement: not timed
            rows = [round_of(env) for _ in range(args.rounds)]
            figures[name] = dict(PLACEMENTS[name], release=[r for r, _ in rows], activate=[a for _, a in rows])
    finally:
        clear(env)
        PILLAR.unlink(missing_ok=True)
    print(f"multi-host bench: {args.rounds} rounds each, CLI duration in seconds (median, max)")
    for name, f in figures.items():
        print(f"  {f['app_hosts']} app host(s), {f['load_balancers']} LB(s): release "
              f"{statistics.median(f['release']):.2f} ({max(f['release']):.2f}), activate "
              f"{statistics.median(f['activate']):.2f} ({max(f['activate']):.2f})")
    ratios = {action: round(statistics.median(figures["three"][action]) / statistics.median(figures["one"][action]), 2)
              for action in ("release", "activate")}
    print(f"  three app hosts against one: release x{ratios['release']} (target <= 1.5); "
          f"two LBs against one: activate x{ratios['activate']} (target <= 1.3)")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": platform.node(),
            "rounds": args.rounds, "placements": figures, "ratios": ratios}, indent=2) + "\n")


if __name__ == "__main__":
    main()
