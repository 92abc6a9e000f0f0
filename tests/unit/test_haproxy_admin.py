"""
Unit tests for srv/salt/_utils/haproxy_admin.py: the admin socket client and its parsers.

The socket tests run against FakeHAProxy (tests/unit/fake_haproxy.py), a real
AF_UNIX socket answering like HAProxy 2.6's admin socket.
"""

import socket

import pytest

from fake_haproxy import (MAP_REF, SHOW_INFO, SHOW_SERVERS_STATE, STAT_HEADER, UNKNOWN_MAP, FakeHAProxy,
                          backend_row, frontend_row, maint_slot, server_row, show_stat)
from srv_modules import load, utils_dunder

ha = load("_utils/haproxy_admin.py", "haproxy_admin")


@pytest.fixture
def haproxy(tmp_path):
    fake = FakeHAProxy(tmp_path / "admin.sock")
    yield fake
    fake.stop()


# --- parsers --------------------------------------------------------------------


def test_parse_stat_keys_rows_by_header_names_and_strips():
    text = "\n".join([
        STAT_HEADER,
        backend_row("app_b", scur=3, qcur=1),
        server_row("app_b", "s1", "10.0.0.4:8080", scur=2),
    ]) + "\n\n"

    rows = ha.parse_stat(text)

    assert len(rows) == 2
    assert list(rows[0])[:3] == ["pxname", "svname", "qcur"]
    assert "" not in rows[0]  # the trailing comma makes no column
    assert rows[0]["svname"] == "BACKEND" and rows[0]["scur"] == "3" and rows[0]["qcur"] == "1"
    assert rows[1]["addr"] == "10.0.0.4:8080"
    assert rows[1]["status"] == "UP" and rows[1]["check_status"] == "L7OK" and rows[1]["type"] == "2"


def test_parse_stat_reads_quoted_fields_and_strips():
    text = "# pxname,svname,status,last_chk,\napp_b,s1, UP ,\"Layer7 wrong status, code 503\",\n"

    assert ha.parse_stat(text) == [
        {"pxname": "app_b", "svname": "s1", "status": "UP", "last_chk": "Layer7 wrong status, code 503"}
    ]


def test_parse_stat_rejects_an_answer_without_header():
    with pytest.raises(ValueError, match="Permission denied"):
        ha.parse_stat("Permission denied\n")


def test_parse_map_and_its_error_answer():
    text = "0x55d1c3a00000 shop.example.com app_a\n0x55d1c3a00001 api.example.com app_b\n\n"

    assert ha.parse_map(text) == {"shop.example.com": "app_a", "api.example.com": "app_b"}
    assert ha.parse_map("\n") == {}
    with pytest.raises(ValueError, match="Unknown map identifier"):
        ha.parse_map(UNKNOWN_MAP)


def test_backend_names():
    assert ha.backend_names("# name\nwww\napp_a\napp_b\n\n") == ["www", "app_a", "app_b"]
    with pytest.raises(ValueError):
        ha.backend_names("Unknown command.\n")


def test_backend_stat_reads_one_backend_its_sessions_and_servers():
    rows = ha.parse_stat(show_stat(
        frontend_row("app_b"),  # a `listen` section has a FRONTEND row of the same name
        backend_row("app_b", scur=3, qcur=1),
        server_row("app_b", "s1", "10.0.0.4:8080", scur=2, qcur=1),
        server_row("app_b", "s2", "10.0.0.5:8080", check_status="* L7OK", sid=2),
        maint_slot("app_b", "s3", 3),
        server_row("app_a", "s1", "10.0.0.2:8080"),
    ))

    assert ha.backend_stat(rows, "app_b") == {
        "sessions": {"scur": 3, "qcur": 1},
        "servers": [
            {"name": "s1", "addr": "10.0.0.4:8080", "status": "UP", "check_status": "L7OK", "scur": 2, "qcur": 1},
            {"name": "s2", "addr": "10.0.0.5:8080", "status": "UP", "check_status": "L7OK", "scur": 0, "qcur": 0},
            {"name": "s3", "addr": "", "status": "MAINT (resolution)", "check_status": "", "scur": 0, "qcur": 0},
        ],
    }
    assert ha.backend_stat(rows, "app_c") is None
    assert ha.backend_stat(rows, "www") is None  # a frontend is no backend


def test_parse_info_and_server_state_count():
    info = ha.parse_info(SHOW_INFO)

    assert info["Version"] == "2.6.17-1ec0a3b" and info["Uptime_sec"] == "316" and len(info) == 11
    assert ha.server_state_count(SHOW_SERVERS_STATE) == 3
    assert ha.server_state_count("1\n# be_id be_name\n\n") == 0
    assert ha.server_state_count("Permission denied\n") is None


# --- the socket -------------------------------------------------------------------


def test_socket_without_listener_is_connection_refused(tmp_path):
    path = tmp_path / "admin.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # the file exists but nobody listens, as after a container stop
    stale.close()

    with pytest.raises(ha.HAProxySocketError) as error:
        ha.AdminSocket(str(path), connect_wait=0).command("show info")

    assert str(error.value) == f"HAProxy admin socket {path}: connection refused; is the haproxy container running?"


def test_command_with_expect_empty_turns_an_answer_into_an_error(haproxy):
    admin = ha.AdminSocket(haproxy.path)

    with pytest.raises(ha.HAProxySocketError) as error:
        admin.command(f"del map {MAP_REF} nowhere.example.com", expect_empty=True)

    assert str(error.value) == f"HAProxy refused 'del map {MAP_REF} nowhere.example.com': Key not found."
    assert admin.command("show info", expect_empty=False) == SHOW_INFO



def test_command_refuses_a_command_that_spans_lines(haproxy):
    with pytest.raises(ha.HAProxySocketError, match="spans lines"):
        ha.AdminSocket(haproxy.path).command("show info\nshutdown sessions")
    assert haproxy.commands == []


def test_command_function_raises_the_callers_error_class(haproxy, tmp_path):
    class CallersError(Exception):
        pass

    assert ha.command(haproxy.path, "show info") == SHOW_INFO
    with pytest.raises(CallersError) as error:
        ha.command(haproxy.path, f"del map {MAP_REF} nowhere.example.com", expect_empty=True, error=CallersError)
    assert str(error.value) == f"HAProxy refused 'del map {MAP_REF} nowhere.example.com': Key not found."
    assert isinstance(error.value.__cause__, ha.HAProxySocketError)
    with pytest.raises(ha.HAProxySocketError, match="no such file"):
        ha.command(str(tmp_path / "missing.sock"), "show info", connect_wait=0)


def test_salt_reaches_every_function_it_needs_without_a_class():
    utils = utils_dunder(ha)

    assert {"haproxy_admin.command", "haproxy_admin.parse_stat", "haproxy_admin.backend_stat",
            "haproxy_admin.parse_map", "haproxy_admin.backend_names", "haproxy_admin.parse_info",
            "haproxy_admin.server_state_count"} <= set(utils)
    assert "haproxy_admin.AdminSocket" not in utils and "haproxy_admin.HAProxySocketError" not in utils
