"""
The per-app deploy lock, on the master: one action per app at a time.

A lock is ``<directory>/<app>.lock``, held by an ``flock`` on an open file
description of it. The kernel makes taking it atomic, and releases it when
the holder's process dies however it dies: there is no stale lock to detect
or take over, and no race between two takers (two threads of one process
open two descriptions and exclude each other too). The file is never removed;
its content says who holds it (action, version, user, since, owner) and the
number of the descriptor that holds it, so that the step that ends the
action (another call in the same process and thread) can release it.
Content left by a holder that died is reported as ``stale`` by ``acquire``.

Pure Python, no Salt: used by the registry (``pigeon_registry``) as
``__utils__["pigeon_lock.acquire"]`` ..., imported by path in unit tests.
"""

import errno
import fcntl
import json
import os
import socket
import threading
import time
import uuid


def owner():
    """Who takes a lock: this host, process and thread. The thread is named by a token kept
    on its Thread object (not by its ident, which Python hands to the next thread once it
    ended), so that a new thread never passes for one that died holding a lock; the token is
    the same for every Salt loader that runs in the thread (render and steps)."""
    thread = threading.current_thread()
    token = getattr(thread, "_pigeon_lock_token", None)
    if token is None:
        token = uuid.uuid4().hex[:16]
        thread._pigeon_lock_token = token  # pylint: disable=protected-access
    return f"{socket.gethostname()}:{os.getpid()}:{token}"


def _path(directory, app):
    os.makedirs(directory, mode=0o700, exist_ok=True)
    return os.path.join(directory, f"{app}.lock")


def _open(path, flags):
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def _content(fd):
    try:
        text = os.pread(fd, 65536, 0).decode("utf-8", "replace")
        data = json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _ours(path, held):
    """Whether ``held`` (a lock's content) is this thread's, by a descriptor still open here."""
    if not held or held.get("owner") != owner():
        return False
    try:
        return os.fstat(int(held["fd"])).st_ino == os.stat(path).st_ino
    except (OSError, KeyError, TypeError, ValueError):
        return False


def acquire(directory, app, info, wait=0.0, poll=0.1, stop=None):
    """
    Take the lock of ``app`` for this thread, waiting up to ``wait`` seconds.
    ``info`` (a dict: action, version, user, ...) is written into it.

    Returns ``{"held": None, "stale": content or None}`` when taken (``stale``:
    what a holder that died left), or ``{"held": content}`` naming who holds
    it when not. Taking a lock this thread holds already succeeds. ``stop``: asked
    at each poll while waiting; when it returns something true, the wait ends,
    untaken: ``{"held": content, "stopped": what it returned}``.
    """
    path = _path(directory, app)
    deadline = time.monotonic() + max(float(wait or 0), 0.0)
    fd = _open(path, os.O_RDWR | os.O_CREAT)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
            held = _content(fd)
            if _ours(path, held):
                os.close(fd)
                return {"held": None, "stale": None}
            if time.monotonic() >= deadline:
                os.close(fd)
                return {"held": held or {"owner": "unknown"}}
            stopped = stop() if stop else None
            if stopped:
                os.close(fd)
                return {"held": held or {"owner": "unknown"}, "stopped": stopped}
            time.sleep(poll)
    except BaseException:
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
        raise
    stale = _content(fd)
    me = dict(info, owner=owner(), fd=fd, pid=os.getpid(), host=socket.gethostname())
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
    except BaseException:  # a full disk: not taken, and not left held by a long-lived process
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        raise
    return {"held": None, "stale": stale}


def mine(directory, app):
    """The lock's content if this thread holds the lock of ``app``, else None."""
    path = _path(directory, app)
    try:
        fd = _open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        held = _content(fd)
    finally:
        os.close(fd)
    return held if _ours(path, held) else None


def release(directory, app):
    """Release the lock of ``app`` if this thread holds it: True, else False."""
    held = mine(directory, app)
    if held is None:
        return False
    mine_ = int(held["fd"])
    os.ftruncate(mine_, 0)
    fcntl.flock(mine_, fcntl.LOCK_UN)  # for every process that shares the description, too
    os.close(mine_)
    return True


def _flocked(path):
    """Whether a process holds an exclusive flock on ``path``, from /proc/locks: asking
    must not take a lock itself (an instant's LOCK_SH would make a taker fail)."""
    st = os.stat(path)
    ident = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    with open("/proc/locks", encoding="ascii", errors="replace") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) < 6 or fields[1] == "->" or fields[1] != "FLOCK" or fields[3] != "WRITE":
                continue
            try:
                major, minor, inode = fields[5].split(":")
                if (int(major, 16), int(minor, 16), int(inode)) == ident:
                    return True
            except ValueError:
                continue
    return False


def holder(directory, app):
    """Who holds the lock of ``app`` now (its content), or None: asked of the kernel."""
    path = _path(directory, app)
    try:
        if not _flocked(path):
            return None
        fd = _open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return _content(fd) or {"owner": "unknown"}
    finally:
        os.close(fd)
