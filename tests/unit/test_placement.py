"""
Unit tests of a stack spread over several app minions behind HAProxy reached by address
(``loadbal:servers``): the door's checks of the pillar key, the plan's placement (minions,
addresses, ports, servers), what the registry keeps and renders, the containers' published
ports. The multi-host lab proves it works (tests/multihost/test_blue_green.py); these pin
the rules and the refusals.
"""

import copy
import types

import pytest
import yaml

from srv_modules import SALT_DIR, load, utils_dunder

schema = load("_utils/pigeon_schema.py", "pigeon_schema_for_placement")
definition = load("_utils/pigeon_definition.py", "pigeon_definition_for_placement")
sm = load("_utils/pigeon_statemachine.py", "pigeon_statemachine_for_placement")
steps = load("_utils/pigeon_steps.py", "pigeon_steps_for_placement")
plan_utils = load("_utils/pigeon_plan.py", "pigeon_plan_for_placement")
minions = load("_utils/pigeon_minions.py", "pigeon_minions_for_placement")
registry_pillar = load("_pillar/pigeon_registry.py", "pigeon_registry_pillar_for_placement")

LAB = yaml.safe_load((SALT_DIR.parent / "pillar" / "stacks.sls").read_text())["stacks"]["app"]
SERVERS = {"network": "10.231.0.0/24", "first_port": 21000}


def addressed(**servers):
    d = copy.deepcopy(LAB)
    d["loadbal"]["servers"] = dict(SERVERS, **servers)
    return d


# --- the door: loadbal:servers ------------------------------------------------

@pytest.mark.parametrize("servers, words", [
    ({"network": "10.0.0.0/33", "first_port": 21000}, "is not an IPv4 network"),
    ({"network": "10.0.0.0/24 ; x", "first_port": 21000}, "is not an IPv4 network"),
    ({"network": "fd00::/64", "first_port": 21000}, "is not an IPv4 network"),
    ({"network": ["10.0.0.0/24"], "first_port": 21000}, "is not an IPv4 network"),
    ({"network": "10.0.0.0/24", "first_port": 80}, "first_port"),
    ({"network": "10.0.0.0/24", "first_port": 65530}, "first_port"),
    ({"network": "10.0.0.0/24", "first_port": "21000"}, "first_port"),
    ({"network": "10.0.0.0/24"}, "first_port is missing"),
    ({"first_port": 21000}, "network is missing"),
    ({"network": "10.0.0.0/24", "first_port": 21000, "grain": "ipv4"}, "unknown key 'grain'"),
    ("10.0.0.0/24", "stacks:app:loadbal:servers"),
])
def test_the_door_refuses_a_broken_servers_key_in_one_line(servers, words):
    d = copy.deepcopy(LAB)
    d["loadbal"]["servers"] = servers
    with pytest.raises(ValueError) as err:
        schema.check_definition("app", d)
    assert words in str(err.value) and "\n" not in str(err.value), err.value
    assert str(err.value).startswith("broken pillar: stacks:app:loadbal:servers")


def test_the_door_takes_a_good_servers_key_and_the_spans_agree():
    schema.check_definition("app", addressed())
    assert len(definition.port_span(addressed()["loadbal"], sm.slots())) == schema.SERVER_PORTS


# --- the plan: placement, ports, servers --------------------------------------

def expand(action, version, stacks, placement, balancers=("lb1",), d=None):
    entry = {"app": "app", "generation": 1, "routes": {},
             "stacks": {v: dict(s) for v, s in stacks.items()}}
    planned = sm.plan(copy.deepcopy(entry), action, version=version)
    return definition.expand("app", action, version, d or addressed(), entry, planned, sm.backend,
                             placement=placement, slots=sm.slots(), balancers=list(balancers))


