"""
Unit tests for srv/salt/_utils/haproxy_health.py: when a backend's servers count as healthy.

The health gate is also tested through haproxy_runtime (wait_up, check_up, set_routes);
these cover the rule and its messages on their own.
"""

from srv_modules import load

hh = load("_utils/haproxy_health.py", "haproxy_health")


def server(name, addr, status="UP", check_status="L7OK"):
    return {"name": name, "addr": addr, "status": status, "check_status": check_status, "scur": 0, "qcur": 0}


SLOT = server("s3", "", status="MAINT (resolution)", check_status="")


def test_up_and_checked():
    assert hh.is_up(server("s1", "a", status="UP 1/3")) and hh.is_checked(server("s1", "a"))
    assert not hh.is_checked(server("s1", "a", check_status="INI"))
    assert not hh.is_checked(server("s1", "a", status="DOWN", check_status="L7OK"))
    assert not hh.is_up(SLOT)


def test_healthy_needs_exactly_count_servers_up_all_checked():
    two = [server("s1", "a"), server("s2", "b"), SLOT]

    assert hh.healthy(two, 2)
    assert not hh.healthy(two, 1)  # one more UP than expected: old containers still resolved
    assert not hh.healthy(two, 3)
    assert not hh.healthy([server("s1", "a"), server("s2", "b", check_status="INI")], 2)


def test_health_error_names_what_is_wrong():
    end = "; that stack is not healthy (see ./stacks.py status)"

    assert hh.health_error("app_b", 2, [server("s1", "a:1"), server("s2", "b:1", "DOWN", "L4CON")], waited=0.5) == (
        "backend app_b: 1 of 2 servers UP and checked after 0.5s (s2 b:1 DOWN L4CON)" + end
    )
    assert hh.health_error("app_b", 1, [server("s1", "a:1"), server("s2", "b:1")]) == (
        "backend app_b: 2 of 1 servers UP and checked (more than expected: s1 a:1, s2 b:1)" + end
    )
    assert hh.health_error("app_b", 2, [server("s1", "a:1"), SLOT]) == (
        "backend app_b: 1 of 2 servers UP and checked (no other server resolved, the other slots are in MAINT)" + end
    )


def test_healthy_result_counts_the_checked_servers():
    servers = [server("s1", "a"), server("s2", "b", check_status="INI"), SLOT]

    assert hh.healthy_result("app_b", servers) == {"backend": "app_b", "up": 1, "servers": servers}
