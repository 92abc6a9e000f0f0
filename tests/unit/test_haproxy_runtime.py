"""
Unit tests for srv/salt/_modules/haproxy_runtime.py.

The module runs against FakeHAProxy: a real AF_UNIX socket served by a
thread, answering like HAProxy 2.6's admin socket in non-interactive mode
(one command per connection, then close). Its map keeps HAProxy's behaviour:
`add map` appends even when the key exists, `set map` on a missing key and
`del map` on a missing key answer with an error line.
"""

import logging
import socket
import threading
import time

import pytest

from srv_modules import load

hr = load("_modules/haproxy_runtime.py", "haproxy_runtime")

MAP_REF = "/usr/local/etc/haproxy/maps/routes.map"

# `show stat` columns of HAProxy 2.6, in order (the stats modules' extra
# columns, after a "-" column, are left out).
STAT_COLUMNS = (
    "pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,"
    "status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,"
    "type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,"
    "hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,"
    "comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,"
    "agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,"
    "agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,"
    "dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,"
    "ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,"
    "agg_server_check_status,agg_check_status,srid,sess_other,h1sess,h2sess,h3sess,req_other,h1req,"
    "h2req,h3req,proto"
).split(",")
STAT_HEADER = "# " + ",".join(STAT_COLUMNS) + ","


def _row(values):
    """One `show stat` line: the values in column order, with HAProxy's trailing comma."""
    unknown = set(values) - set(STAT_COLUMNS)
    assert not unknown, f"not a show stat column: {unknown}"
    return ",".join(str(values.get(column, "")) for column in STAT_COLUMNS) + ","


def frontend_row(pxname, scur=0):
    """A FRONTEND line as HAProxy prints it for an http frontend."""
    return _row({
        "pxname": pxname, "svname": "FRONTEND", "scur": scur, "smax": 12, "slim": 262120, "stot": 5210,
        "bin": 812344, "bout": 9914021, "dreq": 0, "dresp": 0, "ereq": 3, "status": "OPEN", "pid": 1,
        "iid": 2, "type": 0, "rate": 1, "rate_lim": 0, "rate_max": 40, "hrsp_2xx": 5100, "hrsp_4xx": 3,
        "req_rate": 1, "req_rate_max": 40, "req_tot": 5200, "mode": "http", "conn_rate": 1,
        "conn_rate_max": 40, "conn_tot": 5210,
    })


def backend_row(pxname, scur=0, qcur=0, status="UP", act=2):
    """A BACKEND line (type 1) as HAProxy prints it for an http backend."""
    return _row({
        "pxname": pxname, "svname": "BACKEND", "qcur": qcur, "qmax": 4, "scur": scur, "smax": 9,
        "slim": 26212, "stot": 5100, "bin": 812000, "bout": 9910000, "dreq": 0, "dresp": 0, "econ": 0,
        "eresp": 0, "wretr": 0, "wredis": 0, "status": status, "weight": act, "act": act, "bck": 0,
        "chkdown": 1, "lastchg": 316, "downtime": 3, "pid": 1, "iid": 4, "sid": 0, "lbtot": 5100,
        "type": 1, "rate": 1, "rate_max": 40, "req_tot": 5100, "lastsess": 0, "mode": "http",
        "algo": "roundrobin",
    })


