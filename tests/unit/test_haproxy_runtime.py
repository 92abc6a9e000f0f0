"""
Unit tests for srv/salt/_modules/haproxy_runtime.py.

The module runs against FakeHAProxy (tests/unit/fake_haproxy.py): a real
AF_UNIX socket served by a thread, answering like HAProxy 2.6's admin socket in
non-interactive mode. Its utils modules (_utils/haproxy_admin.py, haproxy_maps.py,
haproxy_health.py) are given to it as ``__utils__``, as Salt's loader gives them
(functions only); one test loads it all through Salt's real loader.
"""

import copy
import logging
import pathlib
import shutil
import threading
import time

import pytest
import salt.config
import salt.loader
from salt.exceptions import CommandExecutionError

from fake_haproxy import (MAP_REF, SHOW_SERVERS_STATE, FakeHAProxy, backend_row, frontend_row, maint_slot,
                          server_row, show_stat, slot_servers)
from srv_modules import SALT_DIR, load, utils_dunder

hr = load("_modules/haproxy_runtime.py", "haproxy_runtime")
admin = load("_utils/haproxy_admin.py", "haproxy_admin")
maps = load("_utils/haproxy_maps.py", "haproxy_maps")
health = load("_utils/haproxy_health.py", "haproxy_health")
UTILS = utils_dunder(admin, maps, health)


@pytest.fixture(autouse=True)
def salt_dunder(monkeypatch):
    """A __salt__ whose config.get always returns the default, as on a bare minion, and the utils."""
    monkeypatch.setattr(hr, "__salt__", {"config.get": lambda key, default=None: default}, raising=False)
    monkeypatch.setattr(hr, "__utils__", UTILS, raising=False)


@pytest.fixture
def haproxy(tmp_path):
    fake = FakeHAProxy(tmp_path / "admin.sock")
    yield fake
    fake.stop()


@pytest.fixture
def maps_dir(tmp_path):
    path = tmp_path / "maps"
    path.mkdir()
    return path


def _set_map(fake, maps_dir, entries):
    """Start with the same entries in the host file and in HAProxy's running map."""
    maps.atomic_write_map(str(maps_dir / "routes.map"), entries)
    fake.maps[MAP_REF] = [[key, value] for key, value in entries.items()]


# --- socket errors ------------------------------------------------------------


def test_missing_socket_says_which_socket_and_what_to_check(tmp_path, monkeypatch):
    path = tmp_path / "admin.sock"
    monkeypatch.setattr(hr, "CONNECT_WAIT", 0.3)

    with pytest.raises(admin.HAProxySocketError) as raw:
        admin.AdminSocket(str(path), connect_wait=0).command("show info")
    with pytest.raises(hr.CommandExecutionError) as salt_error:
        hr.backends(socket=str(path))

    expected = f"HAProxy admin socket {path}: no such file; is the haproxy container running?"
    assert str(raw.value) == expected
    assert str(salt_error.value) == expected


# --- servers, health, draining -------------------------------------------------


def test_servers_lists_server_rows_only(haproxy):
    haproxy.stats = [show_stat(
        frontend_row("app_b"),  # a `listen` section has a FRONTEND row of the same name
        backend_row("app_b", scur=3),
        server_row("app_b", "s1", "10.0.0.4:8080", scur=2, qcur=1),
        server_row("app_b", "s2", "10.0.0.5:8080", check_status="* L7OK", sid=2),
        maint_slot("app_b", "s3", 3),
        server_row("app_a", "s1", "10.0.0.2:8080"),
    )]

    result = hr.servers("app_b", socket=haproxy.path)

    assert result == [
        {"name": "s1", "addr": "10.0.0.4:8080", "status": "UP", "check_status": "L7OK", "scur": 2, "qcur": 1},
        {"name": "s2", "addr": "10.0.0.5:8080", "status": "UP", "check_status": "L7OK", "scur": 0, "qcur": 0},
        {"name": "s3", "addr": "", "status": "MAINT (resolution)", "check_status": "", "scur": 0, "qcur": 0},
    ]
    assert haproxy.commands == ["show stat"]