def test_a_release_runs_count_replicas_on_every_app_minion_each_publishing_its_port():
    plan = expand("release", "2.0", {"1.0": {"state": "active", "slot": "a"}},
                  {"app2": "10.231.0.22", "app1": "10.231.0.21"})
    start = plan["start"]
    assert start["slot"] == "b" and start["addresses"] == {"app1": "10.231.0.21", "app2": "10.231.0.22"}
    # slot b: ports 21010.. ; web is load-balanced, count 2: two ports on each minion
    assert start["servers"] == [["10.231.0.21", 21010], ["10.231.0.21", 21011],
                                ["10.231.0.22", 21010], ["10.231.0.22", 21011]]
    assert start["expected_up"] == 4 and plan["servers"] == {"app_b": start["servers"]}
    published = {c["name"]: c.get("publish") for c in start["containers"]}
    assert published == {"app-2.0-api-1": None, "app-2.0-web-1": {"host": 21010, "container": 8080},
                         "app-2.0-api-2": None, "app-2.0-web-2": {"host": 21011, "container": 8080}}


def test_without_servers_the_plan_is_the_one_host_plan():
    plan = expand("release", "1.0", {}, {"app1": "10.0.0.1"}, d=copy.deepcopy(LAB))
    assert "servers" not in plan["start"] and plan["servers"] == {}
    assert all("publish" not in c for c in plan["start"]["containers"])
    assert plan["start"]["expected_up"] == 2


def test_no_app_minion_is_refused():
    plan = expand("release", "1.0", {}, {})
    assert plan["error"].startswith("no app minion with an accepted key matches stacks:app:config:target")


def test_more_servers_than_a_slot_has_are_refused():
    many = {f"app{n}": f"10.0.0.{n}" for n in range(1, 17)}  # 16 minions x 2 replicas > 30
    assert "more than its 30" in expand("release", "1.0", {}, many)["error"]


def test_a_load_balanced_service_that_publishes_its_own_port_is_refused():
    d = addressed()
    d["task_definitions"]["web"]["docker_config"]["port_bindings"] = ["8080:8080"]
    assert "sets port_bindings on a load-balanced service" in expand("release", "1.0", {}, {"a": "10.0.0.1"},
                                                                     d=d)["error"]


def test_activate_waits_for_the_servers_the_stack_was_released_with():
    servers = [["10.0.0.1", 21000], ["10.0.0.2", 21000], ["10.0.0.3", 21000]]
    plan = expand("activate", None, {"1.0": {"state": "release", "slot": "a", "servers": servers}},
                  {"app1": "10.0.0.1"})
    assert plan["gate"] == {"backend": "app_a", "expected_up": 3}


def test_two_load_balancers_switch_in_two_phases_with_the_routes_to_set_back():
    plan = expand("activate", None, {"1.0": {"state": "active", "slot": "a"},
                                     "2.0": {"state": "release", "slot": "b"}},
                  {"app1": "10.0.0.1"}, balancers=("lb2", "lb1"))
    assert plan["two_phase"] is True and plan["loadbal"]["balancers"] == ["lb1", "lb2"]
    # one routes step either way: with two LBs the orchestration makes it the runner
    # haproxy_switch.routes (tests/unit/test_render.py, test_haproxy_switch.py)
    assert [s["step"] for s in steps.steps(dict(plan, keep_failed=False))] == ["routes"]
    # the entry here has no routes: each key the switch sets goes back to none
    assert plan["previous_routes"] == {"app/production": None, "app/internal": None, "app/version/a": None,
                                       "app/version/b": None, "app/version/c": None, "app/canary": None,
                                       "app/maintenance": None}
    one = expand("activate", None, {"2.0": {"state": "release", "slot": "b"}}, {"app1": "10.0.0.1"})
    assert one["two_phase"] is False


def test_the_registry_keeps_the_servers_of_a_stack_it_started():
    plan = expand("release", "1.0", {}, {"app1": "10.0.0.1"})
    entry = sm.apply(sm.empty("app"), plan, "now", "me")
    assert entry["stacks"]["1.0"]["servers"] == [["10.0.0.1", 21000], ["10.0.0.1", 21001]]
    plan = expand("release", "1.0", {}, {"app1": "10.0.0.1"}, d=copy.deepcopy(LAB))
    assert "servers" not in sm.apply(sm.empty("app"), plan, "now", "me")["stacks"]["1.0"]


