"""
Ask minions from a runner: one execution function on a target, through Salt's
LocalClient on the master. Both runners use it: the views (``_runners/stacks.py``:
status, details, logs, proxy) and the deploy runner's ``prune`` (and ``repair``'s
look at what runs).

Reached as ``__utils__["pigeon_minions.ask"]``; the unit tests replace Salt's
``get_local_client`` with a stand-in.
"""


def expected(tgt, tgt_type):
    """The minions with an accepted key that ``tgt`` matches (what the master's cache knows),
    sorted: those that should answer ``ask``."""
    import salt.utils.minions  # pylint: disable=import-outside-toplevel

    found = salt.utils.minions.CkMinions(__opts__).check_minions(tgt, tgt_type or "glob")
    return sorted(found.get("minions") or [])


def ask(tgt, tgt_type, fun, timeout=10, **kwarg):
    """Call ``fun(**kwarg)`` on the minions of ``tgt``: {minion: return}. A minion that did
    not answer within ``timeout`` seconds is absent, or False."""
    import salt.client  # pylint: disable=import-outside-toplevel

    with salt.client.get_local_client(mopts=__opts__) as client:
        return client.cmd(tgt, fun, kwarg=kwarg, tgt_type=tgt_type or "glob", timeout=timeout) or {}


def addresses(minions, network):
    """
    Where HAProxy reaches each of ``minions``: ({minion: its first ``ipv4`` grain inside
    ``network``}, [minions with none]), from the grains the master's cache holds (each
    minion sends them when it starts and refreshes its pillar). ``network`` bounds what a
    minion's own grains can point HAProxy at.
    """
    import ipaddress  # pylint: disable=import-outside-toplevel

    import salt.utils.minions  # pylint: disable=import-outside-toplevel

    inside = ipaddress.IPv4Network(network, strict=False)
    found, missing = {}, []
    for minion in minions:
        grains = salt.utils.minions.get_minion_data(minion, __opts__)[1] or {}
        picked = None
        for raw in grains.get("ipv4") or []:
            try:
                address = ipaddress.IPv4Address(str(raw))  # IPv4 only: nothing after a '%' or ':'
            except ValueError:
                continue
            if address in inside:
                picked = str(address)
                break
        if picked:
            found[minion] = picked
        else:
            missing.append(minion)
    return found, missing