def test_stats_of_the_slots_in_one_show_stat(haproxy):
    haproxy.stats = [show_stat(
        backend_row("app_a", scur=3),
        server_row("app_a", "s1", "10.0.0.4:8080", scur=2),
        maint_slot("app_a", "s2", 2),
        backend_row("app_b", status="DOWN", act=0),
        server_row("app_b", "s1", "10.0.0.5:8080", status="DOWN", check_status="L7STS"),
    )]
    result = hr.stats(["app_a", "app_b", "app_c"], socket=haproxy.path)
    assert haproxy.commands == ["show stat"]
    assert set(result) == {"app_a", "app_b"}  # app_c: not in HAProxy, left out
    assert result["app_a"]["counters"] == {
        "status": "UP", "scur": 3, "stot": 5100, "hrsp_2xx": 0, "hrsp_3xx": 0, "hrsp_4xx": 0, "hrsp_5xx": 0,
        "econ": 0, "eresp": 0, "wretr": 0, "wredis": 0, "rtime": 0}
    assert [(s["name"], s["addr"], s["status"]) for s in result["app_a"]["servers"]] == [
        ("s1", "10.0.0.4:8080", "UP"), ("s2", "", "MAINT (resolution)")]
    assert result["app_b"]["counters"]["status"] == "DOWN"
    assert result["app_b"]["servers"][0]["check_status"] == "L7STS"


def test_servers_of_an_unknown_backend_is_an_error(haproxy):
    with pytest.raises(hr.CommandExecutionError) as error:
        hr.servers("app_c", socket=haproxy.path)

    assert str(error.value) == "backend app_c: not defined in HAProxy; check the name with haproxy_runtime.backends"


def test_backend_sessions_reads_the_backend_row(haproxy):
    haproxy.stats = [show_stat(backend_row("app_a", scur=7, qcur=2), server_row("app_a", "s1", "10.0.0.2:8080"))]

    assert hr.backend_sessions("app_a", socket=haproxy.path) == {"scur": 7, "qcur": 2}


def test_wait_up_returns_once_every_server_is_checked(haproxy):
    haproxy.stats = [
        show_stat(backend_row("app_b"), maint_slot("app_b", "s1", 1), maint_slot("app_b", "s2", 2)),
        show_stat(backend_row("app_b"), server_row("app_b", "s1", "10.0.0.4:8080", check_status="INI"),
                  server_row("app_b", "s2", "10.0.0.5:8080", status="DOWN", check_status="L4CON", sid=2)),
        show_stat(backend_row("app_b"), server_row("app_b", "s1", "10.0.0.4:8080"),
                  server_row("app_b", "s2", "10.0.0.5:8080", sid=2)),
    ]

    result = hr.wait_up("app_b", 2, timeout=3, interval=0.01, socket=haproxy.path)

    assert result["backend"] == "app_b"
    assert result["up"] == 2
    assert [s["name"] for s in result["servers"]] == ["s1", "s2"]
    assert haproxy.commands == ["show stat"] * 3


def test_wait_up_timeout_names_the_bad_server(haproxy):
    haproxy.stats = [show_stat(
        backend_row("app_b"),
        server_row("app_b", "s1", "10.0.0.4:8080"),
        server_row("app_b", "s2", "10.0.0.5:8080", status="DOWN", check_status="L7STS", sid=2),
        maint_slot("app_b", "s3", 3),
    )]

    started = time.monotonic()
    with pytest.raises(hr.CommandExecutionError) as error:
        hr.wait_up("app_b", 2, timeout=0.2, interval=0.02, socket=haproxy.path)

    assert str(error.value) == (
        "backend app_b: 1 of 2 servers UP and checked after 0.2s"
        " (s2 10.0.0.5:8080 DOWN L7STS); that stack is not healthy (see ./stacks.py status)"
    )
    assert 0.2 <= time.monotonic() - started < 1.5
    assert len(haproxy.commands) > 2


def test_wait_up_ignores_maint_slots(haproxy):
    haproxy.stats = [show_stat(
        backend_row("app_b"),
        server_row("app_b", "s1", "10.0.0.4:8080"),
        server_row("app_b", "s2", "10.0.0.5:8080", sid=2),
        maint_slot("app_b", "s3", 3),
        maint_slot("app_b", "s4", 4),
    )]

    result = hr.wait_up("app_b", 2, timeout=0.2, interval=0.02, socket=haproxy.path)

    assert result["up"] == 2
    assert haproxy.commands == ["show stat"]


def test_up_without_l7ok_is_not_counted(haproxy):
    haproxy.stats = [show_stat(
        backend_row("app_b"),
        server_row("app_b", "s1", "10.0.0.4:8080"),
        server_row("app_b", "s2", "10.0.0.5:8080", check_status="INI", sid=2),
    )]

    with pytest.raises(hr.CommandExecutionError) as error:
        hr.check_up("app_b", 2, socket=haproxy.path)
    with pytest.raises(hr.CommandExecutionError, match="1 of 2 servers UP and checked after 0.1s"):
        hr.wait_up("app_b", 2, timeout=0.1, interval=0.02, socket=haproxy.path)

    assert str(error.value) == (
        "backend app_b: 1 of 2 servers UP and checked (s2 10.0.0.5:8080 UP INI); that stack is not healthy (see ./stacks.py status)"
    )


