"""
A stack definition (the ``stacks:<app>`` pillar), expanded: its services and
replicas, the containers of one stack (name, labels, networks and
docker_config each), and a state machine's plan turned into what the
orchestration's steps need (targets, containers, backends, gates, networks).

Pure Python, no Salt: the plan (``pigeon_plan.make``) calls it as
``__utils__["pigeon_definition.expand"]``, the status view
(``_runners/stacks.py``) as ``...services``, the haproxy formula (through
``pigeon_pillar``) as ``...backends``; unit tests import it by path. The definition has passed ``pigeon_schema.check_definition``
before it gets here.
"""

import hashlib
import json

MAX_REPLICAS = 10  # load-balanced containers of a stack on one minion (DNS: its server-template size)
# the server-template size of a slot whose servers HAProxy reaches by address (loadbal:servers):
# every load-balanced container of the stack, on every app minion
SLOT_SERVERS = 30
RESERVED = ("name", "networks", "network_mode")  # docker_config keys Pigeon sets itself
# and those of a load-balanced service it publishes by address (loadbal:servers)
PUBLISHING = ("port_bindings", "publish", "publish_all_ports")
# seconds between docker's health checks of a running stack (config:health_interval): each
# check forks a process through containerd and runc, about 0.07 core a container at 1 s; the
# release's gate checks by itself while it waits (stack_containers.Probes)
HEALTH_INTERVAL = 30


def services(definition):
    """(count, {service: definition}) from task_definitions (README form) or task_definition."""
    if "task_definitions" in definition:
        td = dict(definition["task_definitions"] or {})
        count = td.pop("count", 1)
        return int(count), td
    td = definition.get("task_definition") or {}
    return int(td.get("count", 1)), dict(td.get("services") or {})


def labels(raw):
    """docker labels given as a dict, or a list of "key=value" strings and dicts."""
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    result = {}
    for item in raw or []:
        if isinstance(item, dict):
            result.update({str(k): str(v) for k, v in item.items()})
        else:
            key, _, value = str(item).partition("=")
            result[key] = value
    return result


def image(name, version):
    """The image of a version: ``{version}`` replaced, else the version as the tag when the
    name has no tag or digest of its own."""
    if "{version}" in name:
        return name.replace("{version}", version)
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last or "@" in last else f"{name}:{version}"


def image_templates(app, definition):
    """The image of each service before a version is put in (``image`` above), sorted."""
    _, defined = services(definition)
    return sorted({str(((sdef or {}).get("docker_config") or {}).get("image", app)) for sdef in defined.values()})


def slot_alias(app, slot):
    """The DNS name of a slot's servers on the app's default network: every load-balanced
    container of the stack in that slot has it as an alias; HAProxy resolves it."""
    return f"pigeon-{app}-{slot}"


def by_address(loadbal):
    """Whether HAProxy reaches the app's containers by address (``loadbal:servers``: the app
    minions' published ports, set at runtime) rather than by Docker's DNS on its own host."""
    return bool((loadbal or {}).get("servers"))


def backends(app, slots, backend, loadbal=None, version_key=None):
    """
    The HAProxy backends of an app, one per slot, as the load balancer's formula renders
    them (``pigeon_pillar.loadbal_apps``): [{"slot", "name" (``backend(app, slot)``),
    "alias" (the servers' DNS name), "servers" (the server-template's size), "by_address"
    (its servers are set at runtime by address, not resolved), "version_key" (the routes
    map key of the slot's version, ``version_key(app, slot)``)}].
    """
    addressed = by_address(loadbal)
    return [{"slot": slot, "name": backend(app, slot), "alias": slot_alias(app, slot),
             "servers": SLOT_SERVERS if addressed else MAX_REPLICAS, "by_address": addressed,
             "version_key": version_key(app, slot) if version_key else None}
            for slot in slots]


def first_port(loadbal, slot_index):
    """The first host port a slot's load-balanced containers publish on each app minion: the
    app's ``loadbal:servers:first_port``, MAX_REPLICAS ports a slot (``port_span``)."""
    return int(loadbal["servers"]["first_port"]) + slot_index * MAX_REPLICAS


def port_span(loadbal, slots):
    """The host ports the app's slots may publish: range(first, last + 1)."""
    first = int(loadbal["servers"]["first_port"])
    return range(first, first + len(slots) * MAX_REPLICAS)


def health_interval(definition):
    """Seconds between docker's health checks of the app's running containers."""
    return int((definition.get("config") or {}).get("health_interval") or HEALTH_INTERVAL)


