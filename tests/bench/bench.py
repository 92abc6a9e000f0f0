#!/usr/bin/env python3
"""
Pigeon's benchmark (make bench): blue/green cycles under load on the lab.

Load on production and preview at once, from keep-alive clients and from
clients that open a new TLS connection per request, while stacks.py runs
cycles of release -> activate -> rollback -> deactivate of the app `app`:

    release N     preview answers N
    activate N    production answers N (the base becomes inactive)
    rollback      production answers the base again (N inactive)
    deactivate N  N is gone; production keeps answering the base

For each action it reports the time from the CLI's start to traffic served by
the new version (median, max), the CLI's own duration, and the failed requests
(non-2xx answers, connection errors) during it; then the totals.

    .lab/venv/bin/python tests/bench/bench.py [--cycles 20] [--json FILE]
"""

import argparse
import http.client
import json
import os
import pathlib
import platform
import ssl
import statistics
import subprocess
import sys
import threading
import time
import uuid

REPO = pathlib.Path(__file__).resolve().parents[2]
APP = "app"
PRODUCTION = ("localhost", 8443)
PREVIEW = ("localhost", 4443)


def lab_env():
    env = dict(os.environ)
    for line in (REPO / ".lab/env").read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = value.replace("$PATH", os.environ.get("PATH", ""))
    return env


class Client(threading.Thread):
    """Sends GET / in a loop; records (time, ok, version) of every answer."""

    def __init__(self, address, keepalive, context, stop, interval=0.0):
        super().__init__(daemon=True)
        self.address, self.keepalive, self.context, self.stop = address, keepalive, context, stop
        self.interval = interval  # seconds between requests (0: as fast as it goes)
        self.events = []  # (monotonic time, ok, version or error)
        self.conn = None

    def connect(self):
        return http.client.HTTPSConnection(*self.address, context=self.context, timeout=5)

    def run(self):
        deadline = time.monotonic() + 3600
        next_at = time.monotonic()
        while not self.stop.is_set() and time.monotonic() < deadline:
            if self.interval:
                next_at += self.interval
                pause = next_at - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            try:
                if self.conn is None:
                    self.conn = self.connect()
                headers = {} if self.keepalive else {"Connection": "close"}
                self.conn.request("GET", "/", headers=headers)
                response = self.conn.getresponse()
                body = response.read().decode()
                ok = 200 <= response.status < 300
                self.events.append((time.monotonic(), ok, body.split()[1] if ok else f"HTTP {response.status}"))
                if not self.keepalive or response.will_close:
                    self.conn.close()
                    self.conn = None
            except (OSError, http.client.HTTPException) as exc:
                self.events.append((time.monotonic(), False, type(exc).__name__))
                if self.conn:
                    self.conn.close()
                self.conn = None


