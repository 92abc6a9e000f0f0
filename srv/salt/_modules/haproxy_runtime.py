"""
Salt execution module ``haproxy_runtime``: the HAProxy control on a load-balancer minion.

Server health and its gate, draining, routes, server state and the access log,
over HAProxy's admin socket. Called by the orchestrations (``orch/steps.jinja``:
set_routes with its health gate, wait_drained), the haproxy formula (``haproxy/
service/running.sls``: dump_server_state, sync_map), the stacks runner (show_map,
stats, access_log) and people (docs/troubleshooting.md). Routes are written to the
host's map file (which survives a reload) and to the running map (which takes
effect at once).

The parts without Salt are utils modules, reached through ``__utils__`` (synced
with this module by ``saltutil.sync_all`` or ``state.apply``):
``_utils/haproxy_admin.py`` (the admin socket client and its answers' parsers),
``_utils/haproxy_maps.py`` (map files, their lock, the edits of a running map) and
``_utils/haproxy_health.py`` (when a backend's servers count as healthy).

Minion config (all optional):

.. code-block:: yaml

    haproxy_runtime:
      socket: /srv/pigeon/haproxy/run/admin.sock
      maps_dir: /srv/pigeon/haproxy/etc/maps
      maps_dir_in_container: /usr/local/etc/haproxy/maps
"""

import contextlib
import ipaddress
import logging
import os
import posixpath
import time

from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

__virtualname__ = "haproxy_runtime"

DEFAULT_SOCKET = "/srv/pigeon/haproxy/run/admin.sock"
DEFAULT_MAPS_DIR = "/srv/pigeon/haproxy/etc/maps"
DEFAULT_MAPS_DIR_IN_CONTAINER = "/usr/local/etc/haproxy/maps"
DEFAULT_SERVER_STATE = "/srv/pigeon/haproxy/run/server-state"
ACCESS_LOG = "pigeon_access"  # the ring of haproxy.cfg (haproxy/templates/haproxy.cfg.jinja)
CONNECT_WAIT = 5.0  # seconds to wait for the socket of an HAProxy that is starting


def __virtual__():
    """Load only if this module's utils were synced too (saltutil.sync_modules leaves them out)."""
    for name in ("haproxy_admin.command", "haproxy_maps.map_lock", "haproxy_health.healthy"):
        if name not in __utils__:
            return (False, f"haproxy_runtime: utils module {name.split('.')[0]} not found; run saltutil.sync_all")
    return __virtualname__


def _config(key, default):
    """Return the minion's ``haproxy_runtime:<key>``, or default outside Salt."""
    try:
        return __salt__["config.get"](f"haproxy_runtime:{key}", default)
    except NameError:
        return default


def _command(socket, cmd, expect_empty=False):
    """Run one admin socket command; socket failures become CommandExecutionError."""
    path = socket or _config("socket", DEFAULT_SOCKET)
    return __utils__["haproxy_admin.command"](
        path, cmd, expect_empty=expect_empty, connect_wait=CONNECT_WAIT, error=CommandExecutionError
    )


def _ask(socket, cmd, parser):
    """Run one command and return its answer parsed by ``haproxy_admin.<parser>``."""
    try:
        return __utils__[f"haproxy_admin.{parser}"](_command(socket, cmd))
    except ValueError as exc:
        raise CommandExecutionError(f"{exc}; does the admin socket have 'level admin'?") from exc


def _backend_stat(backend, socket):
    """Return one backend's {"sessions", "servers"} from `show stat` (see haproxy_admin.backend_stat)."""
    stat = __utils__["haproxy_admin.backend_stat"](_ask(socket, "show stat", "parse_stat"), backend)
    if stat is None:
        raise CommandExecutionError(
            f"backend {backend}: not defined in HAProxy; check the name with haproxy_runtime.backends"
        )
    return stat


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
    return _backend_stat(backend, socket)["servers"]


def stats(backends, socket=None):
    """
    What HAProxy says of these backends, from one `show stat`: {backend: {"counters":
    {status, scur, stot, hrsp_2xx ... hrsp_5xx, econ, eresp, wretr, wredis}, "servers": [{name,
    addr, status, check_status, scur, qcur}]}}; a backend HAProxy does not know is left out.

    CLI Example:

    .. code-block:: bash

        salt '*' haproxy_runtime.stats '[app_a, app_b]'
    """
    rows = _ask(socket, "show stat", "parse_stat")
    found = {}
    for name in backends or []:
        counters = __utils__["haproxy_admin.backend_counters"](rows, str(name))
        if counters is not None:
            found[str(name)] = {"counters": counters,
                                "servers": __utils__["haproxy_admin.backend_stat"](rows, str(name))["servers"]}
    return found