def server_row(pxname, svname, addr, status="UP", check_status="L7OK", scur=0, qcur=0, sid=1):
    """A server line (type 2), with an httpchk health check."""
    checked = check_status not in ("", "INI")
    return _row({
        "pxname": pxname, "svname": svname, "qcur": qcur, "qmax": 0, "scur": scur, "smax": 5,
        "stot": 2550, "bin": 406000, "bout": 4955000, "dresp": 0, "econ": 0, "eresp": 0, "wretr": 0,
        "wredis": 0, "status": status, "weight": 1, "act": 1, "bck": 0, "chkfail": 0, "chkdown": 0,
        "lastchg": 316, "downtime": 0, "pid": 1, "iid": 4, "sid": sid, "lbtot": 2550, "type": 2,
        "rate": 0, "rate_max": 20, "check_status": check_status,
        "check_code": 200 if check_status == "L7OK" else (503 if check_status == "L7STS" else ""),
        "check_duration": 2 if checked else "", "lastsess": 1,
        "last_chk": {"L7OK": "OK", "L7STS": "Service Unavailable"}.get(check_status, ""),
        "check_desc": {"L7OK": "Layer7 check passed", "L7STS": "Layer7 wrong status"}.get(
            check_status, "Initializing"),
        "check_rise": 2, "check_fall": 3, "check_health": 4 if status.startswith("UP") else 0,
        "addr": addr, "mode": "http", "srid": 1,
    })


def maint_slot(pxname, svname, sid):
    """An unresolved server-template slot: MAINT (resolution), no address."""
    return _row({
        "pxname": pxname, "svname": svname, "qcur": 0, "qmax": 0, "scur": 0, "smax": 0, "stot": 0,
        "status": "MAINT (resolution)", "weight": 1, "act": 1, "bck": 0, "chkfail": 0, "chkdown": 0,
        "lastchg": 316, "downtime": 316, "pid": 1, "iid": 4, "sid": sid, "lbtot": 0, "type": 2,
        "check_rise": 2, "check_fall": 3, "check_health": 0, "mode": "http", "srid": 1,
    })


def show_stat(*lines):
    """A whole `show stat` answer: header, lines, then HAProxy's empty line."""
    return "\n".join([STAT_HEADER, frontend_row("www"), *lines]) + "\n\n"


SHOW_INFO = (
    "Name: HAProxy\nVersion: 2.6.17-1ec0a3b\nRelease_date: 2024/04/05\nNbthread: 2\nNbproc: 1\n"
    "Process_num: 1\nPid: 8\nUptime: 0d 0h05m16s\nUptime_sec: 316\nMaxconn: 262124\nCurrConns: 1\n\n"
)

SHOW_SERVERS_STATE = (
    "1\n"
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
    "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state "
    "srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl "
    "srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n"
    "4 app_b 1 s1 10.0.0.4 2 0 1 1 316 15 3 4 6 0 0 0 app_b 8080 - 0 0 - - 0\n"
    "4 app_b 2 s2 10.0.0.5 2 0 1 1 316 15 3 4 6 0 0 0 app_b 8080 - 0 0 - - 0\n"
    "4 app_b 3 s3 - 0 32 1 1 316 1 0 0 14 0 0 0 app_b 8080 - 0 0 - - 0\n\n"
)

UNKNOWN_MAP = "Unknown map identifier. Please use #<id> or <file>.\n"


