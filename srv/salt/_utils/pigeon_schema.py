"""
The one door: every value that reaches Pigeon from outside is checked here,
once, against a declared schema, before anything acts on it.

Outside means: the keyword arguments a salt-api user sends to the deploy
runner (``_runners/deploy.py``: ``deploy.release`` ... and the views
``stacks.status``, ``stacks.history``, ``stacks.details``, ``stacks.logs``), the fields of a CI webhook body or CI minion event
(``deploy.ci_event``), and the ``stacks:<app>`` pillar an author writes
(``check_definition``, called by ``stacks.plan``). ``stacks.py`` checks its
own arguments with the same rules before it sends them.

A request is a dict of keyword arguments. ``check(kind, values)`` returns the
values converted to their declared types, or raises ``Invalid`` with one line
naming the key and what is allowed. Unknown keys are refused; so are values of
another type (``"true"`` is not a boolean, ``30.5`` not an integer). Salt's
own keyword arguments (``__pub_user`` ...) are not the sender's and are
dropped before the check by ``outside_kwargs``.

Pure Python, no Salt: loaded by Salt as ``__utils__["pigeon_schema.check"]``
and imported by path in the unit tests.
"""

import ipaddress
import json
import math
import re

import yaml

ACTIONS = ("release", "activate", "deactivate", "rollback", "repair", "canary", "abort", "maintenance")
CI_ACTIONS = ACTIONS[:4]  # what a CI event may ask: a repair, a canary, a maintenance are an operator's call
# an app names containers, docker networks, HAProxy backends and map keys: it starts with a
# letter, and YAML must read it back as the same string (so `on`, `no`, `null`, `y` are refused)
APP_RE = re.compile(r"\A[a-z][a-z0-9_-]{0,40}\Z")
# a version is a docker image tag ("\Z", not "$": "$" lets a trailing newline in)
VERSION_RE = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
NONCE_RE = re.compile(r"\A[A-Za-z0-9_-]{16,64}\Z")
JID_RE = re.compile(r"\A[0-9]{20}\Z")  # a Salt job id
# a salt target, as a pillar author writes it: no newline, no control character
TARGET_RE = re.compile(r"\A[^\x00-\x1f\x7f]{1,512}\Z")
NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")  # frontends, docker networks, sls names
SLS_RE = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
# rendered into haproxy.cfg: an HTTP path without spaces, and an HAProxy time
CHECK_PATH_RE = re.compile(r"\A/[!-~]{0,255}\Z")
# a folder on the app minions (config:build_dir): absolute, plain names, no "." or ".." part
BUILD_DIR_RE = re.compile(r"\A(?:/(?!\.{1,2}(?:/|\Z))[A-Za-z0-9_.-]{1,64}){2,16}\Z")
HAPROXY_TIME_RE = re.compile(r"\A[0-9]{1,7}(us|ms|s|m|h|d)?\Z")
# a host name an app serves (loadbal:hosts), as HAProxy compares it: lower case, no port, no dot at the end
HOST_RE = re.compile(r"\A(?=.{1,253}\Z)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*"
                     r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
MAX_HOSTS = 64  # host names of one app
NETWORK_RE = re.compile(r"\A[0-9A-Fa-f:.]{2,39}(/[0-9]{1,3})?\Z")  # an IPv4 or IPv6 network, no scope
# an HTTP header or cookie name (haproxy:frontends:<name>:preview_header, preview_cookie)
HEADER_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
TARGET_TYPES = ("glob", "pcre", "list", "grain", "grain_pcre", "pillar", "pillar_pcre",
                "nodegroup", "range", "compound", "ipcidr")
MAX_WAIT = 3600  # seconds an action may wait for the deploy lock
# a maintenance message: 1-200 printable characters (str.isprintable: no control, format or line
# separator character, no space but ' ') of the Basic Multilingual Plane (Salt's YAML carries no
# more); HAProxy gets it in base64 (pigeon_statemachine.maintenance_value)
MAX_MESSAGE = 200


class Invalid(ValueError):
    """A value from outside is not what the schema allows (one line: the key and what is)."""


def _show(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Text:
    def __init__(self, pattern, allowed, noun="valid"):
        self.pattern, self.allowed, self.noun = pattern, allowed, noun

    def __call__(self, key, value):
        if not isinstance(value, str) or not self.pattern.match(value):
            raise Invalid(f"{key} {_show(value)} is not {self.noun}: {self.allowed}")
        return value


# words that YAML 1.1 (the spec, beyond what PyYAML implements) reads as booleans or null
YAML_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})


