"""
The bake window of an activate: how long production is watched on the new slot, the
limits it must stay within, and the judgement of HAProxy's counters against them.

``activate --bake SECONDS`` (or ``stacks:<app>:bake:seconds`` in pillar) makes the deploy
runner (``_runners/deploy.py``) watch, after the switch, the counters every load balancer
gives for the new slot's backend (``haproxy_runtime.stats``), and roll production back to
the stack it came from when one limit is crossed:

- ``max_5xx_percent`` (default 5): the share of the slot's responses that are 5xx, once it
  has answered ``min_requests`` (default 20) since the switch;
- a server of the slot DOWN (its health checks fail);
- ``max_response_ratio`` (default 3): the slot's average response time (HAProxy's
  ``rtime``, over its last 1024 requests) above this many times the old slot's before
  the switch (taken as at least RTIME_FLOOR, 20 ms), once it has answered ``min_requests``.

Each load balancer's counters are followed apart (a reload resets them); one that never
answers during the window makes the bake ``unobserved``: the activate fails, nothing rolls back.

Pure Python, no Salt: ``__utils__["pigeon_bake.judge"]``; imported by path in the unit tests.
"""

DEFAULTS = {"seconds": 0, "max_5xx_percent": 5, "max_response_ratio": 3, "min_requests": 20}
EVERY = 0.5  # seconds between two looks at the counters


def __virtual__():
    return True


def limits(definition, seconds=None):
    """The bake of an app: its pillar's ``bake:`` (checked at the door) over DEFAULTS, with
    ``seconds`` from the request when it gives one (0: no bake)."""
    found = dict(DEFAULTS, **((definition or {}).get("bake") or {}), every=EVERY)
    if seconds is not None:
        found["seconds"] = int(seconds)
    return found


def counts(stats, backend):
    """The counters of ``backend`` on each load balancer that answered with them (``stats``:
    {minion: haproxy_runtime.stats answer}): {minion: {"responses", "5xx", "rtime", "down":
    [server], "servers"}}. A minion that did not answer with counters is left out."""
    found = {}
    for minion, answer in sorted((stats or {}).items()):
        mine = answer.get(backend) if isinstance(answer, dict) else None
        if not isinstance(mine, dict) or not isinstance(mine.get("counters"), dict):
            continue
        counters = mine["counters"]
        seen = {"responses": sum(int(counters.get(k) or 0) for k in ("hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx")),
                "5xx": int(counters.get("hrsp_5xx") or 0), "rtime": int(counters.get("rtime") or 0),
                "down": [], "servers": 0}
        for server in mine.get("servers") or []:
            status = str(server.get("status") or "")
            if status.startswith("MAINT") or not server.get("addr"):
                continue  # a slot of the template no container fills
            seen["servers"] += 1
            if status.startswith("DOWN"):
                seen["down"].append(f"{minion}/{server.get('name')}")
        found[minion] = seen
    return found


def since(baseline, now):
    """What the load balancers counted since the baseline ({minion: counts} at the switch), as
    one total: {"responses", "5xx", "rtime" (the highest), "down", "servers"}. ``baseline`` is
    updated in place: a load balancer seen for the first time starts from what it says now; one
    whose counters went down (HAProxy reloaded or restarted) starts again from zero."""
    total = {"responses": 0, "5xx": 0, "rtime": 0, "down": [], "servers": 0}
    for minion, seen in sorted(now.items()):
        base = baseline.get(minion)
        if base is None:
            baseline[minion] = base = dict(seen)
        elif seen["responses"] < base.get("last", base)["responses"] or seen["5xx"] < base.get("last", base)["5xx"]:
            # reset: what it counted before is kept, and it counts again from zero
            last = base.get("last", base)
            base["carried"] = {k: base.get("carried", {}).get(k, 0) + last[k] - base[k] for k in ("responses", "5xx")}
            base.update(responses=0, **{"5xx": 0})
        base["last"] = {"responses": seen["responses"], "5xx": seen["5xx"]}
        carried = base.get("carried", {})
        total["responses"] += seen["responses"] - base["responses"] + carried.get("responses", 0)
        total["5xx"] += seen["5xx"] - base["5xx"] + carried.get("5xx", 0)
        total["rtime"] = max(total["rtime"], seen["rtime"])
        total["down"] += seen["down"]
        total["servers"] += seen["servers"]
    return total


RTIME_FLOOR = 20  # ms: an old slot faster than this is taken as this fast (rtime is whole ms)


def judge(total, old_rtime, limit):
    """The breach of ``limit`` (limits()) by what the new slot's load balancers counted since
    the switch (``since``), as one line naming the figure, or None. ``old_rtime``: the old
    slot's average response time (ms) before the switch, RTIME_FLOOR at least."""
    if total["down"]:
        return (f"{len(total['down'])} of {total['servers']} servers DOWN (failed health checks): "
                f"{', '.join(total['down'][:3])}")
    responses, errors = total["responses"], total["5xx"]
    if responses < int(limit["min_requests"]):
        return None
    share = 100.0 * errors / responses
    if share > float(limit["max_5xx_percent"]):
        return f"5xx {share:.1f} % of {responses} responses, above {limit['max_5xx_percent']} %"
    floor = max(int(old_rtime or 0), RTIME_FLOOR)
    if total["rtime"] > float(limit["max_response_ratio"]) * floor:
        return (f"response time {total['rtime']} ms, above {limit['max_response_ratio']} x the old "
                f"slot's {floor} ms")
    return None


def figures(total, missing=()):
    """What the bake saw, for the outcome and the history: responses, 5xx and their share, rtime,
    the servers DOWN, the load balancers that never answered."""
    responses, errors = total["responses"], total["5xx"]
    return {"responses": responses, "5xx": errors,
            "5xx_percent": round(100.0 * errors / responses, 1) if responses else 0.0,
            "rtime_ms": total["rtime"], "down": list(total["down"]), "missing": sorted(missing)}