def test_check_up_passes_when_count_servers_are_checked(haproxy):
    haproxy.stats = [show_stat(
        backend_row("app_b"), server_row("app_b", "s1", "10.0.0.4:8080"), maint_slot("app_b", "s2", 2),
    )]

    assert hr.check_up("app_b", 1, socket=haproxy.path)["up"] == 1
    assert haproxy.commands == ["show stat"]


def test_wait_up_keeps_waiting_while_old_servers_are_still_up(haproxy):
    three_up = show_stat(
        backend_row("app_b", act=3),
        server_row("app_b", "s1", "10.0.0.3:8080"),
        server_row("app_b", "s2", "10.0.0.4:8080", sid=2),
        server_row("app_b", "s3", "10.0.0.5:8080", sid=3),
    )
    haproxy.stats = [three_up]

    with pytest.raises(hr.CommandExecutionError) as error:
        hr.wait_up("app_b", 2, timeout=0.1, interval=0.02, socket=haproxy.path)
    assert str(error.value) == (
        "backend app_b: 3 of 2 servers UP and checked after 0.1s (more than expected:"
        " s1 10.0.0.3:8080, s2 10.0.0.4:8080, s3 10.0.0.5:8080); that stack is not healthy (see ./stacks.py status)"
    )

    haproxy.stats = [three_up, three_up, show_stat(
        backend_row("app_b"),
        maint_slot("app_b", "s1", 1),
        server_row("app_b", "s2", "10.0.0.4:8080", sid=2),
        server_row("app_b", "s3", "10.0.0.5:8080", sid=3),
    )]
    haproxy.commands.clear()
    assert hr.wait_up("app_b", 2, timeout=3, interval=0.01, socket=haproxy.path)["up"] == 2
    assert haproxy.commands == ["show stat"] * 3


def test_wait_drained_returns_when_no_session_is_left(haproxy):
    haproxy.stats = [
        show_stat(backend_row("app_a", scur=3, qcur=1)),
        show_stat(backend_row("app_a", scur=1)),
        show_stat(backend_row("app_a", scur=0)),
    ]

    result = hr.wait_drained("app_a", timeout=3, interval=0.01, socket=haproxy.path)

    assert result["backend"] == "app_a"
    assert result["drained"] is True
    assert (result["scur"], result["qcur"]) == (0, 0)
    assert 0 <= result["waited"] < 1
    assert haproxy.commands == ["show stat"] * 3


def test_wait_drained_gives_up_after_timeout_without_raising(haproxy, caplog):
    haproxy.stats = [show_stat(backend_row("app_a", scur=2, qcur=0))]

    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        result = hr.wait_drained("app_a", timeout=0.2, interval=0.02, socket=haproxy.path)

    assert result["drained"] is False
    assert (result["backend"], result["scur"], result["qcur"]) == ("app_a", 2, 0)
    assert 0.2 <= time.monotonic() - started < 1.5
    assert "backend app_a: still 2 sessions and 0 queued after 0.2s" in caplog.text


# --- routes -------------------------------------------------------------------


def test_set_routes_refuses_an_unknown_backend_and_changes_nothing(haproxy, maps_dir):
    _set_map(haproxy, maps_dir, {"shop/production": "app_a"})
    before = (maps_dir / "routes.map").read_text()

    with pytest.raises(hr.CommandExecutionError) as error:
        hr.set_routes({"shop/production": "app_c", "api/internal": "app_b", "shop/version/c": "2.0"},
                      socket=haproxy.path, maps_dir=str(maps_dir))

    assert str(error.value) == (
        "backend app_c: not defined in HAProxy; add it to haproxy.cfg and reload before routing to it"
    )
    assert (maps_dir / "routes.map").read_text() == before
    assert haproxy.maps[MAP_REF] == [["shop/production", "app_a"]]
    assert haproxy.write_commands() == []


def test_set_routes_sets_a_slots_version_which_names_no_backend(haproxy, maps_dir):
    _set_map(haproxy, maps_dir, {"app/production": "app_a"})

    hr.set_routes({"app/internal": "app_b", "app/version/b": "2.0", "app/version/c": None},
                  socket=haproxy.path, maps_dir=str(maps_dir))

    assert dict(haproxy.maps[MAP_REF]) == {"app/production": "app_a", "app/internal": "app_b",
                                           "app/version/b": "2.0"}
    assert "app/version/b 2.0" in (maps_dir / "routes.map").read_text()


# --- servers by address -------------------------------------------------------