class AppName(Text):
    def __call__(self, key, value):
        value = super().__call__(key, value)
        if value in YAML_WORDS:
            raise Invalid(f"{key} {_show(value)} is not valid: YAML reads it as a boolean or "
                          "null, not as a name")
        if yaml.safe_load(value) != value:
            raise Invalid(f"{key} {_show(value)} is not valid: YAML reads it as "
                          f"{type(yaml.safe_load(value)).__name__}, not as a name")
        return value


class Flag:
    allowed = "true or false"

    def __call__(self, key, value):
        if not isinstance(value, bool):
            raise Invalid(f"{key} {_show(value)} is not valid: {self.allowed} (a boolean)")
        return value


class Integer:
    def __init__(self, low, high):
        self.low, self.high = low, high

    def __call__(self, key, value):
        if isinstance(value, float) and math.isfinite(value) and value == int(value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not self.low <= value <= self.high:
            raise Invalid(f"{key} {_show(value)} is not valid: a whole number from "
                          f"{self.low} to {self.high}")
        return value


class Message:
    """One line of text a person reads (a maintenance message)."""

    def __call__(self, key, value):
        if (not isinstance(value, str) or not 1 <= len(value) <= MAX_MESSAGE or not value.isprintable()
                or any(ord(c) > 0xFFFF for c in value)):
            raise Invalid(f"{key} {_show(value)} is not a message: 1-{MAX_MESSAGE} printable characters "
                          "on one line (no emoji)")
        return value


class OneOf:
    def __init__(self, *choices):
        self.choices = choices

    def __call__(self, key, value):
        if value not in self.choices or not isinstance(value, str):
            raise Invalid(f"{key} {_show(value)} is not valid: one of {', '.join(self.choices)}")
        return value


APP = AppName(APP_RE, "1-41 lower-case letters, digits, '-' and '_', starting with a letter")
VERSION = Text(VERSION_RE, "1-128 letters, digits, '_', '.', '-'; not starting with '.' or '-'",
               noun="a valid image tag")
WAIT = Integer(0, MAX_WAIT)
FLAG = Flag()

REVISION = Integer(0, 2**53)  # the registry's generation, as status shows it

# what every action accepts besides its own keys: a plan to look at, and the registry
# revision the caller checked (refused when it moved)
LOOK = {"dry_run": (FLAG, False), "expect_revision": (REVISION, False)}

# kind: {key: (checker, required)}
REQUESTS = {
    "release": {"app": (APP, True), "version": (VERSION, False), "keep_failed": (FLAG, False),
                "wait": (WAIT, False), **LOOK},
    "activate": {"app": (APP, True), "version": (VERSION, False), "bake": (Integer(0, MAX_WAIT), False),
                 "wait": (WAIT, False), **LOOK},
    "deactivate": {"app": (APP, True), "version": (VERSION, True), "force": (FLAG, False),
                   "wait": (WAIT, False), **LOOK},
    "rollback": {"app": (APP, True), "wait": (WAIT, False), **LOOK},
    "repair": {"app": (APP, True), "version": (VERSION, False), "wait": (WAIT, False), **LOOK},
    "canary": {"app": (APP, True), "version": (VERSION, False), "percent": (Integer(0, 100), True),
               "wait": (WAIT, False), **LOOK},
    "abort": {"app": (APP, True), "wait": (WAIT, False), **LOOK},
    "maintenance": {"app": (APP, True), "enable": (FLAG, True),
                    "message": (Message(), False),
                    "retry_after": (Integer(1, 86400), False), "wait": (WAIT, False), **LOOK},
    "cancel": {"app": (APP, True), "job": (Text(JID_RE, "a job id: 20 digits", noun="a job id"), False)},
    "prune": {"app": (APP, True), "keep_last": (Integer(0, 100), False), "dry_run": (FLAG, False)},
    "status": {"app": (APP, False), "observe": (FLAG, False)},
    "history": {"app": (APP, True), "limit": (Integer(0, 500), False)},
    "details": {"app": (APP, True), "version": (VERSION, False)},
    "proxy": {"app": (APP, True)},
    "logs": {"app": (APP, True), "version": (VERSION, False),
             "service": (Text(NAME_RE, "1-64 letters, digits, '_', '.', '-', starting with a letter or digit",
                              noun="a service name"), False),
             "tail": (Integer(1, 10000), False), "proxy": (FLAG, False)},
    # a CI webhook body or CI minion event (deploy.ci_event), after its signature was checked
    "ci": {"action": (OneOf(*CI_ACTIONS), True), "app": (APP, True), "version": (VERSION, False),
           "timestamp": (Integer(0, 2**40), False),
           "nonce": (Text(NONCE_RE, "16-64 letters, digits, '-' and '_'"), False)},
}


def check_app(app):
    """``app`` if it is a valid app name, else Invalid (one line)."""
    return APP("app", app)


def check_version(version):
    """``version`` if it is a valid version (an image tag), else Invalid (one line)."""
    return VERSION("version", version)


def outside_kwargs(kwargs):
    """The keyword arguments a sender gave: Salt's own (``__pub_*``, ``__user__``) dropped."""
    return {k: v for k, v in kwargs.items() if not (isinstance(k, str) and k.startswith("__"))}


def check(kind, values):
    """
    ``values`` checked against the schema of ``kind`` (a key of REQUESTS): the
    values, or Invalid (one line). Unknown and missing keys are refused.
    """
    schema = REQUESTS[kind]
    if not isinstance(values, dict):
        raise Invalid(f"{kind}: the request must be a mapping of keys to values")
    unknown = sorted(str(k) for k in values if k not in schema)
    if unknown:
        raise Invalid(f"{kind}: unknown key {_show(unknown[0])}; allowed: {', '.join(sorted(schema))}")
    result = {}
    for key, (checker, required) in schema.items():
        if key not in values or values[key] is None:
            if required:
                raise Invalid(f"{kind}: {key} is missing")
            continue
        result[key] = checker(key, values[key])
    return result


# ---------------------------------------------------------------------------
# the stacks:<app> pillar: what a pillar author may write (see docs/pillar.md)
def _mapping(path, value, required=True):
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise Invalid(f"broken pillar: {path} must be a mapping; see docs/pillar.md")
    return value


def _pillar_integer(path, value, low, high):
    try:
        return Integer(low, high)(path, value)
    except Invalid as exc:
        raise Invalid(f"broken pillar: {exc}; see docs/pillar.md") from None


def _pillar_text(path, value, pattern, allowed):
    try:
        return Text(pattern, allowed)(path, value)
    except Invalid as exc:
        raise Invalid(f"broken pillar: {exc}; see docs/pillar.md") from None


def _walk(path, value):
    """Every string of a definition: no character outside the BMP (ASCII-escaped JSON writes
    one as a surrogate pair, which YAML refuses) and no key over 1000 characters (YAML's
    limit for a key is 1024)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and len(json.dumps(key)) > 1000:
                raise Invalid(f"broken pillar: a key of {path} is over 1000 characters as JSON")
            _walk(f"{path}:{str(key)[:40]}", key)
            _walk(f"{path}:{str(key)[:40]}", item)
    elif isinstance(value, (list, tuple)):
        for n, item in enumerate(value):
            if isinstance(item, str) and len(json.dumps(item.partition("=")[0])) > 1000:
                # `key=value` items (labels, environment) become keys
                raise Invalid(f"broken pillar: {path}:{n} names a key over 1000 characters as JSON")
            _walk(f"{path}:{n}", item)
    elif isinstance(value, str) and any(ord(c) > 0xFFFF for c in value):
        raise Invalid(f"broken pillar: {path} has a character outside the Basic Multilingual "
                      "Plane (such as an emoji), which Salt's YAML cannot carry; see docs/pillar.md")


# stacks:<app>:bake (pigeon_bake): the window's seconds and the limits it must stay within
BAKE_KEYS = {"seconds": (0, MAX_WAIT), "max_5xx_percent": (0, 100), "max_response_ratio": (1, 1000),
             "min_requests": (1, 1000000)}

SERVER_PORTS = 30  # host ports an app's slots may publish (pigeon_definition.port_span: 3 slots of 10)


def _check_servers(path, servers):
    """``loadbal:servers``: HAProxy reaches the app minions by address. ``network`` (the
    addresses to pick from, a CIDR) and ``first_port`` (of SERVER_PORTS published ports)."""
    unknown = sorted(str(k) for k in servers if k not in ("network", "first_port"))
    if unknown:
        raise Invalid(f"broken pillar: {path} has unknown key {unknown[0][:60]!r}: network and "
                      "first_port only; see docs/pillar.md")
    for key in ("network", "first_port"):
        if key not in servers:
            raise Invalid(f"broken pillar: {path}:{key} is missing; see docs/pillar.md")
    network = servers["network"]
    try:
        if not isinstance(network, str):
            raise ValueError
        # IPv4 only: docker's port bindings and HAProxy's `set server addr` take it as is
        ipaddress.IPv4Network(network, strict=False)
    except ValueError:
        raise Invalid(f"broken pillar: {path}:network {_show(network)} is not an IPv4 network such as "
                      "10.0.0.0/24; see docs/pillar.md") from None
    _pillar_integer(f"{path}:first_port", servers["first_port"], 1024, 65536 - SERVER_PORTS)


def _check_hosts(path, hosts):
    """``loadbal:hosts``: the host names an app serves on its frontend (Host header, TLS SNI)."""
    if not isinstance(hosts, list) or not hosts:
        raise Invalid(f"broken pillar: {path} must be a list of host names such as "
                      "[shop.example.com]; see docs/pillar.md")
    if len(hosts) > MAX_HOSTS:
        raise Invalid(f"broken pillar: {path} names {len(hosts)} hosts, more than {MAX_HOSTS}; see docs/pillar.md")
    for n, host in enumerate(hosts):
        _pillar_text(f"{path}:{n}", host, HOST_RE,
                     "a host name in lower case, without port or trailing dot, such as shop.example.com")
    if len(set(hosts)) != len(hosts):
        twice = sorted(h for h in set(hosts) if hosts.count(h) > 1)[0]
        raise Invalid(f"broken pillar: {path} names {twice} twice; see docs/pillar.md")


def frontend_claims(app, definitions):
    """Why ``app`` cannot share its frontend with the other apps of ``definitions`` ({app:
    stacks:<app> pillar}), as one line, or None: a host name another app of the same frontend
    claims, or a second app without ``loadbal:hosts`` there (the one that gets every host no
    other app names). Each definition is taken as it is: the others' own checks refuse them."""
    def serving(name):
        definition = definitions.get(name)
        loadbal = definition.get("loadbal") if isinstance(definition, dict) else None
        return loadbal if isinstance(loadbal, dict) else {}

    mine = serving(app)
    frontend, hosts = mine.get("frontend"), mine.get("hosts") or []
    for other in sorted((definitions or {}), key=str):
        theirs = serving(other)
        if other == app or theirs.get("frontend") != frontend:
            continue
        their_hosts = theirs.get("hosts") or []
        shared = sorted(set(hosts) & set(h for h in their_hosts if isinstance(h, str))) if isinstance(
            their_hosts, list) else []
        if shared:
            return (f"broken pillar: stacks:{app}:loadbal:hosts claims {shared[0]}, which "
                    f"stacks:{other} on frontend {frontend} claims too; give each host to one app")
        if not hosts and not their_hosts:
            return (f"broken pillar: stacks:{app} and stacks:{other} both serve frontend {frontend} "
                    "without loadbal:hosts; give one of them (or both) the host names it serves")
    return None


def check_haproxy(haproxy):
    """The haproxy formula's pillar (``haproxy:``, merged over its defaults), as far as it reaches
    haproxy.cfg: each frontend's name, ports and preview header and cookie names (empty: off),
    the internal networks and the timeouts. Invalid (one line) or None."""
    base = "haproxy"
    haproxy = _mapping(base, haproxy)
    if "host_dir" in haproxy:  # bind-mounted into the container, removed by haproxy.clean
        _pillar_text(f"{base}:host_dir", haproxy["host_dir"], BUILD_DIR_RE,
                     "an absolute folder at least two deep, of plain names (no '.' or '..')")
    if "container_name" in haproxy:  # in the formula's docker commands
        _pillar_text(f"{base}:container_name", haproxy["container_name"], NAME_RE,
                     "1-64 letters, digits, '_', '.', '-'")
    frontends = _mapping(f"{base}:frontends", haproxy.get("frontends"))
    ports = {}
    for name, frontend in frontends.items():
        _pillar_text(f"{base}:frontends name", name, NAME_RE, "1-64 letters, digits, '_', '.', '-'")
        if name == "pigeon_metrics" or name.startswith("pigeon_"):
            raise Invalid(f"broken pillar: {base}:frontends:{name}: names starting with pigeon_ are "
                          "Pigeon's own; see docs/pillar.md")
        frontend = _mapping(f"{base}:frontends:{name}", frontend)
        for key in ("port", "preview_port"):
            if key not in frontend:
                raise Invalid(f"broken pillar: {base}:frontends:{name}:{key} is missing; see docs/pillar.md")
            port = _pillar_integer(f"{base}:frontends:{name}:{key}", frontend[key], 1, 65535)
            if port in ports:
                raise Invalid(f"broken pillar: {base}:frontends:{name}:{key} {port} is {ports[port]} too; "
                              "give each port to one use")
            ports[port] = f"{base}:frontends:{name}:{key}"
        for key in ("preview_header", "preview_cookie"):
            if frontend.get(key):
                _pillar_text(f"{base}:frontends:{name}:{key}", frontend[key], HEADER_RE,
                             "1-64 letters, digits, '-', '_' (or '' for none)")
    for key in ("preview_header", "preview_cookie"):
        if haproxy.get(key):
            _pillar_text(f"{base}:{key}", haproxy[key], HEADER_RE, "1-64 letters, digits, '-', '_' (or '' for none)")
    metrics = _mapping(f"{base}:metrics", haproxy.get("metrics"))
    if "port" not in metrics:
        raise Invalid(f"broken pillar: {base}:metrics:port is missing; see docs/pillar.md")
    if _pillar_integer(f"{base}:metrics:port", metrics["port"], 1, 65535) in ports:
        raise Invalid(f"broken pillar: {base}:metrics:port {metrics['port']} is "
                      f"{ports[metrics['port']]} too; give each port to one use")
    for path, networks in ((f"{base}:internal_networks", haproxy.get("internal_networks") or []),
                           (f"{base}:metrics:allow", metrics.get("allow") or [])):
        if not isinstance(networks, list):
            raise Invalid(f"broken pillar: {path} must be a list of networks; see docs/pillar.md")
        for n, network in enumerate(networks):
            try:
                # the text as written goes to haproxy.cfg and internal.acl: plain address digits
                # only (an IPv6 scope "%..." would carry anything past ipaddress)
                if not isinstance(network, str) or not NETWORK_RE.match(network):
                    raise ValueError
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise Invalid(f"broken pillar: {path}:{n} {_show(network)} is not a network "
                              "such as 10.0.0.0/8; see docs/pillar.md") from None
    for key, value in _mapping(f"{base}:timeouts", haproxy.get("timeouts"), required=False).items():
        _pillar_text(f"{base}:timeouts:{key}", value, HAPROXY_TIME_RE, "an HAProxy time such as 30s")


def check_definition(app, definition):
    """
    The checks of a ``stacks:<app>`` definition that Pigeon's steps rely on:
    Invalid (one line, naming the key) when a value would break a step or reach
    SLS text as something else than data. Returns None.
    """
    base = f"stacks:{app}"
    if not isinstance(definition, dict):
        raise Invalid(f"unknown app {app!r}: no {base} in pillar; check the app name or the "
                      "pillar (salt-run pillar.items on the master)")
    _walk(base, definition)
    for section in ("loadbal", "config"):
        if definition.get(section) is None:
            raise Invalid(f"broken pillar: {base}:{section} is missing; see docs/pillar.md")
        _mapping(f"{base}:{section}", definition[section])
    loadbal, config = definition["loadbal"], definition["config"]
    for key in ("target", "frontend", "default_network"):
        if not loadbal.get(key):
            raise Invalid(f"broken pillar: {base}:loadbal:{key} is missing; see docs/pillar.md")
    if not config.get("target"):
        raise Invalid(f"broken pillar: {base}:config:target is missing; see docs/pillar.md")
    for section, values in (("loadbal", loadbal), ("config", config)):
        _pillar_text(f"{base}:{section}:target", values["target"], TARGET_RE,
                     "a salt target on one line")
        target_type = values.get("target_type", "glob")
        if target_type not in TARGET_TYPES:
            raise Invalid(f"broken pillar: {base}:{section}:target_type {_show(target_type)} is "
                          f"not valid: one of {', '.join(TARGET_TYPES)}; see docs/pillar.md")
    for key in ("frontend", "default_network"):
        _pillar_text(f"{base}:loadbal:{key}", loadbal[key], NAME_RE,
                     "1-64 letters, digits, '_', '.', '-'")
    if config.get("formula") is not None:
        _pillar_text(f"{base}:config:formula", config["formula"], SLS_RE, "an sls name")
    if config.get("build_dir") is not None:
        _pillar_text(f"{base}:config:build_dir", config["build_dir"], BUILD_DIR_RE,
                     "an absolute folder at least two deep, of plain names (no '.' or '..')")
    if "health_interval" in config:
        _pillar_integer(f"{base}:config:health_interval", config["health_interval"], 1, 3600)
    prune = _mapping(f"{base}:prune", definition.get("prune"), required=False)
    if "after_deactivate" in prune and not isinstance(prune["after_deactivate"], bool):
        raise Invalid(f"broken pillar: {base}:prune:after_deactivate {_show(prune['after_deactivate'])} "
                      "is not true or false; see docs/pillar.md")
    if "keep_last" in prune:
        _pillar_integer(f"{base}:prune:keep_last", prune["keep_last"], 0, 100)
    healthcheck = _mapping(f"{base}:loadbal:healthcheck", loadbal.get("healthcheck"), required=False)
    if "timeout" in healthcheck:
        _pillar_integer(f"{base}:loadbal:healthcheck:timeout", healthcheck["timeout"], 1, 3600)
    if "path" in healthcheck:
        _pillar_text(f"{base}:loadbal:healthcheck:path", healthcheck["path"], CHECK_PATH_RE,
                     "an HTTP path starting with '/', without spaces")
    if "status" in healthcheck:
        _pillar_integer(f"{base}:loadbal:healthcheck:status", healthcheck["status"], 100, 599)
    if "interval" in healthcheck:
        _pillar_text(f"{base}:loadbal:healthcheck:interval", healthcheck["interval"], HAPROXY_TIME_RE,
                     "an HAProxy time such as 1s or 500ms")
    if "drain_timeout" in loadbal:
        _pillar_integer(f"{base}:loadbal:drain_timeout", loadbal["drain_timeout"], 0, 3600)
    if "backend_port" in loadbal:
        _pillar_integer(f"{base}:loadbal:backend_port", loadbal["backend_port"], 1, 65535)
    bake = _mapping(f"{base}:bake", definition.get("bake"), required=False)
    for key, (low, high) in BAKE_KEYS.items():
        if key in bake:
            _pillar_integer(f"{base}:bake:{key}", bake[key], low, high)
    unknown = sorted(str(k) for k in bake if k not in BAKE_KEYS)
    if unknown:
        raise Invalid(f"broken pillar: {base}:bake has unknown key {unknown[0][:60]!r}: "
                      f"{', '.join(BAKE_KEYS)} only; see docs/pillar.md")
    if loadbal.get("hosts") is not None:
        _check_hosts(f"{base}:loadbal:hosts", loadbal["hosts"])
    servers = _mapping(f"{base}:loadbal:servers", loadbal.get("servers"), required=False)
    if servers:
        _check_servers(f"{base}:loadbal:servers", servers)
    if definition.get("version") is not None:
        version = definition["version"]
        if isinstance(version, (int, float)) and not isinstance(version, bool):
            raise Invalid(f"broken pillar: {base}:version {version!r} is a number; quote it "
                          f"(version: '{version}'); see docs/pillar.md")
        _pillar_text(f"{base}:version", version, VERSION_RE, "an image tag")
    services = definition.get("task_definitions", definition.get("task_definition"))
    services = _mapping(f"{base}:task_definitions", services)
    if "count" in services:
        _pillar_integer(f"{base}:task_definitions:count", services["count"], 1, 100)
    if "task_definition" in definition:
        names = _mapping(f"{base}:task_definition:services", services.get("services"), required=False)
    else:
        names = {k: v for k, v in services.items() if k != "count"}
    for name in names:
        _pillar_text(f"{base}:task_definitions service name", name, NAME_RE,
                     "1-64 letters, digits, '_', '.', '-'")