class FakeHAProxy:
    """HAProxy's admin socket in non-interactive mode, served by a thread."""

    def __init__(self, path):
        self.path = str(path)
        self.commands = []
        self.stats = [show_stat(backend_row("app_a", act=0, status="DOWN"), backend_row("app_b", act=0))]
        self.backends = ["www", "app_a", "app_b"]
        self.maps = {MAP_REF: []}  # list of [key, value]: HAProxy keeps duplicates
        self.ignore_map_writes = False
        self.servers_state = SHOW_SERVERS_STATE
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(8)
        self._server.settimeout(0.05)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def stop(self):
        """Stop serving and remove the socket."""
        self._stopped.set()
        self._thread.join(timeout=2)
        self._server.close()

    def write_commands(self):
        """The commands sent so far that change a map."""
        return [cmd for cmd in self.commands if cmd.split(" ")[0] in ("set", "add", "del")]

    def _serve(self):
        while not self._stopped.is_set():
            try:
                conn, _ = self._server.accept()
            except socket.timeout:
                continue
            with conn:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                cmd = data.decode().strip()
                self.commands.append(cmd)
                conn.sendall(self._answer(cmd).encode())

    def _answer(self, cmd):
        words = cmd.split()
        if cmd == "show stat":
            return self.stats.pop(0) if len(self.stats) > 1 else self.stats[0]
        if cmd == "show backend":
            return "# name\n" + "".join(f"{name}\n" for name in self.backends) + "\n"
        if cmd == "show info":
            return SHOW_INFO
        if cmd == "show servers state":
            return self.servers_state
        if words[1:2] == ["map"] and words[0] in ("show", "set", "add", "del"):
            return self._map_command(words[0], words[2:])
        return "Unknown command. Please enter one of the following commands only :\n  help : this message\n"

    def _map_command(self, verb, args):
        entries = self.maps.get(args[0]) if args else None
        if entries is None:
            return UNKNOWN_MAP
        if verb == "show":
            lines = [f"0x55d1c3a0{index:04x} {key} {value}\n" for index, (key, value) in enumerate(entries)]
            return "".join(lines) + "\n"
        key = args[1]
        present = [entry for entry in entries if entry[0] == key]
        if verb == "set" and not present:
            return "entry not found.\n"
        if verb == "del" and not present:
            return "Key not found.\n"
        if not self.ignore_map_writes:
            if verb == "add":
                entries.append([key, args[2]])
            elif verb == "set":
                for entry in present:
                    entry[1] = args[2]
            else:
                entries[:] = [entry for entry in entries if entry[0] != key]
        return "\n"


@pytest.fixture(autouse=True)
def salt_dunder(monkeypatch):
    """A __salt__ whose config.get always returns the default, as on a bare minion."""
    monkeypatch.setattr(hr, "__salt__", {"config.get": lambda key, default=None: default}, raising=False)


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
    hr.atomic_write_map(str(maps_dir / "routes.map"), entries)
    fake.maps[MAP_REF] = [[key, value] for key, value in entries.items()]


# --- parsers and files ------------------------------------------------------


def test_parse_stat_keys_rows_by_header_names_and_strips():
    text = "\n".join([
        STAT_HEADER,
        backend_row("app_b", scur=3, qcur=1),
        server_row("app_b", "s1", "10.0.0.4:8080", scur=2),
    ]) + "\n\n"

    rows = hr.parse_stat(text)

    assert len(rows) == 2
    assert list(rows[0])[:3] == ["pxname", "svname", "qcur"]
    assert "" not in rows[0]  # the trailing comma makes no column
    assert rows[0]["svname"] == "BACKEND" and rows[0]["scur"] == "3" and rows[0]["qcur"] == "1"
    assert rows[1]["addr"] == "10.0.0.4:8080"
    assert rows[1]["status"] == "UP" and rows[1]["check_status"] == "L7OK" and rows[1]["type"] == "2"


def test_parse_stat_reads_quoted_fields_and_strips():
    text = "# pxname,svname,status,last_chk,\napp_b,s1, UP ,\"Layer7 wrong status, code 503\",\n"

    assert hr.parse_stat(text) == [
        {"pxname": "app_b", "svname": "s1", "status": "UP", "last_chk": "Layer7 wrong status, code 503"}
    ]


def test_parse_stat_rejects_an_answer_without_header():
    with pytest.raises(ValueError, match="Permission denied"):
        hr.parse_stat("Permission denied\n")


def test_parse_map_and_its_error_answer():
    text = "0x55d1c3a00000 shop.example.com app_a\n0x55d1c3a00001 api.example.com app_b\n\n"

    assert hr.parse_map(text) == {"shop.example.com": "app_a", "api.example.com": "app_b"}
    assert hr.parse_map("\n") == {}
    with pytest.raises(ValueError, match="Unknown map identifier"):
        hr.parse_map(UNKNOWN_MAP)


def test_backend_names():
    assert hr.backend_names("# name\nwww\napp_a\napp_b\n\n") == ["www", "app_a", "app_b"]
    with pytest.raises(ValueError):
        hr.backend_names("Unknown command.\n")