def test_set_servers_fills_the_slots_in_order_and_leaves_the_rest_in_maintenance(haproxy):
    haproxy.slots = slot_servers("app_b", 4)
    changed = hr.set_servers({"app_b": [["10.0.0.21", 21010], ["10.0.0.22", 21010]]}, socket=haproxy.path)
    assert changed == {"app_b": {"s1": "10.0.0.21:21010", "s2": "10.0.0.22:21010"}}
    assert [(s["addr"], s["port"], s["admin"]) for s in haproxy.slots["app_b"]] == [
        ("10.0.0.21", 21010, 0), ("10.0.0.22", 21010, 0), ("127.0.0.1", 8080, 4), ("127.0.0.1", 8080, 4)]
    # the same again: nothing sent; one server fewer: its slot goes to maintenance
    before = len(haproxy.write_commands())
    assert hr.set_servers({"app_b": [["10.0.0.21", 21010], ["10.0.0.22", 21010]]}, socket=haproxy.path) == {}
    assert len(haproxy.write_commands()) == before
    assert hr.set_servers({"app_b": [["10.0.0.21", 21010]]}, socket=haproxy.path) == {"app_b": {"s2": "maint"}}
    assert haproxy.slots["app_b"][1]["admin"] == 1
    # a change also wrote the server-state file beside the socket, which a restart reads
    state = pathlib.Path(haproxy.path).parent / "server-state"
    assert state.read_text() == SHOW_SERVERS_STATE


@pytest.mark.parametrize("servers", [
    {"app_b": [["10.0.0.300", 1]]}, {"app_b": [["10.0.0.1", 0]]}, {"app_b": [["10.0.0.1", 70000]]},
    {"app_b": [["10.0.0.1", True]]}, {"app_b": [["10.0.0.1"]]}, {"app_b": "10.0.0.1:80"},
    {"app_b": [["10.0.0.1 ; shutdown sessions", 80]]}, {"app_b x": [["10.0.0.1", 80]]}, ["app_b"],
    {"app_b": [["fd00::1%x;disable frontend www", 80]]}, {"app_b": [["fd00::1", 80]]}])
def test_set_servers_refuses_what_is_no_address_and_port_and_sends_nothing(haproxy, servers):
    haproxy.slots = slot_servers("app_b", 4)
    with pytest.raises(CommandExecutionError) as err:
        hr.set_servers(servers, socket=haproxy.path)
    assert "\n" not in str(err.value)
    assert haproxy.write_commands() == []


def test_set_servers_refuses_more_servers_than_slots(haproxy):
    haproxy.slots = slot_servers("app_b", 1)
    with pytest.raises(CommandExecutionError, match="2 servers asked, it has 1 slots"):
        hr.set_servers({"app_b": [["10.0.0.21", 1], ["10.0.0.22", 1]]}, socket=haproxy.path)
    assert haproxy.write_commands() == []


def test_sync_servers_skips_backends_haproxy_does_not_have(haproxy):
    haproxy.slots = slot_servers("app_b", 2)
    done = hr.sync_servers({"app_b": [["10.0.0.21", 21010]], "app_z": [["10.0.0.21", 21000]]}, socket=haproxy.path)
    assert done == {"changes": {"app_b": {"s1": "10.0.0.21:21010", "s2": "maint"}}} or done == {
        "changes": {"app_b": {"s1": "10.0.0.21:21010"}}}
    assert haproxy.slots["app_b"][0]["addr"] == "10.0.0.21"


def test_set_routes_sets_the_servers_before_its_gate(haproxy, maps_dir):
    haproxy.slots = slot_servers("app_b", 2)
    _set_map(haproxy, maps_dir, {})
    with pytest.raises(CommandExecutionError, match="0 of 2 servers UP"):  # the fake's app_b is DOWN
        hr.set_routes({"app/internal": "app_b"}, socket=haproxy.path, maps_dir=str(maps_dir),
                      servers={"app_b": [["10.0.0.21", 21010]]}, require_up={"app_b": 2})
    sets = [c for c in haproxy.commands if c.startswith("set server")]
    assert sets[0] == "set server app_b/s1 addr 10.0.0.21 port 21010"
    assert haproxy.commands.index(sets[-1]) < haproxy.commands.index("show stat")
    assert not [c for c in haproxy.commands if " map " in c and not c.startswith("show")]  # no route changed