# --- the plan's own checks: overlapping ports, addresses --------------------------

@pytest.fixture
def loader(monkeypatch):
    utils = utils_dunder(schema, definition, sm, steps)
    monkeypatch.setattr(plan_utils, "_LOADER", utils)
    return utils


def test_overlapping_port_ranges_of_two_apps_are_refused(loader):
    other = addressed(first_port=21020)
    assert "overlaps stacks:shop's (21020-21049)" in plan_utils._overlap("app", addressed(), {"shop": other})
    assert plan_utils._overlap("app", addressed(), {"shop": addressed(first_port=21030)}) is None
    assert plan_utils._overlap("app", addressed(), {"app": addressed(), "dns": copy.deepcopy(LAB)}) is None


def test_a_minion_without_an_address_in_the_network_is_named(loader):
    loader["pigeon_minions.expected"] = lambda tgt, tgt_type: ["app1", "app2"]
    loader["pigeon_minions.addresses"] = lambda found, network: ({"app1": "10.231.0.21"}, ["app2"])
    where, refusal = plan_utils.placement("app", addressed())
    assert where is None and refusal.startswith("app2: no address in 10.231.0.0/24 among its ipv4 grains")


def test_addresses_come_from_the_grains_inside_the_network(monkeypatch):
    grains = {"app1": {"ipv4": ["fd00::1%x;evil", "127.0.0.1", "172.17.0.1", "10.231.0.21"]},
              "app2": {"ipv4": ["192.168.1.2", "not an address"]}, "app3": None}
    fake = types.SimpleNamespace(get_minion_data=lambda minion, opts: (minion, grains[minion], {}))
    monkeypatch.setattr(minions, "__opts__", {}, raising=False)
    monkeypatch.setitem(__import__("sys").modules, "salt.utils.minions", fake)
    import salt.utils  # pylint: disable=import-outside-toplevel
    monkeypatch.setattr(salt.utils, "minions", fake, raising=False)
    assert minions.addresses(["app1", "app2", "app3"], "10.231.0.0/24") == ({"app1": "10.231.0.21"},
                                                                             ["app2", "app3"])


# --- what load balancers render: the registry's servers --------------------------

def test_the_ext_pillar_gives_each_stacks_servers(monkeypatch):
    entries = {"app": {"routes": {"app/production": "app_a"}, "stacks": {
        "1.0": {"state": "active", "slot": "a", "servers": [["10.0.0.1", 21000]]},
        "2.0": {"state": "release", "slot": "b"}}}}
    cache = types.SimpleNamespace(list=lambda bank: list(entries), fetch=lambda bank, key: entries[key])
    monkeypatch.setattr(registry_pillar.salt.cache, "factory", lambda opts: cache)
    registry_pillar.__opts__ = {}
    assert registry_pillar.ext_pillar("lb1", {}) == {"pigeon": {
        "routes": {"app/production": "app_a"}, "servers": {"app": {"a": [["10.0.0.1", 21000]]}}}}


def test_the_formula_takes_the_servers_of_its_apps_by_address_only():
    pillar_module = load("_modules/pigeon_pillar.py", "pigeon_pillar_for_placement")
    pillar_module.__utils__ = utils_dunder(sm, definition)
    registered = {"app": {"a": [["10.0.0.1", 21000]], "z": [["10.0.0.1", 1]]},
                  "other": {"b": [["10.0.0.9", 22000]]}, "dns": {"a": [["10.0.0.8", 23000]]}}
    pillar_module.__pillar__ = {"pigeon": {"servers": registered},
                                "stacks": {"app": addressed(), "other": addressed(), "dns": copy.deepcopy(LAB)}}
    # not another app's, not a slot the state machine does not have, not an app resolved by DNS
    assert pillar_module.servers(["app", "dns"]) == {"app_a": [["10.0.0.1", 21000]]}
    assert pillar_module.servers(["nothing"]) == {}


# --- the app minion: its containers publish on its own address ------------------

