#!/usr/bin/env python3
"""
What running stacks cost while nothing happens (make bench): the machine's CPU, from
/proc/stat, with the lab idle and no stack of `app`, then with two stacks of its four
containers each (release, activate, release), each over --seconds after --settle seconds.
Per container: the difference divided by the containers docker runs for the app. Two
figures: the whole machine's, and the default docker engine's (dockerd, containerd, the
shims and everything under them): the second is not disturbed by other work on the machine.

    .lab/venv/bin/python tests/bench/idle.py [--seconds 60] [--health-interval N] [--json FILE]

--health-interval N runs the stacks with stacks:app:config:health_interval N (written to the
lab's test pillar for the run, then removed): 1 is docker's interval as Pigeon had it.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time
import uuid

from bench import APP, REPO, build_image, lab_env, stacks, status

TEST_PILLAR = REPO / ".lab/pillar/test_stacks.sls"


def busy_jiffies():
    """(busy, total) jiffies of all cores since boot, from the first line of /proc/stat."""
    fields = [int(x) for x in pathlib.Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def engine_jiffies():
    """CPU jiffies of the default docker engine: dockerd, its containerd, the shims of its
    containers and everything under them (health check execs, HAProxy, the apps), with what
    they reaped. Other daemons on the machine (a multi-host lab's) are left out."""
    procs = {}
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        procs[int(entry.name)] = (int(fields[1]), sum(int(x) for x in fields[11:15]), cmdline)
    dockerd = int(pathlib.Path("/var/run/docker.pid").read_text())
    roots = {dockerd} | {pid for pid, (_, _, cmd) in procs.items()
                         if "containerd-shim" in cmd and "/var/run/docker/containerd/containerd.sock" in cmd}
    total = 0
    for pid, (_, jiffies, _) in procs.items():
        seen, cur = set(), pid
        while cur not in roots and cur in procs and cur not in seen and cur > 1:
            seen.add(cur)
            cur = procs[cur][0]
        if cur in roots:
            total += jiffies
    return total


def cores_used(seconds):
    """Cores busy on average over the next `seconds` (0.5 = half a core): (the machine, the
    default docker engine and its containers)."""
    busy0, engine0 = busy_jiffies()[0], engine_jiffies()
    time.sleep(seconds)
    busy1, engine1 = busy_jiffies()[0], engine_jiffies()
    tick = os.sysconf("SC_CLK_TCK") * seconds
    return (busy1 - busy0) / tick, (engine1 - engine0) / tick


def app_containers():
    out = subprocess.run(["docker", "ps", "-q", "--filter", f"label=pigeon.app={APP}"],
                         capture_output=True, text=True, check=True).stdout
    return len(out.split())


def reset(env):
    for version in status(env):
        stacks(env, "deactivate", "--version", version, "--force")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each measurement")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds to wait before measuring")
    parser.add_argument("--health-interval", type=int, default=None,
                        help="stacks:app:config:health_interval for this run (default: the pillar's)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    env = lab_env()
    if TEST_PILLAR.exists():
        sys.exit(f"idle: {TEST_PILLAR} exists (a test run?); remove it or wait for it to end")
    if args.health_interval is not None:
        TEST_PILLAR.write_text(f"stacks:\n  {APP}:\n    config:\n      health_interval: {args.health_interval}\n")
    try:
        reset(env)
        time.sleep(args.settle)
        before = cores_used(args.seconds)
        run = uuid.uuid4().hex[:6]
        versions = [f"idle1-{run}", f"idle2-{run}"]
        for version in versions:
            build_image(env, version)
        stacks(env, "release", "--version", versions[0])
        stacks(env, "activate")
        stacks(env, "release", "--version", versions[1])
        count = app_containers()
        if not count:
            sys.exit("idle: no container of app runs after its release; see ./stacks.py status")
        time.sleep(args.settle)
        after = cores_used(args.seconds)
        reset(env)
    finally:
        if args.health_interval is not None:
            TEST_PILLAR.unlink(missing_ok=True)
    figures = {"health_interval": args.health_interval, "seconds": args.seconds, "containers": count}
    interval = args.health_interval if args.health_interval is not None else "the pillar's"
    print(f"idle cost (health_interval {interval}; {args.seconds:g} s each; in cores):")
    print(f"  {'':28} {'machine':>9} {'docker engine':>14}")
    for n, what in enumerate(("machine", "engine")):
        per = (after[n] - before[n]) / count if count else float("nan")
        figures[what] = {"no_stack": round(before[n], 4), "with_stacks": round(after[n], 4),
                         "per_container": round(per, 5)}
    print(f"  {'no stack':28} {before[0]:9.3f} {before[1]:14.3f}")
    print(f"  {f'2 stacks, {count} containers':28} {after[0]:9.3f} {after[1]:14.3f}")
    print(f"  {'per container':28} {figures['machine']['per_container']:9.4f} "
          f"{figures['engine']['per_container']:14.4f}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
