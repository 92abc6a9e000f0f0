"""
Talk to HAProxy 2.6's admin (stats) socket: server health, draining and routes.

HAProxy runs in a docker container whose admin socket is bind-mounted on the
minion. Each command opens its own connection (HAProxy's non-interactive mode:
one command, one answer, then HAProxy closes the connection).

Routes live in a map file (``key backend`` lines). The folder holding the map
files is bind-mounted into the container, so the module writes the host file
(which survives a reload) and changes the running map through the socket with
the path HAProxy knows it by (which takes effect at once).

Minion config (all optional):

.. code-block:: yaml

    haproxy_runtime:
      socket: /srv/pigeon/haproxy/run/admin.sock
      maps_dir: /srv/pigeon/haproxy/etc/maps
      maps_dir_in_container: /usr/local/etc/haproxy/maps

The first part of this file (socket client, parsers, map file I/O) uses no
Salt dunders, so it can be tested on its own.
"""

import contextlib
import csv
import fcntl
import logging
import os
import tempfile
import posixpath
import socket as socketlib
import time

try:
    from salt.exceptions import CommandExecutionError
except ImportError:  # the pure part stays importable without Salt

    class CommandExecutionError(Exception):
        """Stand-in for salt.exceptions.CommandExecutionError."""


log = logging.getLogger(__name__)

__virtualname__ = "haproxy_runtime"

# Only these are Salt functions; the pure helpers below are not for the CLI.
__load__ = [
    "servers",
    "backend_sessions",
    "wait_up",
    "check_up",
    "wait_drained",
    "backends",
    "show_map",
    "set_routes",
    "sync_map",
    "dump_server_state",
    "info",
]

DEFAULT_SOCKET = "/srv/pigeon/haproxy/run/admin.sock"
DEFAULT_MAPS_DIR = "/srv/pigeon/haproxy/etc/maps"
DEFAULT_MAPS_DIR_IN_CONTAINER = "/usr/local/etc/haproxy/maps"
DEFAULT_SERVER_STATE = "/srv/pigeon/haproxy/run/server-state"
CONNECT_WAIT = 5.0  # seconds to wait for the socket of an HAProxy that is starting

MAP_HEADER = "# managed by Salt (haproxy_runtime); changes will be overwritten"

# Values of the "type" column of `show stat`.
STAT_TYPE_BACKEND = "1"
STAT_TYPE_SERVER = "2"


def __virtual__():
    """Only the standard library is needed."""
    return True


# ---------------------------------------------------------------------------
# Pure part: no Salt dunders below this line until the Salt-facing section.
# ---------------------------------------------------------------------------


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