def test_set_routes_sets_adds_and_deletes(haproxy, maps_dir):
    _set_map(haproxy, maps_dir, {
        "shop.example.com": "app_a", "old.example.com": "app_a", "www.example.com": "www",
    })

    result = hr.set_routes(
        {"shop.example.com": "app_b", "api.example.com": "app_b", "old.example.com": None},
        socket=haproxy.path, maps_dir=str(maps_dir),
    )

    assert result["changes"] == {
        "shop.example.com": {"old": "app_a", "new": "app_b"},
        "api.example.com": {"old": None, "new": "app_b"},
        "old.example.com": {"old": "app_a", "new": None},
    }
    assert result["map"] == {"shop.example.com": "app_b", "www.example.com": "www", "api.example.com": "app_b"}
    assert sorted(haproxy.write_commands()) == sorted([
        f"set map {MAP_REF} shop.example.com app_b",
        f"add map {MAP_REF} api.example.com app_b",
        f"del map {MAP_REF} old.example.com",
    ])
    assert (maps_dir / "routes.map").read_text() == (
        "# managed by Salt (haproxy_runtime); changes will be overwritten\n"
        "api.example.com app_b\n"
        "shop.example.com app_b\n"
        "www.example.com www\n"
    )


def test_set_routes_twice_sends_no_writes_the_second_time(haproxy, maps_dir):
    _set_map(haproxy, maps_dir, {"shop.example.com": "app_a"})
    routes = {"shop.example.com": "app_b", "api.example.com": "app_b", "gone.example.com": None}
    hr.set_routes(routes, socket=haproxy.path, maps_dir=str(maps_dir))
    file_after_first = (maps_dir / "routes.map").stat().st_mtime_ns
    haproxy.commands.clear()

    again = hr.set_routes(routes, socket=haproxy.path, maps_dir=str(maps_dir))

    assert again["changes"] == {}
    assert again["map"] == {"shop.example.com": "app_b", "api.example.com": "app_b"}
    assert haproxy.commands == ["show backend", f"show map {MAP_REF}"]
    assert (maps_dir / "routes.map").stat().st_mtime_ns == file_after_first


def test_set_routes_raises_when_the_read_back_differs(haproxy, maps_dir):
    _set_map(haproxy, maps_dir, {"shop.example.com": "app_a"})
    haproxy.ignore_map_writes = True  # HAProxy answers OK but the map stays as it was

    with pytest.raises(hr.CommandExecutionError) as error:
        hr.set_routes({"shop.example.com": "app_b"}, socket=haproxy.path, maps_dir=str(maps_dir))

    assert str(error.value) == (
        f"HAProxy map {MAP_REF} after update: shop.example.com is 'app_a', expected 'app_b';"
        " run haproxy_runtime.sync_map or reload haproxy"
    )


def test_set_routes_on_a_map_haproxy_does_not_know(haproxy, maps_dir):
    haproxy.maps = {}

    with pytest.raises(hr.CommandExecutionError) as error:
        hr.set_routes({"shop.example.com": "app_b"}, socket=haproxy.path, maps_dir=str(maps_dir))

    assert str(error.value) == (
        f"HAProxy map {MAP_REF}: Unknown map identifier. Please use #<id> or <file>.;"
        " is the map loaded by haproxy.cfg under that path?"
    )
    assert not (maps_dir / "routes.map").exists()


def test_set_routes_refuses_keys_the_cli_would_split(haproxy, maps_dir):
    with pytest.raises(hr.CommandExecutionError, match="route key 'a b'"):
        hr.set_routes({"a b": "app_b"}, socket=haproxy.path, maps_dir=str(maps_dir))
    with pytest.raises(hr.CommandExecutionError, match="backend for x 'app_b;shutdown'"):
        hr.set_routes({"x": "app_b;shutdown"}, socket=haproxy.path, maps_dir=str(maps_dir))
    assert haproxy.commands == []


def test_show_map_uses_the_container_path(haproxy, maps_dir):
    _set_map(haproxy, maps_dir, {"shop.example.com": "app_a"})

    assert hr.show_map(socket=haproxy.path) == {"shop.example.com": "app_a"}
    assert haproxy.commands == [f"show map {MAP_REF}"]


def test_sync_map_makes_the_running_map_equal_to_the_file(haproxy, maps_dir):
    maps.atomic_write_map(str(maps_dir / "routes.map"), {"shop.example.com": "app_b", "api.example.com": "app_a"})
    haproxy.maps[MAP_REF] = [["shop.example.com", "app_a"], ["old.example.com", "app_a"]]

    result = hr.sync_map(socket=haproxy.path, maps_dir=str(maps_dir))

    assert result["changes"] == {
        "shop.example.com": {"old": "app_a", "new": "app_b"},
        "api.example.com": {"old": None, "new": "app_a"},
        "old.example.com": {"old": "app_a", "new": None},
    }
    assert result["map"] == {"shop.example.com": "app_b", "api.example.com": "app_a"}
    haproxy.commands.clear()
    assert hr.sync_map(socket=haproxy.path, maps_dir=str(maps_dir))["changes"] == {}
    assert haproxy.write_commands() == []