def with_interval(healthcheck, seconds):
    """A service's docker_config healthcheck with Pigeon's interval where it sets none (docker
    takes the image's test, timeout and retries for what it leaves out)."""
    if healthcheck is not None and not isinstance(healthcheck, dict):
        return healthcheck  # docker refuses it when the container is created, in one line
    check = dict(healthcheck or {})
    if not any(key in check for key in ("interval", "Interval")):
        check["Interval"] = seconds * 10**9
    return check


def stack_network(app, version):
    """The docker network of one stack: its services reach each other by name there."""
    return f"pigeon-{app}-{version}"


def containers(app, version, slot, definition, publish_from=None):
    """The containers of one stack: name, labels, networks and docker_config each. With
    ``publish_from`` (a host port), the load-balanced ones also carry ``publish``: {"host":
    publish_from + their index, "container": the backend port}, the port HAProxy reaches them
    at on each app minion's address."""
    count, defined = services(definition)
    loadbal = definition["loadbal"]
    network = stack_network(app, version)
    result = []
    registered_so_far = 0
    for replica in range(1, count + 1):
        for service, sdef in sorted(defined.items()):
            config = dict((sdef or {}).get("docker_config") or {})
            marks = labels(config.pop("labels", None))
            registered = marks.get("register_backend", "").lower() == "true"
            marks.update({
                "pigeon.managed": "true", "pigeon.app": app, "pigeon.version": version,
                "pigeon.slot": slot, "pigeon.service": service, "pigeon.replica": str(replica),
                "pigeon.network": network,  # what removes the stack removes this too
            })
            networks = [{network: [{"aliases": [service]}]}]
            if registered:
                networks.append({loadbal["default_network"]: [{"aliases": [slot_alias(app, slot)]}]})
            config["image"] = image(config.get("image", app), version)
            config.setdefault("stop_timeout", 10)
            # docker's steady check: the image's HEALTHCHECK (test, timeout, retries) at
            # Pigeon's interval, unless the service sets its own healthcheck
            config["healthcheck"] = with_interval(config.get("healthcheck"), health_interval(definition))
            config.setdefault("restart_policy", "unless-stopped")
            made = {
                "name": f"{app}-{version}-{service}-{replica}",
                "service": service,
                "registered": registered,
                "labels": marks,
                "networks": networks,
                "docker_config": config,
            }
            if registered and publish_from is not None:
                made["publish"] = {"host": publish_from + registered_so_far,
                                   "container": int(loadbal.get("backend_port", 8080))}
            registered_so_far += 1 if registered else 0
            result.append(made)
    return result


def loadbal_hash(definition):
    """A digest of the app's loadbal: pillar; a release converges HAProxy when it changed."""
    return hashlib.sha256(json.dumps(definition["loadbal"], sort_keys=True, default=str)
                          .encode()).hexdigest()[:16]


def _stack(app, version, slot, definition, backend, placement=None, slots=None):
    """What the steps need to start one stack (its containers, network, backend and the
    servers HAProxy must have UP), or why the definition cannot make it (one line). With
    ``placement`` ({app minion: address}, for an app whose HAProxy reaches it by address), also
    its ``servers`` ([[address, port], ...] in minion order, each minion running every
    replica) and ``addresses`` (what each minion publishes its ports on)."""
    loadbal = definition["loadbal"]
    publish_from = first_port(loadbal, list(slots).index(slot)) if placement is not None else None
    cts = containers(app, version, slot, definition, publish_from=publish_from)
    registered = sum(1 for c in cts if c["registered"])
    if not registered:
        return f"broken pillar: no service of stacks:{app} is labelled register_backend=true"
    reserved = sorted({k for c in cts for k in c["docker_config"] if k in RESERVED})
    if reserved:
        return (f"broken pillar: stacks:{app} docker_config sets {', '.join(reserved)}, "
                "which Pigeon sets itself; remove it")
    if registered > MAX_REPLICAS:
        return (f"broken pillar: stacks:{app} would put {registered} containers in one "
                f"HAProxy slot, more than its {MAX_REPLICAS} servers; lower count")
    stack = {"backend": backend(app, slot), "network": stack_network(app, version), "expected_up": registered,
             "containers": cts}
    if placement is not None:
        own = sorted({k for c in cts if c["registered"] for k in c["docker_config"] if k in PUBLISHING})
        if own:
            return (f"broken pillar: stacks:{app} sets {', '.join(own)} on a load-balanced service, whose "
                    "port Pigeon publishes itself (loadbal:servers); remove it")
        if not placement:
            return (f"no app minion with an accepted key matches stacks:{app}:config:target "
                    f"{definition['config'].get('target')!r}; check the target and salt-key -L")
        servers = [[placement[minion], c["publish"]["host"]] for minion in sorted(placement)
                   for c in cts if c["registered"]]
        if len(servers) > SLOT_SERVERS:
            return (f"broken pillar: stacks:{app} would put {len(servers)} servers in one HAProxy slot "
                    f"({registered} on each of {len(placement)} app minions), more than its "
                    f"{SLOT_SERVERS}; lower count")
        stack.update(servers=servers, expected_up=len(servers), addresses=dict(placement))
    return stack


