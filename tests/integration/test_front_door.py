"""
Many apps on one front door, on the lab: a second app `shop` (the demo app again) serves the
host name shop.pigeon.test on the same frontend as `app`, which keeps every other host. Each
host reaches its own app through every transition of the other; a host claimed twice is refused
in one line. The preview header and cookie reach the release stack on the production port, and
every response names the version and slot that answered. A server that dies costs no GET.
"""

import copy
import json
import pathlib
import subprocess
import time

import pytest
import requests
import yaml

from conftest import APP, LAB, PREVIEW, PRODUCTION, Load, act, app_status, new_version, only_active, reset_app

SALT = [str(LAB / "venv/bin/salt"), "-c", str(LAB / "etc/salt"), "lab-minion"]
TEST_PILLAR = LAB / "pillar" / "test_stacks.sls"
HAPROXY_CFG = pathlib.Path("/srv/pigeon/haproxy/etc/haproxy.cfg")
SHOP, SHOP_HOST = "shop", "shop.pigeon.test"
LAB_STACKS = yaml.safe_load((pathlib.Path(__file__).resolve().parents[2] / "srv/pillar/stacks.sls").read_text())


def definition(**loadbal):
    """The lab's app definition, served on the hosts given (``hosts=[...]``) or on every other."""
    found = copy.deepcopy(LAB_STACKS["stacks"][APP])
    found["loadbal"].update(loadbal)
    found["config"]["build_dir"] = "/srv/pigeon/build/shop"
    return found


def write_pillar(**apps):
    TEST_PILLAR.write_text(yaml.safe_dump({"stacks": apps}))


def get(ca, url=PRODUCTION, host=None, **kwargs):
    headers = dict(kwargs.pop("headers", {}), **({"Host": host} if host else {}))
    response = requests.get(url, verify=ca, timeout=10, headers=headers, **kwargs)
    return response


def answer(response):
    """(app, version, X-Pigeon-Version, X-Pigeon-Slot) of a response."""
    app, version = response.text.split()[:2]
    return app, version, response.headers.get("X-Pigeon-Version"), response.headers.get("X-Pigeon-Slot")


@pytest.fixture
def shop(stacks):
    """The app `shop` on shop.pigeon.test, beside `app`; gone afterwards (its stacks, the pillar,
    HAProxy's config)."""
    write_pillar(shop=definition(hosts=[SHOP_HOST]))
    try:
        yield SHOP
    finally:
        write_pillar(shop=definition(hosts=[SHOP_HOST]))
        reset_app(stacks, SHOP)
        TEST_PILLAR.unlink()
        subprocess.run(SALT + ["state.apply", "haproxy"], capture_output=True, check=True)


@pytest.fixture
def app_active(stacks):
    """`app` with one active stack and nothing else; its version."""
    return only_active(stacks, "fd")


def test_each_host_reaches_its_own_app_through_every_transition_of_the_other(stacks, ca, shop, app_active):
    s1 = new_version("s1")
    act(stacks, "release", "--app-name", SHOP, "--version", s1)  # converges HAProxy: shop's host and slots
    act(stacks, "activate", "--app-name", SHOP, "--version", s1)
    assert answer(get(ca, host=SHOP_HOST))[:2] == (SHOP, s1)
    assert answer(get(ca, host=f"{SHOP_HOST}:8443"))[:2] == (SHOP, s1)  # the port is not part of the name
    assert answer(get(ca, host="SHOP.pigeon.test"))[:2] == (SHOP, s1)  # nor the case
    assert answer(get(ca))[:2] == (APP, app_active)  # localhost: no app names it, so the app without hosts
    assert answer(get(ca, host="other.pigeon.test"))[:2] == (APP, app_active)

    a2 = new_version("fd2")
    with Load(ca, headers={"Host": SHOP_HOST}) as shop_load, Load(ca) as app_load:
        time.sleep(0.5)
        act(stacks, "release", "--app-name", APP, "--version", a2)
        act(stacks, "activate", "--app-name", APP, "--version", a2)
        act(stacks, "rollback", "--app-name", APP)
        act(stacks, "deactivate", "--app-name", APP, "--version", a2)
        time.sleep(0.5)
    assert shop_load.failures == [] and app_load.failures == []
    assert shop_load.apps == {SHOP: sum(shop_load.apps.values())} and set(shop_load.versions) == {s1}
    assert set(app_load.apps) == {APP} and set(app_load.versions) == {app_active, a2}

    s2 = new_version("s2")
    with Load(ca, headers={"Host": SHOP_HOST}) as shop_load, Load(ca) as app_load:
        time.sleep(0.5)
        act(stacks, "release", "--app-name", SHOP, "--version", s2)
        act(stacks, "activate", "--app-name", SHOP, "--version", s2)
        act(stacks, "rollback", "--app-name", SHOP)
        time.sleep(0.5)
    assert shop_load.failures == [] and app_load.failures == []
    assert set(shop_load.apps) == {SHOP} and set(shop_load.versions) == {s1, s2}
    assert set(app_load.apps) == {APP} and set(app_load.versions) == {app_active}
    # preview of each app on the preview port, by its host
    assert answer(get(ca, PREVIEW, host=SHOP_HOST))[:2] == (SHOP, s1)
    assert answer(get(ca, PREVIEW))[:2] == (APP, app_active)