def test_sync_map_refuses_a_missing_file(haproxy, maps_dir):
    haproxy.maps[MAP_REF] = [["shop.example.com", "app_a"]]

    with pytest.raises(hr.CommandExecutionError, match="routes.map: not found"):
        hr.sync_map(socket=haproxy.path, maps_dir=str(maps_dir))
    assert haproxy.maps[MAP_REF] == [["shop.example.com", "app_a"]]


# --- state, info, config ------------------------------------------------------


def test_dump_server_state_writes_the_answer(haproxy, tmp_path):
    path = tmp_path / "server-state"

    result = hr.dump_server_state(path=str(path), socket=haproxy.path)

    assert path.read_text() == SHOW_SERVERS_STATE
    assert result == {"path": str(path), "servers": 3}
    assert not (tmp_path / "server-state.tmp").exists()


def test_dump_server_state_refuses_an_error_answer(haproxy, tmp_path):
    haproxy.servers_state = "Permission denied\n"
    path = tmp_path / "server-state"

    with pytest.raises(hr.CommandExecutionError) as error:
        hr.dump_server_state(path=str(path), socket=haproxy.path)

    assert str(error.value) == (
        "show servers state: expected a version line, got 'Permission denied';"
        " does the admin socket have 'level admin'?"
    )
    assert not path.exists()


def test_info_parses_key_value_lines(haproxy):
    result = hr.info(socket=haproxy.path)

    assert result["Version"] == "2.6.17-1ec0a3b"
    assert result["Uptime_sec"] == "316"
    assert len(result) == 11


# --- access log -------------------------------------------------------------


def test_access_log_keeps_the_lines_of_the_apps_backends(haproxy):
    lines = hr.access_log(["app_a", "app_b", "app_c"], socket=haproxy.path)

    assert haproxy.commands == ["show events pigeon_access"]
    assert lines == [haproxy.events[0], haproxy.events[1], haproxy.events[4]]  # not shop's, nor no stack's
    assert [line.split()[4] for line in lines] == ["app_b/s1", "app_a/s2", "app_b/s2"]


def test_access_log_gives_the_last_tail_lines(haproxy):
    haproxy.events = [f'04/Dec/2026:09:23:{n:02}.000 172.18.0.1:4{n:04} www~ app/production app_b/s1 200 '
                      f'0/0/0/1/1 128 ---- "GET /{n} HTTP/1.1"' for n in range(60)]

    assert hr.access_log(["app_b"], tail=3, socket=haproxy.path) == haproxy.events[-3:]
    assert hr.access_log("app_b", tail="100", socket=haproxy.path) == haproxy.events  # from Salt's CLI
    assert hr.access_log(["app_a"], socket=haproxy.path) == []


def test_access_log_skips_lines_of_another_shape(haproxy):
    haproxy.events = ["Proxy www started.", "", "a b c d app_b", haproxy.events[0]]

    assert hr.access_log(["app_b"], socket=haproxy.path) == [haproxy.events[3]]


@pytest.mark.parametrize("tail", [0, -1, "x", None])
def test_access_log_refuses_a_tail_that_is_no_count(haproxy, tail):
    with pytest.raises(hr.CommandExecutionError, match="give a whole number of lines from 1"):
        hr.access_log(["app_b"], tail=tail, socket=haproxy.path)
    assert haproxy.commands == []


def test_access_log_of_a_haproxy_cfg_without_the_ring_says_what_to_apply(haproxy, monkeypatch):
    monkeypatch.setattr(hr, "ACCESS_LOG", "pigeon_old")

    with pytest.raises(hr.CommandExecutionError) as error:
        hr.access_log(["app_b"], socket=haproxy.path)

    assert str(error.value) == ("HAProxy's access log pigeon_old: No such event sink; apply the haproxy "
                                "state to this minion (its haproxy.cfg has no such ring)")


def test_defaults_come_from_minion_config(haproxy, maps_dir, monkeypatch):
    config = {"haproxy_runtime:socket": haproxy.path, "haproxy_runtime:maps_dir": str(maps_dir)}
    monkeypatch.setattr(hr, "__salt__", {"config.get": lambda key, default=None: config.get(key, default)})

    result = hr.set_routes({"shop.example.com": "app_b"})

    assert result["changes"] == {"shop.example.com": {"old": None, "new": "app_b"}}
    assert maps.read_map_file(str(maps_dir / "routes.map")) == {"shop.example.com": "app_b"}
    assert hr.backends() == ["www", "app_a", "app_b"]


