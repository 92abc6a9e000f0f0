"""
Unit tests for many apps on one frontend (``loadbal:hosts``), the preview header and cookie,
the response headers naming the slot and version, and the retries: the pillar's checks
(``pigeon_schema``: ``_check_hosts``, ``frontend_claims``, ``check_haproxy``), the formula's
refusal of a host claimed twice (``pigeon_pillar.loadbal_apps``) and the rendered haproxy.cfg.
HAProxy itself runs them in tests/integration/test_front_door.py.
"""

import copy

import pytest

from srv_modules import load, utils_dunder
from test_haproxy_cfg import DEFAULTS, LAB, render, sections

schema = load("_utils/pigeon_schema.py", "pigeon_schema_for_front_door")
pillar_module = load("_modules/pigeon_pillar.py", "pigeon_pillar_for_front_door")
pillar_module.__utils__ = utils_dunder(schema, load("_utils/pigeon_definition.py", "pigeon_definition_for_fd"),
                                       load("_utils/pigeon_statemachine.py", "pigeon_statemachine_for_fd"))


def app(frontend="www", hosts=None, **loadbal):
    definition = copy.deepcopy(LAB["app"])
    definition["loadbal"].update(frontend=frontend, **loadbal)
    if hosts is not None:
        definition["loadbal"]["hosts"] = hosts
    return definition


# --- the door: loadbal:hosts ----------------------------------------------------------------


def test_the_door_takes_host_names_in_lower_case():
    schema.check_definition("shop", app(hosts=["shop.example.com", "www.shop.example.com", "localhost"]))


@pytest.mark.parametrize("hosts, says", [
    ("shop.example.com", "must be a list of host names"),
    ([], "must be a list of host names"),
    (["Shop.example.com"], "stacks:shop:loadbal:hosts:0 'Shop.example.com' is not valid: a host name in lower case"),
    (["shop.example.com:8443"], "without port"),
    (["shop.example.com."], "trailing dot"),
    (["a b"], "hosts:0"),
    (["x\nuse_backend evil"], "hosts:0"),
    (["*.example.com"], "hosts:0"),
    ([7], "hosts:0"),
    (["-shop.example.com"], "hosts:0"),
    (["a." * 127 + "com"], "hosts:0"),
    (["shop.example.com", "shop.example.com"], "names shop.example.com twice"),
    ([f"h{n}.example.com" for n in range(65)], "names 65 hosts, more than 64"),
])
def test_the_door_refuses_a_host_haproxy_could_misread(hosts, says):
    with pytest.raises(schema.Invalid) as error:
        schema.check_definition("shop", app(hosts=hosts))
    message = str(error.value)
    assert says in message and message.startswith("broken pillar: stacks:shop:loadbal:hosts")
    assert "\n" not in message


# --- the door: two apps on one frontend -----------------------------------------------------------


def test_apps_with_their_own_hosts_share_a_frontend_and_one_may_have_none():
    definitions = {"shop": app(hosts=["shop.example.com"]), "blog": app(hosts=["blog.example.com"]),
                   "app": app(), "other": app(frontend="elsewhere")}
    assert all(schema.frontend_claims(name, definitions) is None for name in definitions)


def test_a_host_claimed_by_two_apps_of_one_frontend_is_refused_for_each():
    definitions = {"shop": app(hosts=["shop.example.com", "www.example.com"]),
                   "blog": app(hosts=["www.example.com"])}
    assert schema.frontend_claims("shop", definitions) == (
        "broken pillar: stacks:shop:loadbal:hosts claims www.example.com, which stacks:blog on frontend "
        "www claims too; give each host to one app")
    assert "stacks:blog:loadbal:hosts claims www.example.com, which stacks:shop" in schema.frontend_claims(
        "blog", definitions)


def test_the_same_host_on_two_frontends_is_two_claims():
    definitions = {"shop": app(hosts=["www.example.com"]), "blog": app(frontend="other", hosts=["www.example.com"])}
    assert schema.frontend_claims("shop", definitions) is None


def test_two_apps_without_hosts_on_one_frontend_are_refused_not_one_silently_ignored():
    definitions = {"app": app(), "zoo": app()}
    assert schema.frontend_claims("zoo", definitions) == (
        "broken pillar: stacks:zoo and stacks:app both serve frontend www without loadbal:hosts; give one "
        "of them (or both) the host names it serves")


def test_the_claims_read_a_broken_neighbour_without_failing():
    definitions = {"shop": app(hosts=["shop.example.com"]), "bad": "text", "worse": {"loadbal": {"hosts": 5}},
                   "odd": {"loadbal": {"frontend": "www", "hosts": [None, "shop.example.com"]}}}
    assert "stacks:odd" in schema.frontend_claims("shop", definitions)


def test_the_formula_refuses_to_render_a_host_claimed_twice():
    pillar_module.__pillar__ = {"stacks": {"shop": app(hosts=["x.example.com"]), "blog": app(hosts=["x.example.com"])}}
    with pytest.raises(pillar_module.CommandExecutionError) as error:
        pillar_module.loadbal_apps(["www"])
    assert str(error.value) == ("haproxy: not rendered: broken pillar: stacks:blog:loadbal:hosts claims "
                                "x.example.com, which stacks:shop on frontend www claims too; give each host to one app")