def test_a_host_claimed_by_two_apps_is_refused_in_one_line_and_changes_nothing(stacks, shop):
    subprocess.run(SALT + ["state.apply", "haproxy"], capture_output=True, check=True)
    before = HAPROXY_CFG.read_bytes()
    write_pillar(shop=definition(hosts=[SHOP_HOST]), blog=definition(hosts=["blog.pigeon.test", SHOP_HOST]))

    result = stacks("release", "--app-name", "blog", "--version", "1.0")
    assert result.rc == 1, result
    assert result.err.strip() == (f"stacks.py: release blog 1.0 refused: broken pillar: stacks:blog:loadbal:hosts claims {SHOP_HOST}, which "
                                  f"stacks:shop on frontend www claims too; give each host to one app")
    applied = subprocess.run(SALT + ["state.apply", "haproxy", "--out=json"], capture_output=True, text=True)
    assert applied.returncode != 0
    assert f"stacks:blog:loadbal:hosts claims {SHOP_HOST}" in applied.stdout
    assert HAPROXY_CFG.read_bytes() == before
    assert app_status(stacks, "blog")["stacks"] == {}

    # two apps without hosts on one frontend: refused too, never one of them silently ignored
    write_pillar(shop=definition(hosts=[SHOP_HOST]), blog=definition())
    result = stacks("release", "--app-name", "blog", "--version", "1.0")
    assert result.rc == 1, result
    assert result.err.strip() == ("stacks.py: release blog 1.0 refused: broken pillar: stacks:blog and stacks:app both serve frontend www "
                                  "without loadbal:hosts; give one of them (or both) the host names it serves")


def test_the_preview_header_or_cookie_reaches_the_release_and_every_response_names_its_version(
        stacks, ca, app_active):
    release = new_version("fdr")
    act(stacks, "release", "--app-name", APP, "--version", release)
    slots = {v: s["slot"] for v, s in app_status(stacks)["stacks"].items()}

    plain = answer(get(ca))
    assert plain == (APP, app_active, app_active, slots[app_active])
    assert answer(get(ca, headers={"X-Pigeon-Preview": "1"})) == (APP, release, release, slots[release])
    assert answer(get(ca, cookies={"pigeon_preview": "1"})) == (APP, release, release, slots[release])
    assert answer(get(ca, headers={"X-Pigeon-Preview": "0"}))[1] == app_active
    assert answer(get(ca, PREVIEW)) == (APP, release, release, slots[release])

    # after the activate, production and its header say the new version
    act(stacks, "activate", "--app-name", APP, "--version", release)
    assert answer(get(ca)) == (APP, release, release, slots[release])
    # a deactivated slot's version is gone from the routes map
    act(stacks, "deactivate", "--app-name", APP, "--version", app_active)
    out = subprocess.run(SALT + ["haproxy_runtime.show_map", "--out=json"], capture_output=True, text=True, check=True)
    shown = json.loads(out.stdout)["lab-minion"]
    assert shown[f"{APP}/version/{slots[release]}"] == release
    assert f"{APP}/version/{slots[app_active]}" not in shown


def test_a_server_that_dies_costs_no_get_request(stacks, ca, app_active):
    """One of the active stack's two web containers is killed under load: HAProxy sends the GETs
    it could not deliver to the other one (retry-on conn-failure empty-response, redispatch)."""
    victim = subprocess.run(["docker", "ps", "-q", "--filter", f"label=pigeon.version={app_active}",
                             "--filter", "label=register_backend=true"],
                            capture_output=True, text=True, check=True).stdout.split()[0]
    with Load(ca) as load, Load(ca) as load2:
        time.sleep(1)
        subprocess.run(["docker", "kill", victim], capture_output=True, check=True)
        time.sleep(4)  # HAProxy's checks take the dead server out (fall 2 at 1 s); docker may restart it
    assert load.failures == [] and load2.failures == []
    assert sum(load.versions.values()) > 20
    # the stack comes back whole: a repair restarts what is missing
    act(stacks, "repair", "--app-name", APP)
