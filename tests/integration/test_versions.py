"""
Versions that read as numbers (``1.0``, the pillar's default; ``2``; ``1.4``, as in
docs/ci.md) are versions like any other, end to end: YAML must never turn them into a
float or an int on the way (the demo formula, the plan, the registry, the labels, the
answers). Against the lab, checked by HTTP and by the registry.
"""

from conftest import APP, PREVIEW, PRODUCTION, app_status, reset_app


def serves(get, url, version):
    status, body = get(url)
    return status == 200 and body.startswith(f"{APP} {version} web "), (status, body)


def test_versions_that_read_as_numbers(stacks, get):
    reset_app(stacks)
    try:
        for version in ("1.0", "2", "1.4"):
            result = stacks("release", "--app-name", APP, "--version", version)
            assert result.rc == 0, result
            assert f"Finished release {APP} {version} in" in result.out
            ok, seen = serves(get, PREVIEW, version)
            assert ok, seen
            result = stacks("activate", "--app-name", APP)
            assert result.rc == 0, result
            ok, seen = serves(get, PRODUCTION, version)
            assert ok, seen
        # the registry keeps them as the strings they were: 1.0 is not 1, 2 is not 2.0
        states = {v: s["state"] for v, s in app_status(stacks)["stacks"].items()}
        assert states == {"1.4": "active", "2": "inactive"}, states
        result = stacks("rollback", "--app-name", APP)
        assert result.rc == 0, result
        ok, seen = serves(get, PRODUCTION, "2")
        assert ok, seen
    finally:
        reset_app(stacks)