def expand(app, action, version, definition, entry, planned, backend, placement=None, slots=("a", "b", "c"),
           balancers=None):
    """
    ``planned`` (the state machine's plan of ``action`` on the registry ``entry``) with
    what the orchestration's steps need; ``backend(app, slot)`` names a slot's HAProxy
    backend, ``slots`` are the state machine's. ``placement`` ({app minion: address}) is
    where the app runs when HAProxy reaches it by address (``by_address``); ``balancers``,
    the load-balancer minions (two or more: the routes switch in two phases). Returns the
    plan, or {"error": one line} when the definition cannot make it.
    """
    loadbal = definition["loadbal"]
    if not by_address(loadbal):
        placement = None
    elif placement is None:
        placement = {}
    planned["loadbal"] = {
        "target": loadbal["target"],
        "target_type": loadbal.get("target_type", "glob"),
        "healthcheck_timeout": int((loadbal.get("healthcheck") or {}).get("timeout", 60)),
        "drain_timeout": int(loadbal.get("drain_timeout", 30)),
    }
    planned["config"] = {
        "target": definition["config"]["target"],
        "target_type": definition["config"].get("target_type", "glob"),
        "formula": definition["config"].get("formula"),
        "build_dir": definition["config"].get("build_dir"),
    }
    planned["loadbal"]["balancers"] = sorted(balancers or [])
    planned["two_phase"] = len(planned["loadbal"]["balancers"]) > 1
    # what a two-phase switch sets back when it fails on one load balancer: each key it routes, as it was
    planned["previous_routes"] = {key: (entry.get("routes") or {}).get(key) for key in planned.get("routes") or {}}
    planned["loadbal_hash"] = loadbal_hash(definition)
    # the load balancers get the app's config when its loadbal: pillar is new to the registry,
    # and when the app has no stack (its first release, or one after all were deactivated: the
    # app may have left the pillar meanwhile, and the load balancers its backends)
    planned["converge_loadbal"] = entry.get("loadbal_hash") != planned["loadbal_hash"] or not entry["stacks"]
    if planned["start"]:
        stack = _stack(app, planned["version"], planned["start"]["slot"], definition, backend, placement, slots)
        if isinstance(stack, str):
            return {"error": stack}
        # containers of versions the registry does not know were left by an interrupted
        # action (or a release kept with --keep-failed, this version's own included): the
        # release removes them first, so that it starts clean
        planned["start"].update(stack, keep=sorted(entry["stacks"]))
    for n, repaired in enumerate(planned.get("repair") or []):
        stack = _stack(app, repaired["version"], repaired["slot"], definition, backend, placement, slots)
        if isinstance(stack, str):
            return {"error": stack}
        # the first step removes the containers of versions the registry does not know
        repaired.update(stack, keep=sorted(entry["stacks"]) if n == 0 else None)
    if planned.get("repair"):
        planned["gates"] = {r["backend"]: r["expected_up"] for r in planned["repair"]}
    # the servers the routes step sets first (by address): those of the stacks it starts
    planned["servers"] = {s["backend"]: s["servers"] for s in [planned["start"] or {}] + list(
        planned.get("repair") or []) if s.get("servers")}
    if (action in ("activate", "rollback") or (action == "canary" and planned.get("traffic", {}).get("canary"))) \
            and not planned["noop"]:
        # production moves to this stack (a canary: a share of it): only if all its servers are UP
        stack = entry["stacks"][planned["version"]]
        slot = stack["slot"]
        planned["gate"] = {
            "backend": backend(app, slot),
            # by address: every server it was released with (count on each of its minions)
            "expected_up": len(stack["servers"]) if stack.get("servers") else sum(
                1 for c in containers(app, planned["version"], slot, definition) if c["registered"]),
        }
    if action == "deactivate" and planned["noop"]:
        # not in the registry: remove whatever an interrupted action left of it
        planned["stop"] = [{"version": version, "slot": None, "state": None}]
    for stop in planned["stop"]:
        stop["backend"] = backend(app, stop["slot"]) if stop["slot"] else None
        stop["network"] = stack_network(app, stop["version"])
    return planned