def backend_sessions(backend, socket=None):
    """
    Return the current and queued sessions of a backend: {"scur": n, "qcur": n}.

    CLI Example:

    .. code-block:: bash

        salt '*' haproxy_runtime.backend_sessions app_a
    """
    return _backend_stat(backend, socket)["sessions"]


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
        if __utils__["haproxy_health.healthy"](current, count):
            return __utils__["haproxy_health.healthy_result"](backend, current)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CommandExecutionError(
                __utils__["haproxy_health.health_error"](backend, count, current, waited=float(timeout))
            )
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
    if not __utils__["haproxy_health.healthy"](current, count):
        raise CommandExecutionError(__utils__["haproxy_health.health_error"](backend, count, current))
    return __utils__["haproxy_health.healthy_result"](backend, current)


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
            log.warning("backend %s: still %s sessions and %s queued after %ss; proceeding without full drain",
                        backend, sessions["scur"], sessions["qcur"], timeout)
            return {"backend": backend, "drained": False, "waited": waited, **sessions}
        time.sleep(min(float(interval), remaining))


def backends(socket=None):
    """
    List the backend names HAProxy knows.

    CLI Example:

    .. code-block:: bash

        salt '*' haproxy_runtime.backends
    """
    return _ask(socket, "show backend", "backend_names")


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
        return __utils__["haproxy_admin.parse_map"](answer)
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
    error = __utils__["haproxy_maps.token_error"](text, what)
    if error:
        raise CommandExecutionError(error)


def _check_backends_exist(names, socket):
    """Refuse map values that name no backend: HAProxy would silently use the default."""
    missing = sorted(set(names) - set(backends(socket=socket)))
    if missing:
        raise CommandExecutionError(
            f"backend {', '.join(missing)}: not defined in HAProxy;"
            " add it to haproxy.cfg and reload before routing to it"
        )


def _apply_runtime(map_ref, wanted, runtime, socket):
    """Make the running map agree with wanted ({key: value or None}) by the edits of
    haproxy_maps.map_edits; return {key: {"old", "new"}} for what was sent."""
    changes = {}
    for key, cmd, old, new in __utils__["haproxy_maps.map_edits"](map_ref, wanted, runtime):
        _command(socket, cmd, expect_empty=True)
        changes[key] = {"old": old, "new": new}
    return changes


def _verify_runtime(map_ref, wanted, socket):
    """Read the running map back and raise if a key differs from wanted."""
    final = _runtime_map(map_ref, socket)
    wrong = __utils__["haproxy_maps.differences"](final, wanted)
    if wrong:
        raise CommandExecutionError(
            f"HAProxy map {map_ref} after update: {'; '.join(wrong)}; run haproxy_runtime.sync_map or reload haproxy"
        )
    return final


def _checked_servers(servers):
    """{backend: [(address, port)]} from what the plan sent, or CommandExecutionError (one line):
    an address is an IP address, a port a whole number from 1 to 65535."""
    if not isinstance(servers, dict):
        raise CommandExecutionError(f"servers {servers!r}: must be a dict of backend to [[address, port], ...]")
    checked = {}
    for backend, wanted in servers.items():
        _check_token(backend, "backend")
        if not isinstance(wanted, list):
            raise CommandExecutionError(f"servers of {backend}: must be a list of [address, port]")
        checked[backend] = []
        for server in wanted:
            try:
                addr, port = server
                # IPv4 only: an IPv6 scope ("%...") would carry any text to the admin socket
                addr, port = str(ipaddress.IPv4Address(addr)), int(port)
                if isinstance(server[1], bool) or not 1 <= port <= 65535:
                    raise ValueError
            except (TypeError, ValueError):
                raise CommandExecutionError(
                    f"servers of {backend}: {str(server)[:80]!r} is not [IPv4 address, port from 1 to 65535]") from None
            _check_token(addr, f"address of a server of {backend}")
            checked[backend].append((addr, port))
    return checked


