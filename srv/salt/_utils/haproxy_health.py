"""
When a backend counts as healthy: the rule of the health gate before traffic moves.

A server counts when HAProxy sends it traffic (its status starts with UP) and
its last health check passed at layer 7 (L7OK): a freshly resolved server is UP
before any check ran, so UP alone proves nothing. Server-template slots in MAINT
(no address resolved) are ignored. A backend is healthy with exactly the count
of servers expected UP, all of them checked: more means old containers are
still resolved. Servers are the dicts of ``haproxy_admin.backend_stat``.

Pure Python, no Salt. The execution module ``haproxy_runtime``
(``_modules/haproxy_runtime.py``: wait_up, check_up, the gate of set_routes)
calls it as ``__utils__["haproxy_health.healthy"]`` ...; unit tests import it by path.
"""


def __virtual__():
    """Only the standard library is needed."""
    return True


def is_up(server):
    """True if HAProxy sends traffic to the server (UP, also "UP 1/3" going down)."""
    return server["status"].startswith("UP")


def is_checked(server):
    """True if the server is UP and its last health check passed at layer 7."""
    return is_up(server) and server["check_status"] == "L7OK"


def healthy(servers, count):
    """True if exactly count servers are UP, all of them checked."""
    up = [s for s in servers if is_up(s)]
    return len(up) == count and all(is_checked(s) for s in up)


def health_error(backend, count, servers, waited=None):
    """Build the one-line message for a backend that is not healthy."""
    checked = [s for s in servers if is_checked(s)]
    unchecked = [s for s in servers if not is_checked(s) and not s["status"].startswith("MAINT")]
    if unchecked:
        details = ", ".join(f"{s['name']} {s['addr']} {s['status']} {s['check_status']}".strip() for s in unchecked)
    elif len(checked) > count:
        details = "more than expected: " + ", ".join(f"{s['name']} {s['addr']}".strip() for s in checked)
    else:
        details = "no other server resolved, the other slots are in MAINT"
    after = f" after {waited:g}s" if waited is not None else ""
    return (
        f"backend {backend}: {len(checked)} of {count} servers UP and checked{after}"
        f" ({details}); that stack is not healthy (see ./stacks.py status)"
    )


def healthy_result(backend, servers):
    """The return value of wait_up and check_up: {backend, up (servers checked), servers}."""
    return {
        "backend": backend,
        "up": sum(1 for s in servers if is_checked(s)),
        "servers": servers,
    }
