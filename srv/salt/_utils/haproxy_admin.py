"""
HAProxy 2.6's admin (stats) socket: the client, and parsers of its answers.

HAProxy runs in a docker container whose admin socket is bind-mounted on the
minion. Each command opens its own connection (HAProxy's non-interactive mode:
one command, one answer, then HAProxy closes the connection).

Pure Python, no Salt. The execution module ``haproxy_runtime``
(``_modules/haproxy_runtime.py``) calls it as ``__utils__["haproxy_admin.command"]``,
``__utils__["haproxy_admin.parse_stat"]`` ...; unit tests import it by path.
Salt's loader hands out only the functions of a utils module, never its classes
or constants: ``command`` is the door to ``AdminSocket`` for Salt modules, and
``backend_stat`` reads the stat types for them.
"""

import csv
import socket as socketlib
import time

# Values of the "type" column of `show stat`.
STAT_TYPE_BACKEND = "1"
STAT_TYPE_SERVER = "2"


def __virtual__():
    """Only the standard library is needed."""
    return True


class HAProxySocketError(Exception):
    """The admin socket could not be used, or HAProxy refused a command."""


class AdminSocket:
    """A client for HAProxy's admin socket, one connection per command."""

    def __init__(self, path, timeout=5.0, connect_wait=5.0):
        self.path = path
        self.timeout = timeout
        # HAProxy that is starting or reloading has no socket for a moment: retry that long
        self.connect_wait = connect_wait

    def _connect(self, sock):
        deadline = time.monotonic() + self.connect_wait
        while True:
            try:
                sock.connect(self.path)
                return
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    def command(self, cmd, expect_empty=False):
        """
        Send one command and return HAProxy's whole answer as text.

        With ``expect_empty``, any answer other than whitespace is an error:
        that is how HAProxy reports a failed ``set/add/del map``.
        """
        if "\n" in cmd:
            raise HAProxySocketError(f"HAProxy command {cmd!r} spans lines; send one command at a time")
        sock = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            self._connect(sock)
            sock.sendall(cmd.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except FileNotFoundError as exc:
            raise HAProxySocketError(
                f"HAProxy admin socket {self.path}: no such file; is the haproxy container running?"
            ) from exc
        except ConnectionRefusedError as exc:
            raise HAProxySocketError(
                f"HAProxy admin socket {self.path}: connection refused; is the haproxy container running?"
            ) from exc
        except PermissionError as exc:
            raise HAProxySocketError(
                f"HAProxy admin socket {self.path}: permission denied; run as root or fix the socket's mode"
            ) from exc
        except TimeoutError as exc:
            raise HAProxySocketError(
                f"HAProxy admin socket {self.path}: no answer to {cmd!r} within {self.timeout:g}s;"
                " is HAProxy stuck or overloaded?"
            ) from exc
        except OSError as exc:
            raise HAProxySocketError(
                f"HAProxy admin socket {self.path}: {exc.strerror or exc}; is the haproxy container running?"
            ) from exc
        finally:
            sock.close()
        answer = b"".join(chunks).decode("utf-8", "replace")
        if expect_empty and answer.strip():
            raise HAProxySocketError(f"HAProxy refused {cmd!r}: {' '.join(answer.split())}")
        return answer


def command(path, cmd, expect_empty=False, timeout=5.0, connect_wait=5.0, error=HAProxySocketError):
    """
    Run one command on the admin socket at ``path`` (see ``AdminSocket.command``).

    A failure raises ``error`` with HAProxySocketError's message, chained to it:
    a Salt module passes its own exception class (CommandExecutionError), since
    it cannot reach HAProxySocketError through ``__utils__`` to catch it.
    """
    try:
        return AdminSocket(path, timeout=timeout, connect_wait=connect_wait).command(cmd, expect_empty=expect_empty)
    except HAProxySocketError as exc:
        if error is HAProxySocketError:
            raise
        raise error(str(exc)) from exc


def parse_stat(csv_text):
    """
    Parse `show stat` CSV into one dict per row, keyed by the header's names.

    The header is the first line and starts with ``# ``; every line ends with
    a trailing comma. Values are kept as strings, only stripped. HAProxy
    quotes fields that contain commas, so this goes through the csv module.
    """
    lines = csv_text.strip("\n").splitlines()
    if not lines or not lines[0].startswith("# "):
        raise ValueError(f"show stat: expected a '# pxname,...' header, got {csv_text[:80]!r}")
    reader = csv.reader(lines)
    header = [name.strip() for name in next(reader)]
    header[0] = header[0][2:].strip()
    rows = []
    for fields in reader:
        if not fields:
            continue
        rows.append({name: value.strip() for name, value in zip(header, fields) if name})
    return rows


def _int(value):
    """Convert a `show stat` counter to int; HAProxy leaves unset ones empty."""
    return int(value) if value else 0


def backend_stat(rows, backend):
    """
    Read one backend out of parsed `show stat` rows.

    Returns {"sessions": {"scur", "qcur"}, "servers": [...]}, or None when no
    BACKEND row has that name (HAProxy does not know the backend). Each server
    is {name, addr, status, check_status, scur, qcur}: ``check_status`` loses
    the ``* `` that HAProxy puts in front while a check is running (the value is
    still the last result); ``addr`` is empty for a server-template slot that no
    address was resolved for.
    """
    rows = [row for row in rows if row.get("pxname") == backend]
    row = next((row for row in rows if row.get("type") == STAT_TYPE_BACKEND), None)
    if row is None:
        return None
    return {
        "sessions": {"scur": _int(row.get("scur")), "qcur": _int(row.get("qcur"))},
        "servers": [
            {
                "name": row["svname"],
                "addr": row.get("addr", ""),
                "status": row.get("status", ""),
                "check_status": row.get("check_status", "").removeprefix("* "),
                "scur": _int(row.get("scur")),
                "qcur": _int(row.get("qcur")),
            }
            for row in rows
            if row.get("type") == STAT_TYPE_SERVER
        ],
    }


COUNTERS = ("scur", "stot", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "econ", "eresp", "wretr", "wredis",
            "rtime")  # rtime: the average response time (ms) of the last 1024 requests


def backend_counters(rows, backend):
    """
    A backend's traffic counters out of parsed `show stat` rows, or None when no BACKEND row
    has that name: {"status", and the integers of COUNTERS: current and total sessions,
    responses by class, connection and response errors, retries, redispatches}.
    """
    row = next((r for r in rows if r.get("pxname") == backend and r.get("type") == STAT_TYPE_BACKEND), None)
    if row is None:
        return None
    return dict({name: _int(row.get(name)) for name in COUNTERS}, status=row.get("status", ""))


def parse_map(text):
    """
    Parse `show map <file>` output (``0x55d... key value`` lines) into {key: value}.

    Raises ValueError on a line that is not an entry, such as HAProxy's
    "Unknown map identifier" answer.
    """
    entries = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("0x"):
            raise ValueError(line.strip())
        entries[parts[1]] = parts[2].strip() if len(parts) == 3 else ""
    return entries


def backend_names(text):
    """Parse `show backend` output (a ``# name`` line, then one name a line)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != "# name":
        raise ValueError(f"show backend: expected a '# name' header, got {text[:80]!r}")
    return lines[1:]


def parse_info(text):
    """Parse `show info` output (``Key: value`` lines) into {key: value}; values are strings."""
    result = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            result[key.strip()] = value.strip()
    return result


def server_state_count(text):
    """
    Count the servers in a `show servers state` answer; None if it is not one.

    The answer starts with a version line (a number), then ``#`` comment lines
    and one line a server.
    """
    if not text.split("\n", 1)[0].strip().isdigit():
        return None
    return len([line for line in text.splitlines()[1:] if line.strip() and not line.startswith("#")])


# srv_admin_state flags of `show servers state` that keep a server out of service: forced,
# inherited, configured (`disabled`), resolution and hostname maintenance
MAINT_FLAGS = 0x01 | 0x02 | 0x04 | 0x40 | 0x80


def parse_servers_state(text, backend):
    """
    The servers of ``backend`` in a `show servers state` answer, in their configured order:
    [{"name", "addr", "port" (int), "maint" (bool)}]. Raises ValueError when the answer is
    not one (no version line, or a server line without the documented columns).
    """
    if server_state_count(text) is None:
        raise ValueError(f"show servers state: expected a version line, got {' '.join(text.split())[:80]!r}")
    columns = None
    found = []
    for line in text.splitlines()[1:]:
        if line.startswith("#"):
            columns = line.lstrip("# ").split()
            continue
        if not line.strip() or columns is None:
            continue
        row = dict(zip(columns, line.split()))
        if row.get("be_name") != backend:
            continue
        try:
            found.append({"name": row["srv_name"], "addr": row["srv_addr"], "port": int(row["srv_port"]),
                          "maint": bool(int(row["srv_admin_state"]) & MAINT_FLAGS)})
        except (KeyError, ValueError) as exc:
            raise ValueError(f"show servers state: a line of {backend} without {exc}") from None
    return found


def access_lines(text, backends, app=None):
    """
    The lines of a `show events <ring>` answer (the access log of haproxy.cfg, one request a
    line: date, client, frontend, route, ``backend/server``, status ...) whose backend is one of
    ``backends``, oldest first. Other lines (another app's, HAProxy's own messages) are left
    out; with ``app``, also the requests routed for that app that no stack served (its route
    ``<app>/...`` going to ``pigeon_no_stack``: the 503s of an outage). An answer that is no
    event list ("No such event sink") raises ValueError.
    """
    if text.startswith(("No such event sink", "Unknown command")):
        raise ValueError(text.strip().splitlines()[0])
    wanted = set(backends)
    found = []
    for line in text.splitlines():
        fields = line.split(" ", 5)
        if len(fields) > 5 and (fields[4].partition("/")[0] in wanted or app is not None
                                and fields[3].startswith(f"{app}/") and fields[4].startswith("pigeon_no_stack/")):
            found.append(line)
    return found