# --- the door: the haproxy formula's pillar ---------------------------------------------------------


def test_the_formulas_defaults_pass():
    schema.check_haproxy(copy.deepcopy(DEFAULTS))


@pytest.mark.parametrize("change, says", [
    ({"frontends": {"www": {"port": 8443}}}, "haproxy:frontends:www:preview_port is missing"),
    ({"frontends": {"www": {"port": "8443\n", "preview_port": 4443}}}, "haproxy:frontends:www:port"),
    ({"frontends": {"www": {"port": 70000, "preview_port": 4443}}}, "haproxy:frontends:www:port"),
    ({"frontends": {"w w": {"port": 1, "preview_port": 2}}}, "haproxy:frontends name"),
    ({"frontends": {"www": {"port": 1, "preview_port": 2, "preview_header": "X-A) || TRUE"}}},
     "haproxy:frontends:www:preview_header"),
    ({"frontends": {"www": {"port": 1, "preview_port": 2, "preview_cookie": "a=1"}}},
     "haproxy:frontends:www:preview_cookie"),
    ({"internal_networks": ["10.0.0.0/8\nacl x"]}, "haproxy:internal_networks:0"),
    ({"internal_networks": "10.0.0.0/8"}, "haproxy:internal_networks must be a list"),
    ({"timeouts": {"client": "30s\n    option x"}}, "haproxy:timeouts:client"),
    ({"metrics": {"port": 8405, "allow": ["10.0.0.0/8 0.0.0.0/0"]}}, "haproxy:metrics:allow:0"),
    ({"metrics": {"port": "8405\nstats"}}, "haproxy:metrics:port"),
    ({"metrics": {}}, "haproxy:metrics:port is missing"),
    ({"internal_networks": ["::1%\n    stats admin if TRUE"]}, "haproxy:internal_networks:0"),
    ({"internal_networks": ["fe80::1%x 0.0.0.0/0"]}, "haproxy:internal_networks:0"),
    ({"metrics": {"port": 8405, "allow": ["fe80::1%x"]}}, "haproxy:metrics:allow:0"),
    ({"container_name": "x; touch /tmp/pwned"}, "haproxy:container_name"),
    ({"host_dir": "/srv/../etc"}, "haproxy:host_dir"),
    ({"frontends": {"www": {"port": 8443, "preview_port": 8443}}}, "is haproxy:frontends:www:port too"),
    ({"metrics": {"port": 8443}}, "haproxy:metrics:port 8443 is haproxy:frontends:www:port too"),
    ({"frontends": {"pigeon_metrics": {"port": 1, "preview_port": 2}}}, "names starting with pigeon_"),
])
def test_the_door_refuses_a_formula_value_that_would_reach_haproxy_cfg_as_text(change, says):
    with pytest.raises(schema.Invalid) as error:
        schema.check_haproxy(dict(copy.deepcopy(DEFAULTS), **change))
    assert says in str(error.value) and "\n" not in str(error.value)


def test_an_empty_preview_header_or_cookie_turns_it_off():
    schema.check_haproxy(dict(copy.deepcopy(DEFAULTS), frontends={
        "www": {"port": 1, "preview_port": 2, "preview_header": "", "preview_cookie": None}}))


# --- haproxy.cfg ------------------------------------------------------------------------------------


def render_apps(stacks, **haproxy):
    """haproxy.cfg's sections for these apps on the formula's defaults updated with ``haproxy``."""
    import test_haproxy_cfg
    saved = copy.deepcopy(test_haproxy_cfg.LAB)
    test_haproxy_cfg.LAB.clear()
    test_haproxy_cfg.LAB.update(stacks)
    try:
        return sections(render(**haproxy))
    finally:
        test_haproxy_cfg.LAB.clear()
        test_haproxy_cfg.LAB.update(saved)


TWO = {"shop": app(hosts=["shop.example.com", "www.shop.example.com"]), "app": app()}


def test_each_host_reaches_its_app_and_the_app_without_hosts_takes_the_rest():
    www = render_apps(TWO)["frontend www"]
    assert "acl pigeon_host_shop req.hdr(host),field(1,:),lower -m str shop.example.com" in www
    assert "acl pigeon_host_shop req.hdr(host),field(1,:),lower -m str www.shop.example.com" in www
    picks = [line for line in www if line.startswith("http-request set-var(txn.pigeon_app)")]
    # the Host header first, then the app without hosts for whatever is left
    assert picks == ["http-request set-var(txn.pigeon_app) str(shop) if pigeon_host_shop",
                     "http-request set-var(txn.pigeon_app) str(app) if !{ var(txn.pigeon_app) -m found }"]
    assert not any("ssl_fc_sni" in line for line in www)  # plain HTTP: no SNI


