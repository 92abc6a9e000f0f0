"""
Unit tests for srv/salt/_utils/pigeon_lock.py (the per-app deploy lock, an flock).

Besides the single cases, races: threads of one process and forked processes
taking the same app's lock thousands of times, each holder checking that it is
the only one (a counter under a mutex for threads; an O_EXCL marker file and a
shared counter for processes), and many takers racing for a lock whose holder
died (the old defect: two "stale takeovers" at once).
"""

import json
import multiprocessing
import os
import signal
import stat
import sys
import threading
import time

import pytest

from srv_modules import load

lock = load("_utils/pigeon_lock.py", "pigeon_lock_under_test")

INFO = {"action": "release", "version": "1.4", "user": "alice", "since": "2025-12-02T08:00:00"}
FORK = multiprocessing.get_context("fork")


@pytest.fixture
def locks(tmp_path):
    return str(tmp_path / "locks")


def in_thread(function, *args):
    """function(*args) run in a new thread: its result (or its exception, raised here)."""
    box = {}

    def run():
        try:
            box["value"] = function(*args)
        except BaseException as exc:  # pragma: no cover - shown to the test
            box["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    if "error" in box:
        raise box["error"]
    return box["value"]


class Holder(threading.Thread):
    """A thread that takes the lock, holds it until told, then releases it (or not)."""

    def __init__(self, directory, app="app", info=INFO, release=True, hold=None):
        super().__init__(daemon=True)
        self.directory, self.app, self.info, self.do_release, self.hold = directory, app, info, release, hold
        self.taken, self.done, self.released = threading.Event(), threading.Event(), None
        self.result = None

    def run(self):
        self.result = lock.acquire(self.directory, self.app, self.info)
        self.taken.set()
        if self.hold is not None:
            time.sleep(self.hold)
        else:
            self.done.wait(10)
        if self.do_release:
            self.released = lock.release(self.directory, self.app)

    def __enter__(self):
        self.start()
        assert self.taken.wait(5) and self.result["held"] is None
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.join(10)


# ---------------------------------------------------------------------------
# one taker
def test_acquire_takes_a_free_lock_and_writes_who(locks):
    assert lock.holder(locks, "app") is None
    assert lock.acquire(locks, "app", INFO) == {"held": None, "stale": None}
    held = lock.holder(locks, "app")  # asked by the holding thread itself: held
    assert held is not None and {k: held[k] for k in INFO} == INFO
    assert held["owner"] == lock.owner() and held["pid"] == os.getpid()
    assert lock.mine(locks, "app") == held
    assert lock.release(locks, "app") is True
    assert lock.holder(locks, "app") is None and lock.mine(locks, "app") is None


def test_the_lock_file_and_directory_are_private(locks):
    lock.acquire(locks, "app", INFO)
    try:
        assert stat.S_IMODE(os.stat(locks).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(os.path.join(locks, "app.lock")).st_mode) == 0o600
    finally:
        lock.release(locks, "app")


def test_reacquire_by_the_same_thread_succeeds(locks):
    assert lock.acquire(locks, "app", INFO)["held"] is None
    fds = len(os.listdir("/proc/self/fd"))
    assert lock.acquire(locks, "app", dict(INFO, action="activate")) == {"held": None, "stale": None}
    assert len(os.listdir("/proc/self/fd")) == fds  # the second description is closed again
    assert lock.release(locks, "app") is True
    assert lock.holder(locks, "app") is None  # one release frees it
    assert lock.release(locks, "app") is False


def test_locks_of_two_apps_are_apart(locks):
    with Holder(locks, "one"):
        assert lock.acquire(locks, "two", INFO) == {"held": None, "stale": None}
        assert lock.release(locks, "two") is True


def test_another_thread_is_refused_and_sees_the_holder(locks):
    with Holder(locks) as holding:
        taken = in_thread(lock.acquire, locks, "app", dict(INFO, user="bob"))
        assert set(taken) == {"held"}
        assert {k: taken["held"][k] for k in INFO} == INFO  # alice's, not bob's
        assert taken["held"]["owner"].endswith(f":{holding._pigeon_lock_token}")  # the holding thread's own token
        assert lock.acquire(locks, "app", INFO)["held"]["user"] == "alice"  # this thread too
        assert lock.mine(locks, "app") is None  # this thread does not hold it
        assert lock.holder(locks, "app")["user"] == "alice"
    assert holding.released is True
    assert lock.holder(locks, "app") is None


def test_release_by_a_thread_that_does_not_hold_it(locks):
    with Holder(locks) as holding:
        assert lock.release(locks, "app") is False
        assert in_thread(lock.release, locks, "app") is False
        assert lock.holder(locks, "app")["user"] == "alice"  # still held
        assert lock.acquire(locks, "app", INFO)["held"]["user"] == "alice"
    assert holding.released is True


def test_release_of_a_lock_never_taken(locks):
    assert lock.release(locks, "never") is False
    assert lock.mine(locks, "never") is None


def test_wait_gets_the_lock_when_the_holder_releases_within_it(locks):
    holding = Holder(locks, hold=0.3)
    holding.start()
    assert holding.taken.wait(5)
    started = time.monotonic()
    taken = lock.acquire(locks, "app", dict(INFO, user="bob"), wait=3, poll=0.02)
    elapsed = time.monotonic() - started
    try:
        assert taken == {"held": None, "stale": None}  # released, not left: nothing stale
        assert 0.15 < elapsed < 2
        assert lock.holder(locks, "app")["user"] == "bob"
    finally:
        lock.release(locks, "app")
        holding.join(5)
    assert holding.released is True


def test_wait_gives_up_at_its_end(locks):
    with Holder(locks):
        started = time.monotonic()
        taken = lock.acquire(locks, "app", INFO, wait=0.3, poll=0.05)
        elapsed = time.monotonic() - started
        assert taken["held"]["user"] == "alice"
        assert 0.25 < elapsed < 2


def test_wait_zero_does_not_wait(locks):
    with Holder(locks):
        started = time.monotonic()
        for wait in (0, 0.0, None, -5):
            assert lock.acquire(locks, "app", INFO, wait=wait)["held"]["user"] == "alice"
        assert time.monotonic() - started < 0.5


def test_refused_acquires_leak_no_descriptor(locks):
    with Holder(locks):
        fds = len(os.listdir("/proc/self/fd"))
        for _ in range(50):
            lock.acquire(locks, "app", INFO)
        assert len(os.listdir("/proc/self/fd")) == fds


def test_a_release_by_a_thread_does_not_release_the_next_holders_lock(locks):
    with Holder(locks):
        pass
    with Holder(locks, info=dict(INFO, user="bob")):
        assert lock.release(locks, "app") is False
        assert lock.holder(locks, "app")["user"] == "bob"


def test_unreadable_content_is_an_unknown_holder(locks):
    with Holder(locks):
        path = os.path.join(locks, "app.lock")
        with open(path, "w") as fh:  # content clobbered while held (the flock stays)
            fh.write("[not json")
        assert lock.acquire(locks, "app", INFO) == {"held": {"owner": "unknown"}}
        assert lock.holder(locks, "app") == {"owner": "unknown"}


# ---------------------------------------------------------------------------
# holders that die
def _take_and_sleep(directory, ready):
    lock.acquire(directory, "app", dict(INFO, user="doomed"))
    ready.set()
    time.sleep(60)


def test_a_holder_killed_with_sigkill_leaves_the_lock_free_and_stale(locks):
    ready = FORK.Event()
    child = FORK.Process(target=_take_and_sleep, args=(locks, ready), daemon=True)
    child.start()
    try:
        assert ready.wait(10)
        held = lock.holder(locks, "app")
        assert held["user"] == "doomed" and held["pid"] == child.pid
        assert lock.acquire(locks, "app", INFO)["held"]["pid"] == child.pid
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
    assert child.exitcode == -signal.SIGKILL
    assert lock.holder(locks, "app") is None  # the kernel released it
    taken = lock.acquire(locks, "app", INFO)
    assert taken["held"] is None
    assert taken["stale"]["user"] == "doomed" and taken["stale"]["pid"] == child.pid
    assert lock.holder(locks, "app")["user"] == "alice"
    assert lock.release(locks, "app") is True
    assert lock.acquire(locks, "app", INFO) == {"held": None, "stale": None}  # released: nothing stale
    lock.release(locks, "app")


def test_a_thread_that_died_holding_does_not_free_the_lock_for_others(locks):
    # the description stays open in the process: the lock is held until the process ends.
    # BUG (pigeon_lock.owner/_ours): the owner is host:pid:threading.get_ident(), and Python
    # reuses the ident of a thread that ended for the next thread started (glibc reuses the
    # stack). A new thread then passes _ours() as the dead holder and "re-acquires" its lock:
    # acquire returns {"held": None, "stale": None} (no stale reported, the dead action's
    # content kept), where it should be refused. In the master's reactor (a thread pool that
    # lives on, docs/ci.md) the next action on a worker thread that left a lock behind takes
    # it over silently, and status keeps showing the dead action as the holder.
    # Ident reuse is up to the C library: tried on a few apps until a new thread gets the
    # ident of the dead holder (with glibc, at once), the case that goes wrong; where it never
    # does, the test checks the plain case (a new thread refused) only.
    for attempt in range(20):
        app = f"app{attempt}"
        holding = Holder(locks, app=app, release=False, hold=0)
        holding.start()
        holding.join(5)
        assert lock.holder(locks, app)["user"] == "alice"
        seen = {}

        def another():
            seen["ident"] = threading.get_ident()
            return lock.acquire(locks, app, dict(INFO, user="bob"))

        taken = in_thread(another)
        try:
            assert taken["held"] is not None and taken["held"]["user"] == "alice", (
                f"a new thread (ident {seen['ident']}, the dead holder's {holding.ident}) took a "
                f"lock a thread that died still holds: {taken}")
        finally:
            held = lock.holder(locks, app)
            os.close(held["fd"])  # what the end of the process does
        assert lock.holder(locks, app) is None
        if seen["ident"] == holding.ident:
            break


# ---------------------------------------------------------------------------
# races
THREADS, ROUNDS = 16, 200


def test_threads_racing_never_hold_it_two_at_once(locks):
    # each thread takes the lock ROUNDS times, trying acquire(wait=0) until it gets it
    mutex = threading.Lock()
    state = {"holders": 0, "most": 0, "takes": 0, "refused": 0, "errors": []}
    start = threading.Barrier(THREADS)
    deadline = time.monotonic() + 120  # a bound against a hang, not a timing: the count below is what is checked

    def worker(number):
        start.wait()
        me = dict(INFO, user=f"t{number}")
        for _ in range(ROUNDS):
            while lock.acquire(locks, "app", me)["held"] is not None:
                with mutex:
                    state["refused"] += 1
                if time.monotonic() > deadline:
                    return
                time.sleep(0.0005)  # off the GIL, so that the holder gets on
            with mutex:
                state["holders"] += 1
                state["most"] = max(state["most"], state["holders"])
                state["takes"] += 1
            try:
                if (lock.mine(locks, "app") or {}).get("user") != me["user"]:
                    state["errors"].append(f"t{number}: mine() is not mine")
                time.sleep(0)
            finally:
                with mutex:
                    state["holders"] -= 1
                if not lock.release(locks, "app"):
                    state["errors"].append(f"t{number}: release() of a held lock was False")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)  # hand the GIL over often: more interleavings, less waiting
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(130)
    finally:
        sys.setswitchinterval(interval)
    assert not any(thread.is_alive() for thread in threads)
    assert state["errors"] == []
    assert state["most"] == 1, f"{state['most']} threads held the lock at once"
    assert state["takes"] == THREADS * ROUNDS  # thousands of takes, within the deadline
    assert state["refused"] > 0  # they did race
    print(f"\nlock races: {THREADS} threads, {state['takes']} takes, {state['refused']} refusals, "
          f"at most {state['most']} holder at once")
    assert lock.holder(locks, "app") is None