def test_atomic_write_map_writes_sorted_lines_under_a_header(tmp_path):
    path = tmp_path / "routes.map"
    path.write_text("stale content\n")

    hr.atomic_write_map(str(path), {"shop.example.com": "app_b", "api.example.com": "app_a"})

    assert path.read_text() == (
        "# managed by Salt (haproxy_runtime); changes will be overwritten\n"
        "api.example.com app_a\n"
        "shop.example.com app_b\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["routes.map"]


def test_read_map_file_skips_comments_and_blank_lines(tmp_path):
    path = tmp_path / "routes.map"
    path.write_text("# a comment\n\napi.example.com   app_a\n  shop.example.com app_b\n")

    assert hr.read_map_file(str(path)) == {"api.example.com": "app_a", "shop.example.com": "app_b"}
    assert hr.read_map_file(str(tmp_path / "missing.map")) == {}


# --- socket errors ------------------------------------------------------------


def test_missing_socket_says_which_socket_and_what_to_check(tmp_path, monkeypatch):
    path = tmp_path / "admin.sock"
    monkeypatch.setattr(hr, "CONNECT_WAIT", 0.3)

    with pytest.raises(hr.HAProxySocketError) as raw:
        hr.AdminSocket(str(path), connect_wait=0).command("show info")
    with pytest.raises(hr.CommandExecutionError) as salt_error:
        hr.backends(socket=str(path))

    expected = f"HAProxy admin socket {path}: no such file; is the haproxy container running?"
    assert str(raw.value) == expected
    assert str(salt_error.value) == expected


def test_socket_without_listener_is_connection_refused(tmp_path):
    path = tmp_path / "admin.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # the file exists but nobody listens, as after a container stop
    stale.close()

    with pytest.raises(hr.HAProxySocketError) as error:
        hr.AdminSocket(str(path), connect_wait=0).command("show info")

    assert str(error.value) == f"HAProxy admin socket {path}: connection refused; is the haproxy container running?"


def test_command_with_expect_empty_turns_an_answer_into_an_error(haproxy):
    admin = hr.AdminSocket(haproxy.path)

    with pytest.raises(hr.HAProxySocketError) as error:
        admin.command(f"del map {MAP_REF} nowhere.example.com", expect_empty=True)

    assert str(error.value) == f"HAProxy refused 'del map {MAP_REF} nowhere.example.com': Key not found."
    assert admin.command("show info", expect_empty=False) == SHOW_INFO


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
    _set_map(haproxy, maps_dir, {"shop.example.com": "app_a"})
    before = (maps_dir / "routes.map").read_text()

    with pytest.raises(hr.CommandExecutionError) as error:
        hr.set_routes({"shop.example.com": "app_c", "api.example.com": "app_b"},
                      socket=haproxy.path, maps_dir=str(maps_dir))

    assert str(error.value) == (
        "backend app_c: not defined in HAProxy; add it to haproxy.cfg and reload before routing to it"
    )
    assert (maps_dir / "routes.map").read_text() == before
    assert haproxy.maps[MAP_REF] == [["shop.example.com", "app_a"]]
    assert haproxy.write_commands() == []


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
    hr.atomic_write_map(str(maps_dir / "routes.map"), {"shop.example.com": "app_b", "api.example.com": "app_a"})
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


def test_defaults_come_from_minion_config(haproxy, maps_dir, monkeypatch):
    config = {"haproxy_runtime:socket": haproxy.path, "haproxy_runtime:maps_dir": str(maps_dir)}
    monkeypatch.setattr(hr, "__salt__", {"config.get": lambda key, default=None: config.get(key, default)})

    result = hr.set_routes({"shop.example.com": "app_b"})

    assert result["changes"] == {"shop.example.com": {"old": None, "new": "app_b"}}
    assert hr.read_map_file(str(maps_dir / "routes.map")) == {"shop.example.com": "app_b"}
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
    assert hr.read_map_file(str(maps_dir / "routes.map")) == {"app/production": "app_b"}


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
    assert hr.read_map_file(str(maps_dir / "routes.map")) == {"app/preview": "app_b"}
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