def test_with_tls_the_sni_names_the_app_when_the_host_header_does_not():
    www = render_apps(TWO, tls={"certificate_source": "salt://pki/haproxy.pem"})["frontend www"]
    assert "acl pigeon_sni_shop ssl_fc_sni,lower -m str www.shop.example.com" in www
    picks = [line for line in www if line.startswith("http-request set-var(txn.pigeon_app)")]
    assert picks[1] == ("http-request set-var(txn.pigeon_app) str(shop) if !{ var(txn.pigeon_app) -m found } "
                        "pigeon_sni_shop")


def test_the_preview_header_cookie_port_and_networks_reach_the_release_of_the_requests_app():
    www = render_apps(TWO)["frontend www"]
    assert "acl pigeon_preview_header req.hdr(X-Pigeon-Preview) -m str 1" in www
    assert "acl pigeon_preview_cookie req.cook(pigeon_preview) -m str 1" in www
    release = "pigeon_preview_port || pigeon_internal || pigeon_preview_header || pigeon_preview_cookie"
    assert f"http-request set-var(txn.pigeon_route) var(txn.pigeon_app),concat(/internal) if {release}" in www
    assert f"http-request set-var(txn.pigeon_route) var(txn.pigeon_app),concat(/production) unless {release}" in www


def test_no_preview_header_or_cookie_when_the_pillar_turns_them_off():
    www = render_apps(TWO, frontends={"www": {"port": 8443, "preview_port": 4443, "preview_header": "",
                                              "preview_cookie": ""}})["frontend www"]
    assert not any("pigeon_preview_header" in line or "pigeon_preview_cookie" in line for line in www)
    assert ("http-request set-var(txn.pigeon_route) var(txn.pigeon_app),concat(/internal) if "
            "pigeon_preview_port || pigeon_internal") in www


def test_every_slot_says_which_slot_and_version_answered_and_retries_only_idempotent_requests():
    cfg = render_apps(TWO)
    shop_b = cfg["backend shop_b"]
    assert "http-response set-header X-Pigeon-Slot b" in shop_b
    assert ("http-response set-header X-Pigeon-Version %[str(shop/version/b),"
            "map(/usr/local/etc/haproxy/maps/routes.map,unknown)]") in shop_b
    assert "http-request disable-l7-retry unless METH_GET || METH_HEAD || METH_OPTIONS" in shop_b
    assert {"retries 2", "option redispatch 1", "retry-on conn-failure empty-response"} <= set(cfg["defaults"])


def test_a_frontend_without_apps_answers_no_stack():
    cfg = render_apps(TWO, frontends={"www": {"port": 8443, "preview_port": 4443},
                                      "empty": {"port": 9443, "preview_port": 5443}})
    assert not any("use_backend" in line for line in cfg["frontend empty"])
    assert "default_backend pigeon_no_stack" in cfg["frontend empty"]


def test_the_metrics_frontend_serves_the_internal_networks_only():
    metrics = render_apps(TWO)["frontend pigeon_metrics"]
    assert metrics[0] == "bind :8405"
    assert "http-request deny deny_status 403 unless pigeon_internal" in metrics
    assert "http-request use-service prometheus-exporter if { path /metrics }" in metrics
    allowed = render_apps(TWO, metrics={"port": 9100, "allow": ["10.9.0.0/16"]})["frontend pigeon_metrics"]
    assert "acl pigeon_metrics_allowed src 10.9.0.0/16" in allowed and "bind :9100" in allowed


def test_every_frontend_gets_the_formulas_preview_header_unless_it_sets_its_own():
    cfg = render_apps({"shop": app(frontend="public", hosts=["shop.example.com"]), "app": app()},
                      frontends={"www": {"port": 8443, "preview_port": 4443},
                                 "public": {"port": 9443, "preview_port": 5443, "preview_header": "X-Shop-Preview"}})
    assert "acl pigeon_preview_header req.hdr(X-Pigeon-Preview) -m str 1" in cfg["frontend www"]
    assert "acl pigeon_preview_header req.hdr(X-Shop-Preview) -m str 1" in cfg["frontend public"]
    assert "acl pigeon_preview_cookie req.cook(pigeon_preview) -m str 1" in cfg["frontend public"]


def test_maintenance_spares_the_preview_port_and_internal_networks_only_and_a_canary_is_for_production():
    www = render_apps(TWO)["frontend www"]
    maintenance = next(line for line in www if line.startswith("http-request return status 503"))
    assert maintenance.endswith("if { var(txn.pigeon_maintenance) -m found } !pigeon_preview_port !pigeon_internal")
    share = next(line for line in www if line.startswith("http-request set-var(txn.pigeon_share)"))
    assert share.endswith("unless pigeon_preview_port || pigeon_internal || pigeon_preview_header || "
                          "pigeon_preview_cookie") or share.endswith(
        "if !pigeon_preview_port !pigeon_internal !pigeon_preview_header !pigeon_preview_cookie")


def test_the_configuration_carries_the_traffic_marker_the_runtime_asks_for():
    maps = load("_utils/haproxy_maps.py", "haproxy_maps_for_front_door")
    assert "backend " + maps.TRAFFIC_MARKER in render_apps(TWO)
    assert maps.needs_marker({"app/canary": "10"}) == maps.TRAFFIC_MARKER
    assert maps.needs_marker({"app/canary": None, "app/maintenance": None, "app/production": "app_a"}) is None