def test_set_routes_with_a_gate_that_fails_changes_nothing(haproxy, maps_dir):
    _set_map(haproxy, maps_dir, {"app/production": "app_a"})
    before = (maps_dir / "routes.map").read_text()
    haproxy.stats = [show_stat(
        backend_row("app_b"),
        server_row("app_b", "s1", "10.0.0.4:8080"),
        server_row("app_b", "s2", "10.0.0.5:8080", status="DOWN", check_status="L7STS", sid=2),
    )]

    with pytest.raises(hr.CommandExecutionError) as error:
        hr.set_routes({"app/production": "app_b"}, require_up={"app_b": 2},
                      socket=haproxy.path, maps_dir=str(maps_dir))

    assert "backend app_b: 1 of 2 servers UP" in str(error.value)
    assert (maps_dir / "routes.map").read_text() == before
    assert haproxy.write_commands() == []


def test_set_routes_with_a_gate_that_holds_switches(haproxy, maps_dir):
    _set_map(haproxy, maps_dir, {"app/production": "app_a"})
    haproxy.stats = [show_stat(
        backend_row("app_b"),
        server_row("app_b", "s1", "10.0.0.4:8080"),
        server_row("app_b", "s2", "10.0.0.5:8080", sid=2),
    )]

    result = hr.set_routes({"app/production": "app_b"}, require_up={"app_b": 2},
                           socket=haproxy.path, maps_dir=str(maps_dir))

    assert result["changes"] == {"app/production": {"old": "app_a", "new": "app_b"}}
    assert maps.read_map_file(str(maps_dir / "routes.map")) == {"app/production": "app_b"}


def _app_b_stats(second_status="DOWN", second_check="L4CON"):
    return show_stat(
        backend_row("app_b"),
        server_row("app_b", "s1", "10.0.0.4:8080"),
        server_row("app_b", "s2", "10.0.0.5:8080", status=second_status, check_status=second_check, sid=2),
    )


def test_set_routes_with_wait_routes_once_the_servers_come_up(haproxy, maps_dir):
    _set_map(haproxy, maps_dir, {"app/preview": "app_a"})
    haproxy.stats = [_app_b_stats()]
    coming_up = threading.Timer(0.25, lambda: setattr(haproxy, "stats", [_app_b_stats("UP", "L7OK")]))
    coming_up.start()

    started = time.monotonic()
    try:
        result = hr.set_routes({"app/preview": "app_b"}, require_up={"app_b": 2}, wait=3,
                               socket=haproxy.path, maps_dir=str(maps_dir))
    finally:
        coming_up.cancel()
    waited = time.monotonic() - started

    assert 0.25 <= waited < 2
    assert haproxy.commands.count("show stat") >= 2  # polled until the gate held
    assert result["changes"] == {"app/preview": {"old": "app_a", "new": "app_b"}}
    assert result["map"] == {"app/preview": "app_b"}
    assert maps.read_map_file(str(maps_dir / "routes.map")) == {"app/preview": "app_b"}
    assert haproxy.write_commands() == [f"set map {MAP_REF} app/preview app_b"]


def test_set_routes_without_wait_refuses_at_once(haproxy, maps_dir):
    _set_map(haproxy, maps_dir, {"app/production": "app_a"})
    before = (maps_dir / "routes.map").read_text()
    haproxy.stats = [_app_b_stats()]
    coming_up = threading.Timer(0.25, lambda: setattr(haproxy, "stats", [_app_b_stats("UP", "L7OK")]))
    coming_up.start()

    started = time.monotonic()
    try:
        with pytest.raises(hr.CommandExecutionError) as error:
            hr.set_routes({"app/production": "app_b"}, require_up={"app_b": 2}, wait=0,
                          socket=haproxy.path, maps_dir=str(maps_dir))
    finally:
        coming_up.cancel()

    assert time.monotonic() - started < 0.2
    assert str(error.value) == (
        "backend app_b: 1 of 2 servers UP and checked (s2 10.0.0.5:8080 DOWN L4CON);"
        " that stack is not healthy (see ./stacks.py status)"
    )
    assert haproxy.commands == ["show stat"]
    assert (maps_dir / "routes.map").read_text() == before
    assert haproxy.maps[MAP_REF] == [["app/production", "app_a"]]


def test_set_routes_with_wait_gives_up_when_the_servers_never_come_up(haproxy, maps_dir):
    _set_map(haproxy, maps_dir, {"app/preview": "app_a"})
    before = (maps_dir / "routes.map").read_text()
    haproxy.stats = [_app_b_stats()]

    started = time.monotonic()
    with pytest.raises(hr.CommandExecutionError) as error:
        hr.set_routes({"app/preview": "app_b"}, require_up={"app_b": 2}, wait=0.3,
                      socket=haproxy.path, maps_dir=str(maps_dir))
    waited = time.monotonic() - started

    assert 0.3 <= waited < 1.5
    assert str(error.value) == (
        "backend app_b: 1 of 2 servers UP and checked after 0.3s (s2 10.0.0.5:8080 DOWN L4CON);"
        " that stack is not healthy (see ./stacks.py status)"
    )
    assert haproxy.commands.count("show stat") >= 3
    assert haproxy.write_commands() == []
    assert (maps_dir / "routes.map").read_text() == before
    assert haproxy.maps[MAP_REF] == [["app/preview", "app_a"]]