def _atomic_write(path, text):
    """Write text to path through a fsynced temporary file of its own and os.replace."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-",
                               suffix="-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def map_lock(path):
    """Serialize the writers of one map file (every app's routes share it): an flock on
    ``<path>.lock``, held for the read, the write and the runtime change."""
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def atomic_write_map(path, entries):
    """Write a map file of ``key value`` lines sorted by key, atomically."""
    lines = [MAP_HEADER] + [f"{key} {entries[key]}" for key in sorted(entries)]
    _atomic_write(path, "\n".join(lines) + "\n")


def read_map_file(path):
    """Read a map file into {key: value}; a missing file is an empty map."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return {}
    entries = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        entries[parts[0]] = parts[1].strip() if len(parts) == 2 else ""
    return entries


# ---------------------------------------------------------------------------
# Salt-facing part.
# ---------------------------------------------------------------------------


def _config(key, default):
    """Return the minion's ``haproxy_runtime:<key>``, or default outside Salt."""
    try:
        return __salt__["config.get"](f"haproxy_runtime:{key}", default)
    except NameError:
        return default


def _command(socket, cmd, expect_empty=False):
    """Run one admin socket command; socket failures become CommandExecutionError."""
    path = socket or _config("socket", DEFAULT_SOCKET)
    try:
        return AdminSocket(path, connect_wait=CONNECT_WAIT).command(cmd, expect_empty=expect_empty)
    except HAProxySocketError as exc:
        raise CommandExecutionError(str(exc)) from exc


def _stat_rows(backend, socket):
    """Return the `show stat` rows of one backend (its BACKEND row included)."""
    try:
        rows = parse_stat(_command(socket, "show stat"))
    except ValueError as exc:
        raise CommandExecutionError(f"{exc}; does the admin socket have 'level admin'?") from exc
    rows = [row for row in rows if row.get("pxname") == backend]
    if not any(row.get("type") == STAT_TYPE_BACKEND for row in rows):
        raise CommandExecutionError(
            f"backend {backend}: not defined in HAProxy; check the name with haproxy_runtime.backends"
        )
    return rows


def _int(value):
    """Convert a `show stat` counter to int; HAProxy leaves unset ones empty."""
    return int(value) if value else 0


def servers(backend, socket=None):
    """
    List the servers of a backend with their state.

    Each is {name, addr, status, check_status, scur, qcur}. ``check_status``
    loses the ``* `` that HAProxy puts in front while a check is running (the
    value is still the last result). ``addr`` is empty for a server-template
    slot that no address was resolved for.

    CLI Example:

    .. code-block:: bash

        salt '*' haproxy_runtime.servers app_b
    """
    return [
        {
            "name": row["svname"],
            "addr": row.get("addr", ""),
            "status": row.get("status", ""),
            "check_status": row.get("check_status", "").removeprefix("* "),
            "scur": _int(row.get("scur")),
            "qcur": _int(row.get("qcur")),
        }
        for row in _stat_rows(backend, socket)
        if row.get("type") == STAT_TYPE_SERVER
    ]


def backend_sessions(backend, socket=None):
    """
    Return the current and queued sessions of a backend: {"scur": n, "qcur": n}.

    CLI Example:

    .. code-block:: bash

        salt '*' haproxy_runtime.backend_sessions app_a
    """
    row = next(row for row in _stat_rows(backend, socket) if row.get("type") == STAT_TYPE_BACKEND)
    return {"scur": _int(row.get("scur")), "qcur": _int(row.get("qcur"))}


def _is_up(server):
    """True if HAProxy sends traffic to the server (UP, also "UP 1/3" going down)."""
    return server["status"].startswith("UP")


def _is_checked(server):
    """True if the server is UP and its last health check passed at layer 7."""
    return _is_up(server) and server["check_status"] == "L7OK"


def _healthy(servers_, count):
    """True if exactly count servers are UP, all of them checked."""
    up = [s for s in servers_ if _is_up(s)]
    return len(up) == count and all(_is_checked(s) for s in up)


def _health_error(backend, count, servers_, waited=None):
    """Build the one-line message for a backend that is not healthy."""
    checked = [s for s in servers_ if _is_checked(s)]
    unchecked = [s for s in servers_ if not _is_checked(s) and not s["status"].startswith("MAINT")]
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


def _healthy_result(backend, servers_):
    """The return value of wait_up and check_up."""
    return {
        "backend": backend,
        "up": sum(1 for s in servers_ if _is_checked(s)),
        "servers": servers_,
    }


def wait_up(backend, count, timeout=60, interval=0.1, socket=None):
    """
    Wait until exactly ``count`` servers of a backend are UP with a passed check.

    A server counts when its status starts with UP and its last check is
    L7OK: a freshly resolved server is UP before any check ran, so UP alone
    proves nothing. Slots in MAINT (server-template slots without an
    address) are ignored. More UP servers than ``count`` (old containers
    still resolved) also means waiting. Raises on timeout.

    CLI Example:

    .. code-block:: bash

        salt '*' haproxy_runtime.wait_up app_b 2 timeout=30
    """
    count = int(count)
    deadline = time.monotonic() + float(timeout)
    while True:
        current = servers(backend, socket=socket)
        if _healthy(current, count):
            return _healthy_result(backend, current)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CommandExecutionError(_health_error(backend, count, current, waited=float(timeout)))
        time.sleep(min(float(interval), remaining))


def check_up(backend, count, socket=None):
    """
    Check once that exactly ``count`` servers of a backend are UP and checked.

    Same condition as wait_up, without waiting; raises if it is not met.

    CLI Example:

    .. code-block:: bash

        salt '*' haproxy_runtime.check_up app_b 2
    """
    count = int(count)
    current = servers(backend, socket=socket)
    if not _healthy(current, count):
        raise CommandExecutionError(_health_error(backend, count, current))
    return _healthy_result(backend, current)


def wait_drained(backend, timeout=30, interval=0.2, socket=None):
    """
    Wait until a backend has no current and no queued sessions.

    Draining is bounded: on timeout this logs a warning and returns
    ``drained: False`` with the sessions left, so the caller can proceed.

    CLI Example:

    .. code-block:: bash

        salt '*' haproxy_runtime.wait_drained app_a timeout=30
    """
    start = time.monotonic()
    deadline = start + float(timeout)
    while True:
        sessions = backend_sessions(backend, socket=socket)
        waited = round(time.monotonic() - start, 3)
        if sessions["scur"] == 0 and sessions["qcur"] == 0:
            return {"backend": backend, "drained": True, "waited": waited, **sessions}
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            log.warning(
                "backend %s: still %s sessions and %s queued after %ss; proceeding without full drain",
                backend,
                sessions["scur"],
                sessions["qcur"],
                timeout,
            )
            return {"backend": backend, "drained": False, "waited": waited, **sessions}
        time.sleep(min(float(interval), remaining))


def backends(socket=None):
    """
    List the backend names HAProxy knows.

    CLI Example:

    .. code-block:: bash

        salt '*' haproxy_runtime.backends
    """
    try:
        return backend_names(_command(socket, "show backend"))
    except ValueError as exc:
        raise CommandExecutionError(f"{exc}; does the admin socket have 'level admin'?") from exc


def _map_paths(map_name, maps_dir, maps_dir_in_container):
    """Return (host path, path HAProxy knows) of a map named by its file name."""
    if not map_name or "/" in map_name:
        raise CommandExecutionError(f"map name {map_name!r}: give a file name such as routes.map, not a path")
    host_dir = maps_dir or _config("maps_dir", DEFAULT_MAPS_DIR)
    container_dir = maps_dir_in_container or _config("maps_dir_in_container", DEFAULT_MAPS_DIR_IN_CONTAINER)
    return os.path.join(host_dir, map_name), posixpath.join(container_dir, map_name)


def _runtime_map(map_ref, socket):
    """Return HAProxy's running map at map_ref as {key: value}."""
    answer = _command(socket, f"show map {map_ref}")
    try:
        return parse_map(answer)
    except ValueError as exc:
        raise CommandExecutionError(
            f"HAProxy map {map_ref}: {exc}; is the map loaded by haproxy.cfg under that path?"
        ) from exc


def show_map(map_name="routes.map", socket=None, maps_dir_in_container=None):
    """
    Return HAProxy's running map as {key: value}.

    CLI Example:

    .. code-block:: bash

        salt '*' haproxy_runtime.show_map routes.map
    """
    _, map_ref = _map_paths(map_name, None, maps_dir_in_container)
    return _runtime_map(map_ref, socket)


def _check_token(text, what):
    """Refuse a key or value the CLI would split or misread (space, ';', newline)."""
    if not isinstance(text, str) or not text or any(c.isspace() or c == ";" for c in text):
        raise CommandExecutionError(
            f"{what} {text!r}: must be a non-empty string without spaces or ';'; HAProxy's CLI cannot take it"
        )


def _check_backends_exist(names, socket):
    """Refuse map values that name no backend: HAProxy would silently use the default."""
    missing = sorted(set(names) - set(backends(socket=socket)))
    if missing:
        raise CommandExecutionError(
            f"backend {', '.join(missing)}: not defined in HAProxy;"
            " add it to haproxy.cfg and reload before routing to it"
        )


def _apply_runtime(map_ref, wanted, runtime, socket):
    """
    Make the running map agree with wanted ({key: value or None}).

    Sends `set map` for a key already there, `add map` for a new one and
    `del map` for None. Returns {key: {"old", "new"}} for what was sent.
    """
    changes = {}
    for key, value in sorted(wanted.items()):
        old = runtime.get(key)
        if value is None and key in runtime:
            _command(socket, f"del map {map_ref} {key}", expect_empty=True)
        elif value is not None and key in runtime and old != value:
            _command(socket, f"set map {map_ref} {key} {value}", expect_empty=True)
        elif value is not None and key not in runtime:
            _command(socket, f"add map {map_ref} {key} {value}", expect_empty=True)
        else:
            continue
        changes[key] = {"old": old, "new": value}
    return changes


def _verify_runtime(map_ref, wanted, socket):
    """Read the running map back and raise if a key differs from wanted."""
    final = _runtime_map(map_ref, socket)
    wrong = [
        f"{key} is {final.get(key)!r}, expected {value!r}"
        for key, value in sorted(wanted.items())
        if final.get(key) != value
    ]
    if wrong:
        raise CommandExecutionError(
            f"HAProxy map {map_ref} after update: {'; '.join(wrong)}; run haproxy_runtime.sync_map or reload haproxy"
        )
    return final


def set_routes(routes, map_name="routes.map", socket=None, maps_dir=None, maps_dir_in_container=None,
               require_up=None, wait=0):
    """
    Point map keys at backends, in the map file and in the running HAProxy.

    ``require_up`` ({backend: count}) is a gate checked first, in the same call:
    nothing changes unless each of those backends has exactly ``count`` servers
    UP with their check passed (see check_up). With ``wait`` (seconds) the gate
    waits that long for them (see wait_up) instead of checking once: a release
    routes preview traffic as soon as its servers are UP, an activate refuses
    at once.

    ``routes`` is {key: backend name, or None to delete the key}. Every
    backend named must exist, since HAProxy silently falls back to its
    default backend for a map value naming a missing one. The host file is
    written first (so a reload keeps the routes), then the running map is
    changed and read back. Keys not in ``routes`` are left alone. Returns
    {"changes": {key: {"old", "new"}}, "map": running map}; with nothing to
    change, nothing is written.

    CLI Example:

    .. code-block:: bash

        salt '*' haproxy_runtime.set_routes '{"shop.example.com": "app_b"}'
    """
    if not isinstance(routes, dict):
        raise CommandExecutionError(f"routes {routes!r}: must be a dict of key to backend name or None")
    for key, value in routes.items():
        _check_token(key, "route key")
        if value is not None:
            _check_token(value, f"backend for {key}")
    for backend, count in (require_up or {}).items():
        if float(wait or 0) > 0:
            wait_up(backend, count, timeout=wait, socket=socket)
        else:
            check_up(backend, count, socket=socket)
    host_path, map_ref = _map_paths(map_name, maps_dir, maps_dir_in_container)
    _check_backends_exist([value for value in routes.values() if value is not None], socket)
    with map_lock(host_path):
        # only the keys of ``routes`` change, read and written under the map's lock: two
        # apps switching at once both keep their routes
        runtime = _runtime_map(map_ref, socket)
        on_disk = read_map_file(host_path)
        updated = dict(on_disk)
        for key, value in routes.items():
            if value is None:
                updated.pop(key, None)
            else:
                updated[key] = value
        if updated != on_disk or not os.path.exists(host_path):
            atomic_write_map(host_path, updated)
        try:
            changes = _apply_runtime(map_ref, routes, runtime, socket)
            final = _verify_runtime(map_ref, routes, socket) if changes else runtime
        except Exception:
            # the running map could not take the routes: the file goes back to what it
            # was, and so do the keys already changed at runtime, so that the two agree
            atomic_write_map(host_path, on_disk)
            with contextlib.suppress(Exception):
                _apply_runtime(map_ref, {k: runtime.get(k) for k in routes}, _runtime_map(map_ref, socket), socket)
            raise
    return {"changes": changes, "map": final}


def sync_map(map_name="routes.map", socket=None, maps_dir=None, maps_dir_in_container=None):
    """
    Make HAProxy's running map equal to the host map file.

    Used after HAProxy starts or reloads, or to repair a running map that
    drifted. Returns {"changes": {key: {"old", "new"}}, "map": running map}.

    CLI Example:

    .. code-block:: bash

        salt '*' haproxy_runtime.sync_map routes.map
    """
    host_path, map_ref = _map_paths(map_name, maps_dir, maps_dir_in_container)
    with map_lock(host_path):
        return _sync_map(host_path, map_ref, socket)


def _sync_map(host_path, map_ref, socket):
    if not os.path.exists(host_path):
        raise CommandExecutionError(
            f"map file {host_path}: not found; check haproxy_runtime:maps_dir before syncing (it would empty the map)"
        )
    on_disk = read_map_file(host_path)
    for key, value in on_disk.items():
        _check_token(key, f"key in {host_path}")
        _check_token(value, f"backend for {key} in {host_path}")
    runtime = _runtime_map(map_ref, socket)
    wanted = dict(on_disk)
    wanted.update({key: None for key in runtime if key not in on_disk})
    _check_backends_exist([value for key, value in on_disk.items() if runtime.get(key) != value], socket)
    changes = _apply_runtime(map_ref, wanted, runtime, socket)
    final = _verify_runtime(map_ref, wanted, socket) if changes else runtime
    return {"changes": changes, "map": final}


def dump_server_state(path=DEFAULT_SERVER_STATE, socket=None):
    """
    Save `show servers state` to a file, atomically.

    Run it before a reload, with haproxy.cfg's ``server-state-file`` pointing
    at the same file, so that server-template slots keep their addresses.

    CLI Example:

    .. code-block:: bash

        salt '*' haproxy_runtime.dump_server_state
    """
    state = _command(socket, "show servers state")
    if not state.split("\n", 1)[0].strip().isdigit():
        raise CommandExecutionError(
            f"show servers state: expected a version line, got {' '.join(state.split())[:80]!r};"
            " does the admin socket have 'level admin'?"
        )
    _atomic_write(path, state)
    server_lines = [line for line in state.splitlines()[1:] if line.strip() and not line.startswith("#")]
    return {"path": path, "servers": len(server_lines)}


def info(socket=None):
    """
    Return `show info` as a dict (Name, Version, Uptime_sec, ...); values are strings.

    CLI Example:

    .. code-block:: bash

        salt '*' haproxy_runtime.info
    """
    result = {}
    for line in _command(socket, "show info").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            result[key.strip()] = value.strip()
    return result