def stacks(env, *args):
    started = time.monotonic()
    proc = subprocess.run([str(REPO / ".lab/venv/bin/python"), str(REPO / "stacks.py"), *args,
                           "--app-name", APP, "--quiet"], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench: stacks.py {' '.join(args)} failed: {proc.stderr.strip()}")
    return started, time.monotonic()


def build_image(env, version):
    """The target is for images present: the demo app's image of a version is built before
    its release is timed (the config formula then finds it there)."""
    pillar = json.dumps({"pigeon_stack": {"app": APP, "version": version}})
    proc = subprocess.run([str(REPO / ".lab/venv/bin/salt"), "-c", str(REPO / ".lab/etc/salt"),
                           "lab-minion", "state.sls", "demoapp", f"pillar={pillar}", "--out=txt"],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench: building the image of {version} failed: {proc.stderr.strip()[-300:]}")


def first_seen(clients, version, after):
    times = [t for c in clients for (t, ok, v) in c.events if t >= after and ok and v == version]
    return min(times) if times else None


def failures(clients, start, end):
    return [(t, v) for c in clients for (t, ok, v) in c.events if start <= t < end and not ok]


def served(clients, start, end):
    return sum(1 for c in clients for (t, ok, v) in c.events if start <= t < end)


def status(env):
    proc = subprocess.run([str(REPO / ".lab/venv/bin/python"), str(REPO / "stacks.py"), "status",
                           "--app-name", APP, "--json"], env=env, capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout)["status"].get(APP, {"stacks": {}})["stacks"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--clients", type=int, default=2, help="clients of each kind per address")
    parser.add_argument("--rps", type=float, default=0,
                        help="requests per second in all (paced); 0: as fast as the clients go")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    env = lab_env()
    context = ssl.create_default_context(cafile=env["REQUESTS_CA_BUNDLE"])

    # a base version that stays: active, nothing else
    stacks_now = status(env)
    for version, stack in stacks_now.items():
        if stack["state"] != "active":
            stacks(env, "deactivate", "--version", version)
    if not any(s["state"] == "active" for s in status(env).values()):
        base = f"base-{uuid.uuid4().hex[:6]}"
        stacks(env, "release", "--version", base)
        stacks(env, "activate", "--version", base)
    base = next(v for v, s in status(env).items() if s["state"] == "active")

    stop = threading.Event()
    interval = (4 * args.clients) / args.rps if args.rps else 0.0
    prod = [Client(PRODUCTION, ka, context, stop, interval) for ka in (True, False) for _ in range(args.clients)]
    prev = [Client(PREVIEW, ka, context, stop, interval) for ka in (True, False) for _ in range(args.clients)]
    everyone = prod + prev
    for c in everyone:
        c.start()
    time.sleep(1)
    t_begin = time.monotonic()
    rows = {a: {"to_traffic": [], "cli": [], "failed": 0, "served": 0}
            for a in ("release", "activate", "rollback", "deactivate")}
    try:
        for cycle in range(args.cycles):
            version = f"bench-{uuid.uuid4().hex[:8]}"
            build_image(env, version)
            for action, watch, expect in (
                ("release", prev, version),
                ("activate", prod, version),
                ("rollback", prod, base),
                ("deactivate", None, None),
            ):
                extra = ["--version", version] if action in ("release", "activate", "deactivate") else []
                start, end = stacks(env, action, *extra)
                if watch is not None:
                    seen = None
                    deadline = time.monotonic() + 10
                    while seen is None and time.monotonic() < deadline:
                        seen = first_seen(watch, expect, start)
                        time.sleep(0.02)
                    rows[action]["to_traffic"].append((seen - start) if seen else float("inf"))
                rows[action]["cli"].append(end - start)
                rows[action]["failed"] += len(failures(everyone, start, end + 0.5))
                rows[action]["served"] += served(everyone, start, end)
            print(f"cycle {cycle + 1}/{args.cycles} done", flush=True)
    finally:
        time.sleep(0.5)
        stop.set()
        for c in everyone:
            c.join(10)
    t_end = time.monotonic()
    total_served = served(everyone, t_begin, t_end)
    total_failed = failures(everyone, t_begin, t_end)
    seconds = t_end - t_begin
    figures = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.node()}: {os.cpu_count()} cores, {platform.platform()}",
        "cycles": args.cycles,
        "clients": {"production": len(prod), "preview": len(prev),
                    "kinds": "half keep-alive, half a new TLS connection per request",
                    "paced_rps": args.rps or None},
        "requests_served": total_served,
        "requests_per_second": round(total_served / seconds, 1),
        "failed_requests": len(total_failed),
        "failed_examples": [v for _, v in total_failed[:10]],
        "actions": {},
    }
    print(f"\n{'action':<11} {'to new traffic: median':>22} {'max':>7} {'CLI median':>11} {'max':>7} "
          f"{'failed':>7} {'served':>8}")
    for action, row in rows.items():
        t = row["to_traffic"]
        entry = {
            "to_traffic_median_s": round(statistics.median(t), 2) if t else None,
            "to_traffic_max_s": round(max(t), 2) if t else None,
            "cli_median_s": round(statistics.median(row["cli"]), 2),
            "cli_max_s": round(max(row["cli"]), 2),
            "failed_requests": row["failed"],
            "requests_served": row["served"],
        }
        figures["actions"][action] = entry
        fmt = lambda x: "-" if x is None else f"{x:.2f} s"  # noqa: E731
        print(f"{action:<11} {fmt(entry['to_traffic_median_s']):>22} {fmt(entry['to_traffic_max_s']):>7} "
              f"{fmt(entry['cli_median_s']):>11} {fmt(entry['cli_max_s']):>7} {row['failed']:>7} "
              f"{row['served']:>8}")
    print(f"\ntotal: {total_served} requests in {seconds:.0f} s ({figures['requests_per_second']}/s), "
          f"{len(total_failed)} failed")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 1 if total_failed else 0


if __name__ == "__main__":
    sys.exit(main())
