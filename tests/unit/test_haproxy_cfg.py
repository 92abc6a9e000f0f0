"""
Unit tests for the haproxy formula's haproxy.cfg (haproxy/templates/haproxy.cfg.jinja), rendered
by Salt's own Jinja renderer with the context file.sls gives it: the formula's defaults and the
lab's apps (pigeon_pillar.loadbal_apps over srv/pillar/stacks.sls). The access log: one ring in
memory, written by the frontends only, in the log-format that haproxy_admin.access_lines reads.
HAProxy itself checks the rendered file in the lab (`haproxy -c` before each reload).
"""

import copy
import re

import pytest
import salt.config
import salt.utils.templates
import yaml

from fake_haproxy import ACCESS_LOG
from srv_modules import SALT_DIR, load, utils_dunder

pillar_module = load("_modules/pigeon_pillar.py", "pigeon_pillar_for_cfg")
pillar_module.__utils__ = utils_dunder(load("_utils/pigeon_schema.py", "pigeon_schema_for_cfg"),
                                       load("_utils/pigeon_definition.py", "pigeon_definition_for_cfg"),
                                       load("_utils/pigeon_statemachine.py", "pigeon_statemachine_for_cfg"))
admin = load("_utils/haproxy_admin.py", "haproxy_admin_for_cfg")
runtime = load("_modules/haproxy_runtime.py", "haproxy_runtime_for_cfg")
DEFAULTS = yaml.safe_load((SALT_DIR / "haproxy" / "parameters" / "defaults.yaml").read_text())["haproxy"]
LAB = yaml.safe_load((SALT_DIR.parent / "pillar" / "stacks.sls").read_text())["stacks"]


def render(**haproxy):
    """haproxy.cfg for the formula's defaults updated with ``haproxy``, serving the lab's apps."""
    opts = salt.config.minion_config(None)
    opts.update(file_client="local", file_roots={"base": [str(SALT_DIR)]})
    data = dict(copy.deepcopy(DEFAULTS), **haproxy)
    apps = pillar_module.loadbal_apps(list(data["frontends"]), stacks=copy.deepcopy(LAB))
    return salt.utils.templates.render_jinja_tmpl(
        (SALT_DIR / "haproxy" / "templates" / "haproxy.cfg.jinja").read_text(),
        {"opts": opts, "saltenv": "base", "haproxy": data, "apps": apps, "salt": {}, "grains": {}, "pillar": {}})


def sections(text):
    """{"<keyword> <name>": [its lines, stripped, comments left out]}."""
    found, current = {}, None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith(" "):
            current = found.setdefault(line.strip(), [])
        elif current is not None:
            current.append(line.strip())
    return found


@pytest.fixture(scope="module")
def cfg():
    return sections(render(frontends={"www": {"port": 8443, "preview_port": 4443},
                                      "other": {"port": 9443, "preview_port": 5443}},
                           tls={"certificate_source": "salt://pki/haproxy.pem"}))


def test_the_access_log_is_one_bounded_ring_in_memory(cfg):
    ring = cfg[f"ring {runtime.ACCESS_LOG}"]
    assert "format raw" in ring and "size 1048576" in ring  # the lines as logged, about 1 MB, no file


def test_every_frontend_logs_its_requests_to_the_ring(cfg):
    for name in ("frontend www", "frontend other"):
        lines = cfg[name]
        assert f"log ring@{runtime.ACCESS_LOG} len 2048 local0 info" in lines
        assert "option dontlognull" in lines
        assert sum(line.startswith("log-format ") for line in lines) == 1


def test_nothing_else_logs(cfg):
    """Backends have no logger (health checks and server state changes are not in the access log),
    and nothing logs to a file or to docker's log."""
    for name, lines in cfg.items():
        if not name.startswith("frontend "):
            assert not [line for line in lines if line.split()[0] in ("log", "log-format")], name
        assert not [line for line in lines if "log-health-checks" in line or "stdout" in line], name
    assert not re.search(r"^\s*log\s", "\n".join(cfg["global"]), re.M)


def test_the_log_format_is_what_access_lines_reads(cfg):
    [log_format] = [line for line in cfg["frontend www"] if line.startswith("log-format ")]
    fields = log_format[len("log-format "):].strip('"').split(" ")
    assert fields[0] == "%t"  # the accept date first
    assert fields[4] == "%b/%s"  # access_lines reads the backend in the fifth field
    assert fields[3] == "%[var(txn.pigeon_route)]" and fields[5] == "%ST"
    # lines HAProxy 2.6 wrote in that format (fake_haproxy.ACCESS_LOG) are read by their backend
    assert admin.access_lines("\n".join(ACCESS_LOG) + "\n\n", ["app_b"]) == [ACCESS_LOG[0], ACCESS_LOG[4]]
    parts = ACCESS_LOG[0].split(" ", len(fields) - 1)  # the request, last, has spaces of its own
    assert parts[4] == "app_b/s1" and parts[-1] == '"GET / HTTP/1.1"'


def test_an_apps_requests_no_stack_served_are_in_its_log():
    """The 503s of an outage (the app's route going to pigeon_no_stack) are the app's lines;
    another app's are not."""
    text = "\n".join(ACCESS_LOG) + "\n"
    assert admin.access_lines(text, ["shop_a", "shop_b"], app="shop") == [ACCESS_LOG[2], ACCESS_LOG[3]]
    assert admin.access_lines(text, ["app_a", "app_b"], app="app") == [ACCESS_LOG[0], ACCESS_LOG[1], ACCESS_LOG[4]]
    assert admin.access_lines(text, ["shop_a"]) == [ACCESS_LOG[3]]  # without app: the backends only