PROCESSES, TAKES = 8, 300


def _process_worker(directory, marker, holders, most, takes, errors, start, deadline):
    start.wait()
    me = dict(INFO, user=f"p{os.getpid()}")
    taken_here = 0
    while taken_here < TAKES and time.monotonic() < deadline:
        if lock.acquire(directory, "app", me)["held"] is not None:
            continue
        taken_here += 1
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # only one can make it
        except FileExistsError:
            with errors.get_lock():
                errors.value += 1
            fd = None
        with holders.get_lock():
            holders.value += 1
            most.value = max(most.value, holders.value)
        if fd is not None:
            os.close(fd)
        with holders.get_lock():
            holders.value -= 1
        if fd is not None:
            os.unlink(marker)
        if not lock.release(directory, "app"):
            with errors.get_lock():
                errors.value += 1000
    with takes.get_lock():
        takes.value += taken_here


def test_processes_racing_never_hold_it_two_at_once(locks, tmp_path):
    os.makedirs(locks)
    marker = str(tmp_path / "holder.marker")
    holders, most, takes, errors = (FORK.Value("i", 0) for _ in range(4))
    start = FORK.Barrier(PROCESSES)
    deadline = time.monotonic() + 120  # a bound against a hang, not a timing: the count below is what is checked
    workers = [FORK.Process(target=_process_worker,
                            args=(locks, marker, holders, most, takes, errors, start, deadline))
               for _ in range(PROCESSES)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(130)
    assert [worker.exitcode for worker in workers] == [0] * PROCESSES
    assert errors.value == 0, f"{errors.value % 1000} double holds, {errors.value // 1000} failed releases"
    assert most.value == 1
    assert takes.value == PROCESSES * TAKES  # thousands of takes, within the deadline
    print(f"\nlock races: {PROCESSES} processes, {takes.value} takes, at most {most.value} holder at once")
    assert not os.path.exists(marker)
    assert lock.holder(locks, "app") is None


def _dead_holders_content(pid=999999999):
    return {"action": "release", "version": "1.3", "user": "dead", "since": "yesterday",
            "owner": f"elsewhere:{pid}:1", "fd": 3, "pid": pid, "host": "elsewhere"}


def test_threads_racing_for_a_stale_lock_make_one_holder(locks):
    # the old defect: takers that each saw a dead holder each took the lock over. With the
    # kernel's lock, a lock whose holder died is simply free: exactly one taker gets it.
    rounds, takers = 40, 12
    path = os.path.join(locks, "app.lock")
    os.makedirs(locks)
    before, after, released = (threading.Barrier(takers + 1) for _ in range(3))
    results = [[None] * takers for _ in range(rounds)]

    def taker(number):
        for round_ in range(rounds):
            before.wait()
            taken = lock.acquire(locks, "app", dict(INFO, user=f"t{number}"))
            results[round_][number] = taken
            after.wait()
            if taken["held"] is None and not lock.release(locks, "app"):
                results[round_][number] = "release failed"
            released.wait()

    threads = [threading.Thread(target=taker, args=(n,)) for n in range(takers)]
    for thread in threads:
        thread.start()
    for round_ in range(rounds):
        with open(path, "w") as fh:  # what a holder that died left (no flock on it any more)
            json.dump(_dead_holders_content(100000 + round_), fh)
        before.wait()
        after.wait()
        released.wait()
        assert lock.holder(locks, "app") is None
    for thread in threads:
        thread.join(10)
    for round_, row in enumerate(results):
        assert "release failed" not in row
        winners = [taken for taken in row if taken["held"] is None]
        assert len(winners) == 1, f"round {round_}: {len(winners)} takers took the stale lock"
        assert winners[0]["stale"]["pid"] == 100000 + round_


def _stale_taker(directory, start, done, results):
    start.wait()
    taken = lock.acquire(directory, "app", dict(INFO, user=f"p{os.getpid()}"))
    results.put((os.getpid(), taken))
    done.wait()
    if taken["held"] is None:
        lock.release(directory, "app")


def test_processes_racing_for_a_lock_whose_holder_was_killed_make_one_holder(locks):
    for round_ in range(3):
        ready = FORK.Event()
        doomed = FORK.Process(target=_take_and_sleep, args=(locks, ready), daemon=True)
        doomed.start()
        assert ready.wait(10)
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.join(10)
        takers = 10
        start, done, results = FORK.Barrier(takers), FORK.Event(), FORK.Queue()
        workers = [FORK.Process(target=_stale_taker, args=(locks, start, done, results))
                   for _ in range(takers)]
        for worker in workers:
            worker.start()
        got = [results.get(timeout=10) for _ in range(takers)]
        done.set()
        for worker in workers:
            worker.join(10)
        winners = [taken for _, taken in got if taken["held"] is None]
        assert len(winners) == 1, f"round {round_}: {len(winners)} processes took the dead holder's lock"
        assert winners[0]["stale"]["pid"] == doomed.pid
        assert lock.holder(locks, "app") is None


def test_asking_who_holds_does_not_make_a_free_lock_refused(locks):
    # BUG (pigeon_lock.holder): holder() asks the kernel by taking LOCK_SH for an instant; an
    # acquire(wait=0) (the default, what stacks uses without --wait) that runs in that instant
    # fails its LOCK_EX|LOCK_NB and is refused with "held by" the last content or
    # {"owner": "unknown"}, although nobody holds the lock. So `salt-run stacks.status` (which
    # calls holder()) run at the same time as an action can make the action fail "locked".
    stop = threading.Event()

    def ask():
        while not stop.is_set():
            lock.holder(locks, "app")

    askers = [threading.Thread(target=ask, daemon=True) for _ in range(2)]
    for asker in askers:
        asker.start()
    refused = []
    try:
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and len(refused) < 5:
            taken = lock.acquire(locks, "app", INFO)
            if taken["held"] is None:
                lock.release(locks, "app")
            else:
                refused.append(taken["held"])
    finally:
        stop.set()
        for asker in askers:
            asker.join(5)
    assert refused == [], f"a free lock was refused {len(refused)} times: held by {refused[0]}"


def test_a_wait_ends_untaken_when_stop_says_so(locks):
    with Holder(locks, "app"):
        asked = []
        started = time.monotonic()
        fds = len(os.listdir("/proc/self/fd"))
        result = lock.acquire(locks, "app", INFO, wait=10, poll=0.05,
                              stop=lambda: asked.append(1) or ({"user": "bob"} if len(asked) >= 3 else None))
        assert result["stopped"] == {"user": "bob"} and result["held"]["action"] == "release"
        assert time.monotonic() - started < 2 and len(asked) == 3
        assert len(os.listdir("/proc/self/fd")) == fds  # its descriptor closed
    assert lock.acquire(locks, "app", INFO, stop=lambda: {"user": "bob"}) == {"held": None, "stale": None}
    lock.release(locks, "app")