# --- Salt's loader ------------------------------------------------------------

PUBLIC = ["access_log", "backend_sessions", "backends", "check_up", "dump_server_state", "info", "servers", "set_routes",
          "set_servers", "show_map", "stats", "sync_map", "sync_servers", "wait_drained", "wait_up"]


def test_virtual_needs_the_utils_modules(monkeypatch):
    assert hr.__virtual__() == "haproxy_runtime"

    monkeypatch.setattr(hr, "__utils__", utils_dunder(admin, health))
    assert hr.__virtual__() == (
        False, "haproxy_runtime: utils module haproxy_maps not found; run saltutil.sync_all"
    )


def _minion_functions(tmp_path, with_utils=True):
    """The minion's __salt__, from an extmods folder laid out as saltutil.sync_all leaves it:
    _modules/*.py in extmods/modules, _utils/*.py in extmods/utils."""
    extmods = tmp_path / "extmods"
    (extmods / "modules").mkdir(parents=True)
    (extmods / "utils").mkdir()
    shutil.copy(SALT_DIR / "_modules" / "haproxy_runtime.py", extmods / "modules")
    for name in ("haproxy_admin", "haproxy_maps", "haproxy_health") if with_utils else ():
        shutil.copy(SALT_DIR / "_utils" / f"{name}.py", extmods / "utils")
    opts = copy.deepcopy(salt.config.DEFAULT_MINION_OPTS)
    opts.update(id="lb-minion", cachedir=str(tmp_path / "cache"), extension_modules=str(extmods),
                utils_dirs=[str(extmods / "utils")], grains={}, pillar={})
    return salt.loader.minion_mods(opts, utils=salt.loader.utils(opts), whitelist=["haproxy_runtime", "config"])


def test_salt_loader_runs_the_module_with_its_utils(tmp_path, haproxy, maps_dir):
    _set_map(haproxy, maps_dir, {"app/production": "app_a"})
    haproxy.stats = [show_stat(backend_row("app_b"), server_row("app_b", "s1", "10.0.0.4:8080"))]
    functions = _minion_functions(tmp_path)

    result = functions["haproxy_runtime.set_routes"](
        {"app/production": "app_b"}, require_up={"app_b": 1}, socket=haproxy.path, maps_dir=str(maps_dir))

    assert result == {"changes": {"app/production": {"old": "app_a", "new": "app_b"}},
                      "map": {"app/production": "app_b"}}
    assert maps.read_map_file(str(maps_dir / "routes.map")) == {"app/production": "app_b"}
    assert functions["haproxy_runtime.info"](socket=haproxy.path)["Version"] == "2.6.17-1ec0a3b"
    assert sorted(key for key in list(functions._dict) if key.startswith("haproxy_runtime.")) == [
        f"haproxy_runtime.{name}" for name in PUBLIC
    ]
    with pytest.raises(hr.CommandExecutionError, match="backend app_c: not defined in HAProxy"):
        functions["haproxy_runtime.servers"]("app_c", socket=haproxy.path)


def test_salt_loader_refuses_the_module_without_its_utils(tmp_path):
    functions = _minion_functions(tmp_path, with_utils=False)

    assert "haproxy_runtime.info" not in functions
    assert "utils module haproxy_admin not found; run saltutil.sync_all" in functions.missing_fun_string(
        "haproxy_runtime.info")


def test_a_canary_or_maintenance_is_refused_where_haproxy_cfg_would_not_read_it(haproxy, maps_dir):
    """An HAProxy still on a configuration from before canary and maintenance (no marker
    backend): setting them would change nothing it serves, so set_routes refuses, in one line."""
    _set_map(haproxy, maps_dir, {"app/production": "app_a"})
    for routes in ({"app/canary": "10"}, {"app/maintenance": "300:ZG93bg=="}):
        with pytest.raises(hr.CommandExecutionError) as error:
            hr.set_routes(routes, socket=haproxy.path, maps_dir=str(maps_dir))
        assert str(error.value).startswith("this load balancer's haproxy.cfg predates canary and maintenance")
        assert haproxy.write_commands() == []
    haproxy.backends.append("pigeon_traffic_v1")
    hr.set_routes({"app/canary": "10"}, socket=haproxy.path, maps_dir=str(maps_dir))
    assert dict(haproxy.maps[MAP_REF])["app/canary"] == "10"
    hr.set_routes({"app/canary": None}, socket=haproxy.path, maps_dir=str(maps_dir))  # ending one: always
