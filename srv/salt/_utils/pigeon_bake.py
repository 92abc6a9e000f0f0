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
  the switch (at least 1 ms), once it has answered ``min_requests``.

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


def total(stats, backend):
    """The counters of ``backend`` summed over the load balancers (``{minion: haproxy_runtime.stats
    answer}``): {"responses", "5xx", "rtime" (the highest), "down": [minion/server], "servers"}.
    A minion that did not answer with counters is left out (and named in "missing")."""
    summed = {"responses": 0, "5xx": 0, "rtime": 0, "down": [], "servers": 0, "missing": []}
    for minion, answer in sorted((stats or {}).items()):
        found = answer.get(backend) if isinstance(answer, dict) else None
        if not isinstance(found, dict) or not isinstance(found.get("counters"), dict):
            summed["missing"].append(minion)
            continue
        counters = found["counters"]
        summed["responses"] += sum(int(counters.get(k) or 0) for k in ("hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx"))
        summed["5xx"] += int(counters.get("hrsp_5xx") or 0)
        summed["rtime"] = max(summed["rtime"], int(counters.get("rtime") or 0))
        for server in found.get("servers") or []:
            status = str(server.get("status") or "")
            if status.startswith("MAINT") or not server.get("addr"):
                continue  # a slot of the template no container fills
            summed["servers"] += 1
            if status.startswith("DOWN"):
                summed["down"].append(f"{minion}/{server.get('name')}")
    return summed


def judge(start, now, old_rtime, limit):
    """The breach of ``limit`` (limits()) between two totals of the new slot (``start`` at the
    switch, ``now``), as one line naming the figure, or None. ``old_rtime``: the old slot's
    average response time (ms) before the switch."""
    if now["down"]:
        return (f"{len(now['down'])} of {now['servers']} servers DOWN (failed health checks): "
                f"{', '.join(now['down'][:3])}")
    responses = max(0, now["responses"] - start["responses"])
    errors = max(0, now["5xx"] - start["5xx"])
    if responses < int(limit["min_requests"]):
        return None
    share = 100.0 * errors / responses
    if share > float(limit["max_5xx_percent"]):
        return f"5xx {share:.1f} % of {responses} responses, above {limit['max_5xx_percent']} %"
    ceiling = float(limit["max_response_ratio"]) * max(int(old_rtime or 0), 1)
    if now["rtime"] > ceiling:
        return (f"response time {now['rtime']} ms, above {limit['max_response_ratio']} x the old "
                f"slot's {max(int(old_rtime or 0), 1)} ms")
    return None


def figures(start, now):
    """What the bake saw, for the outcome and the history: responses, 5xx and their share, rtime."""
    responses = max(0, now["responses"] - start["responses"])
    errors = max(0, now["5xx"] - start["5xx"])
    return {"responses": responses, "5xx": errors,
            "5xx_percent": round(100.0 * errors / responses, 1) if responses else 0.0,
            "rtime_ms": now["rtime"], "down": list(now["down"])}
