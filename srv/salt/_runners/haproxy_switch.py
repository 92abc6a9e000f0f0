"""
Runner ``haproxy_switch``: the routes step of an action when two or more load balancers
serve the app (``orch/steps.jinja``, a ``salt.runner`` step of the plan). It switches all
of them or none, in two phases, with ``haproxy_runtime.set_routes`` on each:

1. prepare, on every load balancer at once: the stack's servers set, the health gate passed
   (waited for, or checked once), the backends checked; no route changes;
2. only if every one prepared: the routes switched on every one at once (the gate checked
   again);
3. if the switch failed on one, every one is set back to the routes it had.

A load balancer of the plan that does not answer fails the phase. Not in salt-api's ACL:
the orchestrations call it, with values from the plan (made by the deploy runner).

CLI Example:

.. code-block:: bash

    salt-run haproxy_switch.routes balancers='[lb1, lb2]' routes='{"app/production": "app_b"}' previous='{"app/production": "app_a"}'
"""

import logging
import re

log = logging.getLogger(__name__)

__virtualname__ = "haproxy_switch"
MARGIN = 30  # seconds a phase may take beyond the gate's wait


def __virtual__():
    return __virtualname__


def _first_line(text):
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else "(no answer)"


def _phase(balancers, kwarg, timeout):
    """set_routes(**kwarg) on every load balancer at once: {minion: why it failed} for those that
    failed or did not answer."""
    import salt.client  # pylint: disable=import-outside-toplevel

    # from the master's config file, as salt.function does: the orchestration's own options
    # are not a master's, and a client made from them fails to authenticate
    with salt.client.get_local_client(__opts__["conf_file"]) as client:
        answers = client.cmd(list(balancers), "haproxy_runtime.set_routes", kwarg=kwarg, tgt_type="list",
                             timeout=timeout, full_return=True) or {}
    failed = {}
    for minion in balancers:
        answer = answers.get(minion)
        if not isinstance(answer, dict) or "ret" not in answer:
            failed[minion] = f"did not answer within {timeout} s; is the minion up? (salt-run manage.status)"
        elif answer.get("retcode") or not isinstance(answer["ret"], dict):
            text = str(answer["ret"])
            error = re.search(r"ERROR: (.+)", text)
            failed[minion] = _first_line(error.group(1) if error else text)
    return failed


def _named(failed):
    return "; ".join(f"{minion}: {why}" for minion, why in sorted(failed.items()))


def routes(balancers, routes, previous, servers=None, require_up=None, wait=0, **kwargs):  # pylint: disable=redefined-outer-name
    """
    Switch ``routes`` on every one of ``balancers`` or on none (see the module). ``previous``:
    the routes to set back if the switch fails on one; ``servers``, ``require_up`` and
    ``wait`` as haproxy_runtime.set_routes takes them. Returns {"switched": [balancers]}, or
    {"Error": one line naming the load balancer} (the orchestration's step fails).
    """
    del kwargs  # Salt's own (__pub_user, ...)
    balancers = sorted(str(b) for b in balancers or [])
    if not balancers:
        return {"Error": "no load balancer to switch: loadbal:target matches no accepted minion"}
    prepare = {"routes": {}, "servers": servers or None, "require_up": require_up or None, "wait": wait or 0}
    # set_routes waits for each gated backend in turn, each up to ``wait``
    failed = _phase(balancers, prepare, int(float(wait or 0)) * max(len(require_up or {}), 1) + MARGIN)
    if failed:
        return {"Error": f"{_named(failed)}; no route changed on any load balancer"}
    failed = _phase(balancers, {"routes": routes, "require_up": require_up or None}, MARGIN)
    if failed:
        log.warning("haproxy_switch: the switch failed on %s; setting every load balancer back", sorted(failed))
        back = _phase(balancers, {"routes": previous}, MARGIN)
        end = ("every load balancer set back to its routes" if not back else
               f"could not set back {_named(back)}; run ./stacks.py repair")
        if not back and any(why.startswith("did not answer") for why in failed.values()):
            # its switch may still run after the set back: repair sets the registry's routes again
            end += "; run ./stacks.py repair once it answers"
        return {"Error": f"{_named(failed)}; {end}"}
    return {"switched": balancers}
