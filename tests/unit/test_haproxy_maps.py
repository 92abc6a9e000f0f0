"""
Unit tests for srv/salt/_utils/haproxy_maps.py: map files, their lock, and the edits of a running map.
"""

import threading
import time

import pytest

from fake_haproxy import MAP_REF
from srv_modules import load

hm = load("_utils/haproxy_maps.py", "haproxy_maps")


# --- files --------------------------------------------------------------------------


def test_atomic_write_map_writes_sorted_lines_under_a_header(tmp_path):
    path = tmp_path / "routes.map"
    path.write_text("stale content\n")

    hm.atomic_write_map(str(path), {"shop.example.com": "app_b", "api.example.com": "app_a"})

    assert path.read_text() == (
        "# managed by Salt (haproxy_runtime); changes will be overwritten\n"
        "api.example.com app_a\n"
        "shop.example.com app_b\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["routes.map"]


def test_read_map_file_skips_comments_and_blank_lines(tmp_path):
    path = tmp_path / "routes.map"
    path.write_text("# a comment\n\napi.example.com   app_a\n  shop.example.com app_b\n")

    assert hm.read_map_file(str(path)) == {"api.example.com": "app_a", "shop.example.com": "app_b"}
    assert hm.read_map_file(str(tmp_path / "missing.map")) == {}


def test_atomic_write_leaves_no_temporary_file_when_it_fails(tmp_path, monkeypatch):
    path = tmp_path / "server-state"
    path.write_text("old\n")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(hm.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        hm.atomic_write(str(path), "new\n")

    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["server-state"]


def test_map_lock_lets_one_writer_at_a_time(tmp_path):
    path = str(tmp_path / "routes.map")
    events = []

    def writer(name):
        with hm.map_lock(path):
            events.append(f"{name} in")
            time.sleep(0.1)
            events.append(f"{name} out")

    threads = [threading.Thread(target=writer, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [event.split()[1] for event in events] == ["in", "out", "in", "out"]
    assert (tmp_path / "routes.map.lock").exists()


# --- edits --------------------------------------------------------------------------


def test_token_error_refuses_what_the_cli_would_split():
    assert hm.token_error("shop.example.com", "route key") is None
    assert hm.token_error("app/production", "route key") is None
    assert hm.token_error("a b", "route key") == (
        "route key 'a b': must be a non-empty string without spaces or ';'; HAProxy's CLI cannot take it"
    )
    for bad in ("", "app_b;shutdown", "x\ny", None, 3):
        assert hm.token_error(bad, "backend for x")


def test_with_routes_sets_and_deletes_on_a_copy():
    on_disk = {"shop.example.com": "app_a", "old.example.com": "app_a"}

    updated = hm.with_routes(on_disk, {"shop.example.com": "app_b", "old.example.com": None, "gone": None})

    assert updated == {"shop.example.com": "app_b"}
    assert on_disk == {"shop.example.com": "app_a", "old.example.com": "app_a"}


def test_map_edits_set_add_del_in_key_order_and_nothing_for_keys_already_right():
    runtime = {"shop.example.com": "app_a", "old.example.com": "app_a", "www.example.com": "www"}
    wanted = {"shop.example.com": "app_b", "api.example.com": "app_b", "old.example.com": None,
              "www.example.com": "www", "gone.example.com": None}

    assert hm.map_edits(MAP_REF, wanted, runtime) == [
        ("api.example.com", f"add map {MAP_REF} api.example.com app_b", None, "app_b"),
        ("old.example.com", f"del map {MAP_REF} old.example.com", "app_a", None),
        ("shop.example.com", f"set map {MAP_REF} shop.example.com app_b", "app_a", "app_b"),
    ]
    assert hm.map_edits(MAP_REF, {"www.example.com": "www"}, runtime) == []


def test_differences_names_each_key_not_as_wanted():
    final = {"shop.example.com": "app_a", "api.example.com": "app_b"}

    assert hm.differences(final, {"shop.example.com": "app_b", "api.example.com": "app_b", "old": None}) == [
        "shop.example.com is 'app_a', expected 'app_b'"
    ]
    assert hm.differences(final, {"api.example.com": None}) == ["api.example.com is 'app_b', expected None"]