def test_a_minion_publishes_on_its_own_address_only():
    containers = load("_modules/stack_containers.py", "stack_containers_for_placement")
    containers.__grains__ = {"id": "app2"}
    made = [{"name": "w", "docker_config": {"image": "x"}, "publish": {"host": 21010, "container": 8080}},
            {"name": "a", "docker_config": {"image": "x"}}]
    out = containers._published(made, {"app1": "10.0.0.1", "app2": "10.0.0.2"})
    assert out[0]["docker_config"]["port_bindings"] == ["10.0.0.2:21010:8080"]
    assert "port_bindings" not in out[1]["docker_config"] and "port_bindings" not in made[0]["docker_config"]
    with pytest.raises(Exception, match="app2 has no address in the plan"):
        containers._published(made, {"app1": "10.0.0.1"})
    assert containers._published(made[1:], None) == made[1:]


# --- only what starts containers places them; repair places anew -----------------

def test_a_rollback_needs_no_address_and_a_release_does(loader):
    loader["pigeon_minions.expected"] = lambda tgt, tgt_type: ["app1"]
    loader["pigeon_minions.addresses"] = lambda found, network: ({}, ["app1"])
    entry = {"app": "app", "generation": 2, "routes": {"app/production": "app_b", "app/internal": "app_b"},
             "stacks": {"1.0": {"state": "inactive", "slot": "a", "servers": [["10.0.0.1", 21000]]},
                        "2.0": {"state": "active", "slot": "b", "servers": [["10.0.0.1", 21010]]}}}
    loader["pigeon_registry.load"] = lambda app: copy.deepcopy(entry)
    rollback = plan_utils.make("app", "rollback", definition=addressed())
    assert "error" not in rollback and rollback["gate"] == {"backend": "app_a", "expected_up": 1}
    release = plan_utils.make("app", "deactivate", version="1.0", definition=addressed())
    assert "error" not in release
    assert plan_utils.make("app", "release", version="3.0", definition=addressed())["error"].startswith(
        "app1: no address in 10.231.0.0/24")


def test_a_release_refuses_while_stacks_of_the_other_kind_remain(loader):
    loader["pigeon_minions.expected"] = lambda tgt, tgt_type: ["app1"]
    loader["pigeon_minions.addresses"] = lambda found, network: ({"app1": "10.231.0.21"}, [])
    entry = {"app": "app", "generation": 2, "routes": {}, "stacks": {"1.0": {"state": "active", "slot": "a"}}}
    loader["pigeon_registry.load"] = lambda app: copy.deepcopy(entry)
    assert plan_utils.make("app", "release", version="2.0", definition=addressed())["error"] == (
        "stacks:app:loadbal:servers was added while the registry holds 1.0, reached the other way; "
        "deactivate it first (docs/multi-host.md)")
    entry["stacks"]["1.0"]["servers"] = [["10.231.0.21", 21000]]
    assert "removed while" in plan_utils.make("app", "release", version="2.0", definition=copy.deepcopy(LAB))["error"]


def test_a_repair_places_the_stacks_on_the_minions_there_are_and_records_their_servers():
    entry = {"app": "app", "generation": 4, "routes": {},
             "stacks": {"1.0": {"state": "active", "slot": "a", "servers": [["10.0.0.1", 21000], ["10.0.0.1", 21001],
                                                                             ["10.0.0.9", 21000], ["10.0.0.9", 21001]]}}}
    planned = sm.plan(copy.deepcopy(entry), "repair")
    plan = definition.expand("app", "repair", None, addressed(), entry, planned, sm.backend,
                             placement={"app1": "10.0.0.1"}, slots=sm.slots())
    assert plan["servers"] == {"app_a": [["10.0.0.1", 21000], ["10.0.0.1", 21001]]}
    assert plan["gates"] == {"app_a": 2}
    after = sm.replaced(entry, plan)
    assert after["generation"] == 5 and after["stacks"]["1.0"]["servers"] == plan["servers"]["app_a"]
    assert entry["stacks"]["1.0"]["servers"][2] == ["10.0.0.9", 21000]  # not changed in place
    assert sm.replaced(after, plan) is None  # placed as recorded: the registry stays
