#!/usr/bin/env python3
"""
Pigeon's progressive-delivery benchmark (make bench, on the one-host lab): how soon a canary,
a maintenance and a bake's rollback take effect, seen by clients of production.

Two clients request production in a loop (one keep-alive, one not; no cookie, so each request
draws its own canary bucket). Each round, with an active stack and a release beside it:

    canary   ./stacks.py canary --percent 50: from the command's start to the first answer of
             the release in production; then abort: to the last answer of the release
    maint.   ./stacks.py maintenance on: from the command's start to the first 503; off: to
             the first 200
    bake     a *flaky* version (the demo app answers 500 to half of its requests) activated
             with --bake 30: from the first 5xx production answered to the last answer of the
             flaky version (production back on the old one), and the bake's own figure

It prints each figure's median and max over the rounds.

    .lab/venv/bin/python tests/bench/progressive.py [--rounds 5] [--json FILE]
"""

import argparse
import json
import pathlib
import platform
import ssl
import statistics
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench  # noqa: E402  pylint: disable=wrong-import-position
from bench import APP, PRODUCTION, REPO, Client, build_image, lab_env, status  # noqa: E402


def stacks(env, *args):
    """stacks.py for the app: (start, end) monotonic times; exits when it fails."""
    return bench.stacks(env, *args)


def first(clients, after, test):
    times = [t for c in clients for (t, ok, v) in c.events if t >= after and test(ok, v)]
    return min(times) if times else None


def last(clients, after, test):
    times = [t for c in clients for (t, ok, v) in c.events if t >= after and test(ok, v)]
    return max(times) if times else None


def fresh(env, prefix):
    version = f"{prefix}-{uuid.uuid4().hex[:6]}"
    build_image(env, version)
    return version


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    env = lab_env()
    context = ssl.create_default_context(cafile=env["REQUESTS_CA_BUNDLE"])
    for version, stack in status(env).items():
        stacks(env, "deactivate", "--version", version, "--force")
    subprocess.run([str(REPO / ".lab/venv/bin/python"), str(REPO / "stacks.py"), "maintenance", "off",
                    "--app-name", APP, "--quiet"], env=env, capture_output=True, check=False)
    base = fresh(env, "pbase")
    stacks(env, "release", "--version", base)
    stacks(env, "activate", "--version", base)

    stop = threading.Event()
    clients = [Client(PRODUCTION, keepalive, context, stop) for keepalive in (True, False)]
    for client in clients:
        client.start()
    time.sleep(1)
    rows = {name: [] for name in ("canary", "abort", "maintenance_on", "maintenance_off", "bake_rollback",
                                  "bake_window")}
    try:
        for _ in range(args.rounds):
            release = fresh(env, "prel")
            stacks(env, "release", "--version", release)
            time.sleep(0.5)
            start, _ = stacks(env, "canary", "--percent", "50")
            seen = first(clients, start, lambda ok, v: ok and v == release)
            rows["canary"].append(round(seen - start, 3) if seen else None)
            time.sleep(1)
            start, end = stacks(env, "abort")
            time.sleep(1)
            gone = last(clients, start, lambda ok, v: ok and v == release)
            rows["abort"].append(round((gone or start) - start, 3))

            start, _ = stacks(env, "maintenance", "on")
            seen = first(clients, start, lambda ok, v: v == "HTTP 503")
            rows["maintenance_on"].append(round(seen - start, 3) if seen else None)
            time.sleep(0.5)
            start, _ = stacks(env, "maintenance", "off")
            seen = first(clients, start, lambda ok, v: ok)
            rows["maintenance_off"].append(round(seen - start, 3) if seen else None)
            stacks(env, "deactivate", "--version", release)

            flaky = fresh(env, "flaky")
            stacks(env, "release", "--version", flaky)
            started = time.monotonic()
            proc = subprocess.run([str(REPO / ".lab/venv/bin/python"), str(REPO / "stacks.py"), "activate",
                                   "--app-name", APP, "--version", flaky, "--bake", "30", "--json"],
                                  env=env, capture_output=True, text=True)
            time.sleep(1)
            outcome = json.loads(proc.stdout or "{}")
            if proc.returncode != 1 or (outcome.get("bake") or {}).get("result") != "failed":
                sys.exit(f"bench: the flaky version was not rolled back: {proc.stderr.strip()[-300:]}")
            breach = first(clients, started, lambda ok, v: v == "HTTP 500")
            back = last(clients, started, lambda ok, v: ok and v == flaky) or breach
            back = max(back, last(clients, started, lambda ok, v: v == "HTTP 500") or back)
            rows["bake_rollback"].append(round(back - breach, 3) if breach else None)
            rows["bake_window"].append(outcome["bake"]["seconds"])
            stacks(env, "deactivate", "--version", flaky)
    finally:
        stop.set()
        for client in clients:
            client.join(10)

    def summary(values):
        values = [v for v in values if v is not None]
        return {"median": round(statistics.median(values), 3), "max": round(max(values), 3),
                "n": len(values)} if values else None

    figures = {name: summary(values) for name, values in rows.items()}
    what = {
        "canary": "canary --percent 50: command start -> first answer of the release",
        "abort": "abort: command start -> last answer of the release",
        "maintenance_on": "maintenance on: command start -> first 503",
        "maintenance_off": "maintenance off: command start -> first 200",
        "bake_rollback": "bake: first 5xx in production -> last answer of the flaky version",
        "bake_window": "bake: seconds the runner watched before it judged the breach",
    }
    for name, figure in figures.items():
        print(f"{what[name]:<70} median {figure['median']:.3f} s  max {figure['max']:.3f} s  (n={figure['n']})"
              if figure else f"{what[name]:<70} no figure")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rounds": args.rounds,
            "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
            "figures": figures, "what": what, "raw": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
