"""
Races on shared files (issue 9): two apps switching their routes at the same time,
against the lab's running HAProxy. routes.map is one file for every app: each
writer changes only its own keys, under the map's flock, so both routes are right
after every round, in the file and in the running map.

The writers are two processes calling haproxy_runtime.set_routes (the module the
minion runs) on the lab's admin socket and map directory, released together by a
barrier each round, as two minion jobs of two apps' actions would run.
"""

import multiprocessing
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "unit"))
from srv_modules import load_with_utils  # noqa: E402

ROUNDS = 100
BACKENDS = ["app_a", "app_b", "app_c"]  # the lab's app's slots: backends that exist
KEYS = ["race-one/production", "race-two/production"]  # keys no frontend reads
UTILS = ["_utils/haproxy_admin.py", "_utils/haproxy_maps.py", "_utils/haproxy_health.py"]  # its __utils__


def _writer(key, offset, barrier, results):
    module = load_with_utils("_modules/haproxy_runtime.py", f"haproxy_runtime_race_{offset}", *UTILS)
    for n in range(ROUNDS):
        barrier.wait(timeout=60)
        backend = BACKENDS[(n + offset) % len(BACKENDS)]
        try:
            module.set_routes({key: backend})
            results.put((n, key, backend, None))
        except Exception as exc:  # pylint: disable=broad-except
            results.put((n, key, backend, str(exc)))
        barrier.wait(timeout=60)  # the round is checked before the next one starts


@pytest.fixture
def runtime():
    module = load_with_utils("_modules/haproxy_runtime.py", "haproxy_runtime_race_check", *UTILS)
    yield module
    module.set_routes({key: None for key in KEYS})


def test_two_apps_switching_at_once_keep_both_routes(runtime):
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(3)
    results = ctx.Queue()
    writers = [ctx.Process(target=_writer, args=(key, i, barrier, results)) for i, key in enumerate(KEYS)]
    for proc in writers:
        proc.start()
    lost = []
    try:
        for n in range(ROUNDS):
            barrier.wait(timeout=60)  # go
            done = [results.get(timeout=60) for _ in KEYS]
            assert all(error is None for *_, error in done), done
            want = {key: backend for _, key, backend, _ in done}
            on_disk = runtime.__utils__["haproxy_maps.read_map_file"](runtime.DEFAULT_MAPS_DIR + "/routes.map")
            running = runtime.show_map()
            for key, backend in want.items():
                if on_disk.get(key) != backend or running.get(key) != backend:
                    lost.append((n, key, backend, on_disk.get(key), running.get(key)))
            barrier.wait(timeout=60)  # next round
    finally:
        for proc in writers:
            proc.join(timeout=60)
    print(f"\nraces: {ROUNDS} rounds of two apps switching at once, {len(lost)} routes lost")
    assert lost == []