def set_servers(servers, socket=None):
    """
    Give a backend's servers their addresses: ``servers`` is {backend: [[address, port], ...]}.
    The backend's server-template slots (``s1``..``sN``, `disabled` in haproxy.cfg) take them
    in order and are made ready; the slots left over go to maintenance. Only what differs is
    sent (``set server <b>/<s> addr A port P``, ``state ready``/``maint``). HAProxy keeps them
    across reloads through its server-state file (the haproxy formula dumps it before each
    reload); a load balancer that converges gets them from the registry (sync_servers).
    Backends not named are left alone. After a change, the server-state file beside the admin
    socket is written too, so that a restart of HAProxy keeps them. Returns {backend:
    {server: "addr:port" or "maint"}} for what changed.

    CLI Example:

    .. code-block:: bash

        salt '*' haproxy_runtime.set_servers '{"app_b": [["10.0.0.21", 21010]]}'
    """
    wanted_all = _checked_servers(servers)
    if wanted_all:
        _check_backends_exist(list(wanted_all), socket)
    changes = {}
    for backend, wanted in sorted(wanted_all.items()):
        state = _command(socket, f"show servers state {backend}")
        try:
            current = __utils__["haproxy_admin.parse_servers_state"](state, backend)
        except ValueError as exc:
            raise CommandExecutionError(f"{exc}; does the admin socket have 'level admin'?") from exc
        if len(wanted) > len(current):
            raise CommandExecutionError(
                f"backend {backend}: {len(wanted)} servers asked, it has {len(current)} slots;"
                " lower the count or the app minions")
        for n, server in enumerate(current):
            ref = f"{backend}/{server['name']}"
            if n < len(wanted):
                addr, port = wanted[n]
                if (server["addr"], server["port"]) != (addr, port):
                    answer = _command(socket, f"set server {ref} addr {addr} port {port}").strip()
                    if answer and not answer.lower().startswith(("ip changed", "no need to change", "port changed")):
                        raise CommandExecutionError(f"set server {ref} addr {addr} port {port}: {answer.splitlines()[0]}")
                    changes.setdefault(backend, {})[server["name"]] = f"{addr}:{port}"
                if server["maint"]:
                    _command(socket, f"set server {ref} state ready", expect_empty=True)
                    changes.setdefault(backend, {})[server["name"]] = f"{addr}:{port}"
            elif not server["maint"]:
                _command(socket, f"set server {ref} state maint", expect_empty=True)
                changes.setdefault(backend, {})[server["name"]] = "maint"
    if changes:
        # HAProxy reads its server-state file when it starts: a restart keeps these servers
        # (haproxy.cfg keeps it beside the admin socket, in the run/ folder); read and written
        # under a lock, so that two apps' changes at once both reach the file
        path = os.path.join(os.path.dirname(socket or _config("socket", DEFAULT_SOCKET)), "server-state")
        with __utils__["haproxy_maps.map_lock"](path):
            dump_server_state(path=path, socket=socket)
    return changes


def sync_servers(servers, socket=None):
    """
    The servers the registry holds for this load balancer's apps (``pigeon:servers``, through
    ``pigeon_pillar.servers``), set at runtime as set_servers does: the haproxy formula runs it
    on every apply, so a new or rebuilt load balancer routes to the same servers as the others.
    Backends HAProxy does not have yet are skipped (their config is not loaded). Returns
    {"changes": set_servers' changes}.

    CLI Example:

    .. code-block:: bash

        salt '*' haproxy_runtime.sync_servers '{"app_a": [["10.0.0.21", 21000]]}'
    """
    known = set(backends(socket=socket))
    return {"changes": set_servers({b: s for b, s in (servers or {}).items() if b in known}, socket=socket)}


