"""
Route maps on the minion: the map files, their lock, and the edits of a running map.

Routes live in a map file (``key value`` lines: a backend for the routes, a version for a
slot, see ``BACKEND_KEYS``). The folder holding the map
files is bind-mounted into the container, so the host file is what HAProxy
loads when it starts or reloads, while the running map is changed through the
admin socket with ``set/add/del map`` (``map_edits`` says which). Every app's
routes share one map file, so its writers hold ``map_lock`` around the read,
the write and the runtime change. ``atomic_write`` also writes the server
state file.

Pure Python, no Salt. The execution module ``haproxy_runtime``
(``_modules/haproxy_runtime.py``) calls it as ``__utils__["haproxy_maps.map_lock"]``,
``__utils__["haproxy_maps.map_edits"]`` ...; unit tests import it by path.
"""

import contextlib
import fcntl
import os
import tempfile

MAP_HEADER = "# managed by Salt (haproxy_runtime); changes will be overwritten"


def __virtual__():
    """Only the standard library is needed."""
    return True


def atomic_write(path, text):
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


def map_text(entries):
    """The text of a map file: the header, then ``key value`` lines sorted by key. Both
    writers of routes.map use it (haproxy_runtime at runtime, the haproxy formula through
    pigeon_pillar.routes_map)."""
    lines = [MAP_HEADER] + [f"{key} {entries[key]}" for key in sorted(entries)]
    return "\n".join(lines) + "\n"


def atomic_write_map(path, entries):
    """Write a map file of ``key value`` lines sorted by key, atomically."""
    atomic_write(path, map_text(entries))


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


def token_error(text, what):
    """The error for a key or value HAProxy's CLI would split or misread (space, ';',
    newline), or None if it can take it. ``what`` names it in the message."""
    if not isinstance(text, str) or not text or any(c.isspace() or c == ";" for c in text):
        return f"{what} {text!r}: must be a non-empty string without spaces or ';'; HAProxy's CLI cannot take it"
    return None


# the keys whose value names a backend (``<app>/production``, ``<app>/internal``); the others
# hold a value haproxy.cfg reads (``<app>/version/<slot>``: the version in a slot)
BACKEND_KEYS = ("production", "internal")


# keys that only a haproxy.cfg of issue 12 or later reads (a canary's share, a maintenance);
# such a configuration declares the backend TRAFFIC_MARKER
TRAFFIC_KEYS = ("canary", "maintenance")
TRAFFIC_MARKER = "pigeon_traffic_v1"


def needs_marker(entries):
    """TRAFFIC_MARKER when entries ({key: value or None}) set a key only a configuration that
    declares it reads, else None."""
    if any(value is not None and str(key).rpartition("/")[2] in TRAFFIC_KEYS for key, value in entries.items()):
        return TRAFFIC_MARKER
    return None


def backend_values(entries):
    """The values of entries ({key: value or None}) that must name a backend HAProxy has: those
    of the keys ending in one of BACKEND_KEYS, None left out."""
    return [value for key, value in entries.items()
            if value is not None and str(key).rpartition("/")[2] in BACKEND_KEYS]


def with_routes(entries, routes):
    """A copy of entries ({key: value}) with routes applied: a value sets its key, None deletes it."""
    updated = dict(entries)
    for key, value in routes.items():
        if value is None:
            updated.pop(key, None)
        else:
            updated[key] = value
    return updated


def map_edits(map_ref, wanted, runtime):
    """
    The commands that make the running map (runtime, {key: value}) agree with wanted
    ({key: value or None}), in key order, each as (key, command, old value, new value).

    `set map` for a key already there, `add map` for a new one and `del map` for
    None; a key already as wanted gets none.
    """
    edits = []
    for key, value in sorted(wanted.items()):
        old = runtime.get(key)
        if value is None and key in runtime:
            edits.append((key, f"del map {map_ref} {key}", old, value))
        elif value is not None and key in runtime and old != value:
            edits.append((key, f"set map {map_ref} {key} {value}", old, value))
        elif value is not None and key not in runtime:
            edits.append((key, f"add map {map_ref} {key} {value}", old, value))
    return edits


def differences(final, wanted):
    """The keys of wanted ({key: value or None}) that a running map read back (final) does
    not have as wanted, one ``key is 'x', expected 'y'`` each, in key order."""
    return [
        f"{key} is {final.get(key)!r}, expected {value!r}"
        for key, value in sorted(wanted.items())
        if final.get(key) != value
    ]
