"""
A fake HAProxy 2.6 admin socket for the unit tests of haproxy_runtime and its utils.

FakeHAProxy is a real AF_UNIX socket served by a thread, answering like
HAProxy 2.6's admin socket in non-interactive mode (one command per connection,
then close). Its map keeps HAProxy's behaviour: `add map` appends even when the
key exists, `set map` on a missing key and `del map` on a missing key answer
with an error line. `show events pigeon_access` answers the lines of ``events`` (the
access log's ring). The helpers build `show stat` answers column by column.
"""

import socket
import threading

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

# `show events pigeon_access`: the frontends' access log in haproxy.cfg's log-format (the lab's
# HAProxy 2.6 wrote these): date, client, frontend, route, backend/server, status, timers, bytes,
# termination state, request; HAProxy's answer ends with an empty line
ACCESS_LOG = [
    '04/Dec/2026:09:23:47.011 172.18.0.1:48016 www~ app/production app_b/s1 200 0/0/0/1/1 128 ---- "GET / HTTP/1.1"',
    '04/Dec/2026:09:23:47.027 172.18.0.1:48032 www~ app/internal app_a/s2 200 0/0/0/0/0 128 ---- "GET /x HTTP/1.1"',
    '04/Dec/2026:09:23:47.076 172.18.0.1:48052 www~ shop/production pigeon_no_stack/<NOSRV> 503 0/-1/-1/-1/0 126 '
    'LR-- "GET /none HTTP/1.1"',
    '04/Dec/2026:09:23:47.106 172.18.0.1:48056 www~ shop/production shop_a/s1 200 0/0/0/0/0 128 ---- "GET / HTTP/1.1"',
    '04/Dec/2026:09:23:47.107 172.18.0.1:48056 www~ app/production app_b/s2 502 0/0/0/-1/2 228 SH-- "GET /b HTTP/1.1"',
]

UNKNOWN_MAP = "Unknown map identifier. Please use #<id> or <file>.\n"


SERVERS_STATE_HEADER = (
    "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
    "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state "
    "srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port "
    "srv_check_addr srv_agent_addr srv_agent_port\n")  # HAProxy 2.6's, as the lab's answered


def slot_servers(backend, count, addr="127.0.0.1", port=8080):
    """A server-template's slots as haproxy.cfg makes them by address: `disabled` (admin state 4)."""
    return {backend: [{"name": f"s{n}", "addr": addr, "port": port, "admin": 4} for n in range(1, count + 1)]}


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
        self.slots = {}  # {backend: [{"name", "addr", "port", "admin"}]}: `show servers state <backend>`
        self.events = list(ACCESS_LOG)  # the lines of the ring pigeon_access, oldest first
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
        if words[:3] == ["show", "servers", "state"] and len(words) == 4:
            if words[3] not in self.backends:
                return "Can't find backend.\n"
            return SERVERS_STATE_HEADER + "".join(
                f"4 {words[3]} {n} {s['name']} {s['addr']} 2 {s['admin']} 1 1 5 1 0 3 6 0 0 0 localhost {s['port']} - 0 0 - - 0\n"
                for n, s in enumerate(self.slots.get(words[3], []), 1)) + "\n"
        if words[:2] == ["set", "server"] and len(words) >= 5:
            return self._server_command(words[2], words[3:])
        if words[:2] == ["show", "events"]:
            if words[2:] == ["pigeon_access"]:
                return "".join(f"{line}\n" for line in self.events) + "\n"
            return "No such event sink\n"
        if words[1:2] == ["map"] and words[0] in ("show", "set", "add", "del"):
            return self._map_command(words[0], words[2:])
        return "Unknown command. Please enter one of the following commands only :\n  help : this message\n"

    def _server_command(self, ref, args):
        backend, _, name = ref.partition("/")
        found = [s for s in self.slots.get(backend, []) if s["name"] == name]
        if not found:
            return "No such server.\n"
        server = found[0]
        if args[0] == "state" and args[1:] in (["ready"], ["maint"]):
            server["admin"] = 0 if args[1] == "ready" else 1
            return "\n"
        if args[0] == "addr" and len(args) == 4 and args[2] == "port":
            old = (server["addr"], server["port"])
            server["addr"], server["port"] = args[1], int(args[3])
            return (f"IP changed from '{old[0]}' to '{args[1]}', port changed from '{old[1]}' to '{args[3]}' "
                    "by 'stats socket command'\n")
        return "'set server <srv>' only supports 'agent', 'health', 'state', 'weight', 'addr', 'fqdn'\n"

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