def set_routes(routes, map_name="routes.map", socket=None, maps_dir=None, maps_dir_in_container=None,
               require_up=None, wait=0, servers=None):
    """
    Point map keys at backends, in the map file and in the running HAProxy.

    ``require_up`` ({backend: count}) is a gate checked first, in the same call:
    nothing changes unless each of those backends has exactly ``count`` servers
    UP with their check passed (see check_up). With ``wait`` (seconds) the gate
    waits that long for them (see wait_up) instead of checking once: a release
    routes preview traffic as soon as its servers are UP, an activate refuses
    at once.

    ``servers`` ({backend: [[address, port], ...]}), when given, are set first (set_servers):
    the slot of a stack whose containers HAProxy reaches by address (several app minions).

    ``routes`` is {key: backend name, or None to delete the key}. Every
    backend named must exist, since HAProxy silently falls back to its
    default backend for a map value naming a missing one (the keys of
    ``haproxy_maps.BACKEND_KEYS``; a ``<app>/version/<slot>`` key holds a version). The host file is
    written first (so a reload keeps the routes), then the running map is
    changed and read back. Keys not in ``routes`` are left alone. Returns
    {"changes": {key: {"old", "new"}}, "map": running map}; with nothing to
    change, nothing is written.

    CLI Example:

    .. code-block:: bash

        salt '*' haproxy_runtime.set_routes '{"app/production": "app_b"}'
    """
    if not isinstance(routes, dict):
        raise CommandExecutionError(f"routes {routes!r}: must be a dict of key to backend name or None")
    for key, value in routes.items():
        _check_token(key, "route key")
        if value is not None:
            _check_token(value, f"backend for {key}")
    if servers:
        set_servers(servers, socket=socket)
    for backend, count in (require_up or {}).items():
        if float(wait or 0) > 0:
            wait_up(backend, count, timeout=wait, socket=socket)
        else:
            check_up(backend, count, socket=socket)
    host_path, map_ref = _map_paths(map_name, maps_dir, maps_dir_in_container)
    _check_backends_exist(__utils__["haproxy_maps.backend_values"](routes), socket)
    marker = __utils__["haproxy_maps.needs_marker"](routes)
    if marker and marker not in backends(socket=socket):
        # a canary or a maintenance that the running configuration would not read: refused
        raise CommandExecutionError(
            "this load balancer's haproxy.cfg predates canary and maintenance; apply the haproxy state "
            "to it (salt <minion> state.apply haproxy), then try again")
    with __utils__["haproxy_maps.map_lock"](host_path):
        # only the keys of ``routes`` change, read and written under the map's lock: two
        # apps switching at once both keep their routes
        runtime = _runtime_map(map_ref, socket)
        on_disk = __utils__["haproxy_maps.read_map_file"](host_path)
        updated = __utils__["haproxy_maps.with_routes"](on_disk, routes)
        if updated != on_disk or not os.path.exists(host_path):
            __utils__["haproxy_maps.atomic_write_map"](host_path, updated)
        try:
            changes = _apply_runtime(map_ref, routes, runtime, socket)
            final = _verify_runtime(map_ref, routes, socket) if changes else runtime
        except Exception:
            # the running map could not take the routes: the file goes back to what it
            # was, and so do the keys already changed at runtime, so that the two agree
            __utils__["haproxy_maps.atomic_write_map"](host_path, on_disk)
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
    with __utils__["haproxy_maps.map_lock"](host_path):
        if not os.path.exists(host_path):
            raise CommandExecutionError(
                f"map file {host_path}: not found; check haproxy_runtime:maps_dir before syncing"
                " (it would empty the map)"
            )
        on_disk = __utils__["haproxy_maps.read_map_file"](host_path)
        for key, value in on_disk.items():
            _check_token(key, f"key in {host_path}")
            _check_token(value, f"backend for {key} in {host_path}")
        runtime = _runtime_map(map_ref, socket)
        wanted = dict(on_disk)
        wanted.update({key: None for key in runtime if key not in on_disk})
        _check_backends_exist(__utils__["haproxy_maps.backend_values"](
            {key: value for key, value in on_disk.items() if runtime.get(key) != value}), socket)
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
    count = __utils__["haproxy_admin.server_state_count"](state)
    if count is None:
        raise CommandExecutionError(
            f"show servers state: expected a version line, got {' '.join(state.split())[:80]!r};"
            " does the admin socket have 'level admin'?"
        )
    __utils__["haproxy_maps.atomic_write"](path, state)
    return {"path": path, "servers": count}


def access_log(backends, tail=100, socket=None, app=None):
    """
    The last ``tail`` requests HAProxy logged for these backends (an app's slots), oldest
    first, one line each: accept date, client, frontend, route, backend/server, status,
    timers TR/Tw/Tc/Tr/Ta (ms), bytes, termination state, request. Read from the ring
    ``pigeon_access`` of haproxy.cfg (`show events`): about 1 MB in memory, emptied when
    HAProxy restarts or reloads. With ``app``, also its requests that no stack served (503).
    Called by the stacks runner (``stacks.py logs --proxy``).

    CLI Example:

    .. code-block:: bash

        salt '*' haproxy_runtime.access_log '[app_a, app_b]' tail=20
    """
    if isinstance(backends, str):
        backends = [backends]
    try:
        count = int(tail)
    except (TypeError, ValueError):
        count = 0
    if count < 1:
        raise CommandExecutionError(f"tail {tail!r}: give a whole number of lines from 1")
    answer = _command(socket, f"show events {ACCESS_LOG}")
    try:
        lines = __utils__["haproxy_admin.access_lines"](answer, [str(name) for name in backends or []],
                                                        app=str(app) if app else None)
    except ValueError as exc:
        raise CommandExecutionError(
            f"HAProxy's access log {ACCESS_LOG}: {exc}; apply the haproxy state to this minion"
            " (its haproxy.cfg has no such ring)"
        ) from exc
    return lines[-count:]


def info(socket=None):
    """
    Return `show info` as a dict (Name, Version, Uptime_sec, ...); values are strings.

    CLI Example:

    .. code-block:: bash

        salt '*' haproxy_runtime.info
    """
    return __utils__["haproxy_admin.parse_info"](_command(socket, "show info"))
