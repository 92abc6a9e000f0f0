"""
ext_pillar ``pigeon_registry``: the routes the registry holds, as pillar
``pigeon:routes`` ({"<app>/production": "<backend>", ...}), and the servers of
the stacks HAProxy reaches by address, as ``pigeon:servers`` ({app: {slot:
[[address, port], ...]}}), so that any load-balancer minion renders the same
routing to the same servers by applying its states.

Master config::

    ext_pillar:
      - pigeon_registry: True
"""

import salt.cache

__virtualname__ = "pigeon_registry"


def __virtual__():
    return __virtualname__


def ext_pillar(minion_id, pillar, *args, **kwargs):  # pylint: disable=unused-argument
    cache = salt.cache.factory(__opts__)
    routes, servers = {}, {}
    for app in cache.list("pigeon/registry") or []:
        entry = cache.fetch("pigeon/registry", app) or {}
        routes.update({k: v for k, v in (entry.get("routes") or {}).items() if v})
        slots = {s["slot"]: s["servers"] for s in (entry.get("stacks") or {}).values()
                 if isinstance(s, dict) and s.get("servers") and s.get("slot")}
        if slots:
            servers[app] = slots
    return {"pigeon": {"routes": routes, "servers": servers}}
