"""
Execution module ``stack_containers``: the containers of one stack on an app
minion, found by the labels Pigeon gives them (``pigeon.app``,
``pigeon.version``): starting them all at once, and the health gate of a
release.

A container with a docker HEALTHCHECK counts as healthy when docker says
``healthy``; one without counts as healthy while it runs. Docker checks a running
stack only every ``config:health_interval`` seconds (30 by default: each check
forks a process through containerd and runc), so its first check of a new
container comes that late: while docker still says ``starting``, the gate runs
the container's own HEALTHCHECK test itself (``docker exec``, every
``PROBE_EVERY`` seconds, only while it waits).
"""

import concurrent.futures
import logging
import os
import re
import shutil
import time

try:
    from salt.exceptions import CommandExecutionError
except ImportError:  # pragma: no cover - the pure part needs no salt
    CommandExecutionError = RuntimeError

log = logging.getLogger(__name__)

__virtualname__ = "stack_containers"
PROBE_EVERY = 0.5  # seconds between the gate's own checks of one container (only while it waits)
FAIL_APART_MAX = 30.0  # seconds: the gate counts failures at the image's pace, at most this far apart
DOCKER_INTERVAL = 30 * 10**9  # docker's default interval and timeout of a health check (ns)
OUTPUT_LIMIT = 4096  # bytes of a check's output kept, as docker keeps
# a version, as the door checks it (pigeon_schema.VERSION_RE; tests/unit/test_one_source.py)
VERSION_RE = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")


def __virtual__():
    return __virtualname__


def health(state):
    """'healthy', 'unhealthy', 'starting' or 'not running' from docker inspect's State."""
    if not state.get("Running"):
        return "not running"
    checked = state.get("Health")
    if not checked:
        return "healthy"  # no HEALTHCHECK: running is all docker knows
    return checked.get("Status", "starting")


def last_check_output(state):
    """The output of the container's last health check, on one line."""
    log_ = (state.get("Health") or {}).get("Log") or []
    if not log_:
        return ""
    return " ".join(str(log_[-1].get("Output", "")).split())[:160]


def summarize(inspected, expected):
    """(ok, one-line message) from {name: State} and the number of containers expected."""
    bad = {name: health(state) for name, state in inspected.items() if health(state) != "healthy"}
    if len(inspected) < expected:
        return False, f"{len(inspected)} of {expected} containers exist"
    if bad:
        parts = []
        for name, status in sorted(bad.items()):
            output = last_check_output(inspected[name])
            parts.append(f"{name} {status}" + (f" ({output})" if output else ""))
        return False, f"{len(inspected) - len(bad)} of {len(inspected)} containers healthy; " + ", ".join(parts)
    return True, f"{len(inspected)} of {expected} containers healthy"


# ---------------------------------------------------------------------------
# starting a stack
def endpoints(container, stack_network):
    """[(network, aliases)] of one container of the plan (stacks.containers on the master):
    the stack's own network first (docker attaches it at creation), then the others."""
    pairs = []
    for entry in container["networks"]:
        for name, settings in entry.items():
            aliases = []
            for item in settings or []:
                aliases.extend(item.get("aliases", []) if isinstance(item, dict) else [])
            pairs.append((name, aliases))
    pairs.sort(key=lambda pair: pair[0] != stack_network)
    return pairs


def split_config(docker_config, client_args):
    """
    (image, create_container kwargs, create_host_config kwargs) from a service's
    docker_config, which takes docker_container.running's arguments: translated by
    saltext-dockermod as docker.create does, then split by what docker-py accepts.
    """
    config = dict(docker_config)
    image = config.pop("image")
    create, host, unknown = {}, {}, []
    for key, value in config.items():
        if key in client_args["host_config"]:
            host[key] = value
        elif key in client_args["create_container"] and key not in ("image", "name", "host_config",
                                                                    "networking_config"):
            create[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise CommandExecutionError(
            f"docker_config arguments docker does not know: {', '.join(sorted(unknown))}")
    return image, create, host


def _translate(docker_config):
    # pylint: disable=import-outside-toplevel
    import saltext.dockermod.utils.dockermod as dockerutils
    import saltext.dockermod.utils.dockermod.translate.container as translator

    return dockerutils.translate_input(translator, **docker_config)


def _docker_url():
    """docker.url from the minion's configuration or pillar, else DOCKER_HOST, else the default
    socket (None). Read before the threads start: Salt's dunders are not set in them."""
    return __salt__["config.option"]("docker.url", None) or os.environ.get("DOCKER_HOST")


def _client(url, timeout=60):
    """A docker client of our own (docker-py's APIClient is not shared between threads)."""
    import docker  # pylint: disable=import-outside-toplevel

    kwargs = {"version": "auto", "timeout": timeout}
    if url:
        kwargs["base_url"] = url
    return docker.APIClient(**kwargs)


def _ensure_networks(client, names):
    """Create the networks that do not exist yet."""
    existing = {n["Name"] for n in client.networks(names=list(names))}
    for name in names:
        if name not in existing:
            client.create_network(name, driver="bridge", labels={"pigeon.managed": "true"})


def _ensure_image(client, image):
    import docker  # pylint: disable=import-outside-toplevel

    try:
        client.inspect_image(image)
    except docker.errors.ImageNotFound:
        log.info("stack_containers: pulling %s", image)
        try:
            client.pull(image)  # docker-py splits repository and tag (latest when none)
        except docker.errors.APIError as exc:
            raise CommandExecutionError(
                f"image {image} is not on this minion and could not be pulled: {exc.explanation or exc}"
            ) from exc


def _start_one(url, container, stack_network, image, create, host):
    """Create (attached to the stack's network), connect the other networks, start. Runs in a
    thread: it uses no Salt dunder."""
    import docker  # pylint: disable=import-outside-toplevel

    client = _client(url)
    try:
        try:
            found = client.inspect_container(container["name"])
            state = found["State"]
        except docker.errors.NotFound:
            state = None
        if state is not None:
            labels = (found.get("Config") or {}).get("Labels") or {}
            mine = {k: container["labels"][k] for k in ("pigeon.app", "pigeon.version")}
            if {k: labels.get(k) for k in mine} != mine:
                raise CommandExecutionError(
                    f"{container['name']}: a container of that name is not {mine['pigeon.app']} "
                    f"{mine['pigeon.version']}'s (its labels say {labels.get('pigeon.app')} "
                    f"{labels.get('pigeon.version')}): two apps' names collide; rename one app or version")
        if state is not None:
            if state.get("Running"):
                return None
            client.start(container["name"])
            return "started"
        nets = endpoints(container, stack_network)
        first, first_aliases = nets[0]
        created = client.create_container(
            image, name=container["name"], labels=container["labels"],
            host_config=client.create_host_config(network_mode=first, **host),
            networking_config=client.create_networking_config(
                {first: client.create_endpoint_config(aliases=first_aliases)}),
            **create)
        for name, aliases in nets[1:]:
            client.connect_container_to_network(created["Id"], name, aliases=aliases)
        client.start(created["Id"])
        return "created"
    except docker.errors.APIError as exc:
        raise CommandExecutionError(f"{container['name']}: {exc.explanation or exc}") from exc
    finally:
        client.close()


def _published(containers, addresses):
    """The containers with a port to publish (``publish``: {"host", "container"}) given their
    docker port_bindings on this minion's address in ``addresses`` ({minion: address})."""
    if not any(c.get("publish") for c in containers):
        return containers
    mine = (addresses or {}).get(__grains__["id"])
    if not mine:
        raise CommandExecutionError(
            f"{__grains__['id']} has no address in the plan; its containers cannot publish the ports "
            "HAProxy reaches; run the release again (the plan is made for the minions it finds)")
    result = []
    for c in containers:
        if c.get("publish"):
            config = dict(c["docker_config"])
            config["port_bindings"] = [f"{mine}:{c['publish']['host']}:{c['publish']['container']}"]
            c = dict(c, docker_config=config)
        result.append(c)
    return result


def start(app, version, network, containers, addresses=None):
    """
    Start the containers of one stack at once, each in a thread with a docker client of
    its own: the stack's network first (created when missing, each container's service
    name as its alias there), then the other networks of the plan (the app's default
    network, with the slot's alias HAProxy resolves). Containers of the stack that exist
    already are started if stopped and left alone otherwise. ``containers`` comes from
    the plan (stacks.containers on the master).

    Returns {name: "created" | "started"} for what changed.

    CLI Example:

    .. code-block:: bash

        salt '*' stack_containers.start app 1.2 pigeon-app-1.2 '[...]'
    """
    import docker  # pylint: disable=import-outside-toplevel

    client_args = __salt__["docker.get_client_args"](["create_container", "host_config"])
    containers = _published(containers, addresses)
    prepared = []
    for c in containers:
        prepared.append((c, *split_config(_translate(c["docker_config"]), client_args)))
    url = _docker_url()
    client = _client(url)
    try:
        names = [network] + sorted({name for c in containers for name, _ in endpoints(c, network)} - {network})
        _ensure_networks(client, names)
        for image in sorted({image for _, image, _, _ in prepared}):
            _ensure_image(client, image)
    except docker.errors.DockerException as exc:
        raise CommandExecutionError(
            f"{app} {version}: docker refused the stack's networks or images: "
            f"{getattr(exc, 'explanation', None) or exc}") from exc
    finally:
        client.close()
    changed, failed = {}, []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(len(prepared), 1)) as pool:
        futures = {pool.submit(_start_one, url, c, network, image, create, host): c["name"]
                   for c, image, create, host in prepared}
        for future in concurrent.futures.as_completed(futures):
            try:
                result = future.result()
            except Exception as exc:  # pylint: disable=broad-except
                failed.append(str(exc) if isinstance(exc, CommandExecutionError)
                              else f"{futures[future]}: {exc}")
                continue
            if result:
                changed[futures[future]] = result
    if failed:
        raise CommandExecutionError(f"{app} {version}: {len(failed)} of {len(prepared)} containers "
                                    "did not start: " + "; ".join(sorted(failed)))
    return changed


def _inspect(app, version):
    found = __salt__["docker.ps"](
        all=True, filters={"label": [f"pigeon.app={app}", f"pigeon.version={version}"]})
    result = {}
    for info in found.values():
        name = info["Names"][0].lstrip("/")
        result[name] = __salt__["docker.inspect_container"](name)["State"]
    return result


def health_test(inspected, image=None):
    """
    The HEALTHCHECK of a container as docker inspect shows it (the image's, with what the
    container set over it), run as docker runs it: {cmd, timeout, retries, start_period,
    every} in seconds, or None when it has none. ``cmd`` goes through the image's SHELL
    (``/bin/sh -c`` by default) for CMD-SHELL. ``every`` is the pace docker would check at
    before Pigeon slowed it: the image's interval (``image``, docker inspect of the image),
    or the container's when shorter; the gate counts failures no closer than that.
    """
    config = inspected.get("Config") or {}
    check = config.get("Healthcheck") or {}
    test = list(check.get("Test") or [])
    if len(test) < 2 or test[0] not in ("CMD", "CMD-SHELL"):
        return None  # none, NONE, or inherited from nowhere
    shell = list(config.get("Shell") or ["/bin/sh", "-c"])
    cmd = shell + [" ".join(test[1:])] if test[0] == "CMD-SHELL" else test[1:]
    image_check = ((image or {}).get("Config") or {}).get("Healthcheck") or {}
    every = min(check.get("Interval") or DOCKER_INTERVAL, image_check.get("Interval") or DOCKER_INTERVAL)
    return {"cmd": cmd, "timeout": (check.get("Timeout") or DOCKER_INTERVAL) / 10**9,
            "retries": check.get("Retries") or 3, "start_period": (check.get("StartPeriod") or 0) / 10**9,
            "every": every / 10**9}


def read_exec(sock, deadline, limit=OUTPUT_LIMIT):
    """
    An exec's output from its attached socket (docker's multiplexed stream: 8-byte headers,
    stdout and stderr alike) until it ends or the deadline passes: (output, ended). At most
    ``limit`` bytes are kept, as docker keeps of a health check; the rest is read and dropped.
    """
    pending, output = b"", b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return output, False
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, OSError):
            return output, False
        if not chunk:
            return output, True
        pending += chunk
        while len(pending) >= 8:
            size = int.from_bytes(pending[4:8], "big")
            if len(pending) < 8 + size:
                break
            output = (output + pending[8:8 + size])[:limit]
            pending = pending[8 + size:]


def _describe(url, name):
    """The container's health test (health_test), read from docker; None when it has none."""
    client = _client(url, timeout=10)
    try:
        inspected = client.inspect_container(name)
        try:
            image = client.inspect_image(inspected.get("Image") or "")
        except Exception:  # pylint: disable=broad-except
            image = None  # the pace falls back to the container's interval
        return health_test(inspected, image)
    finally:
        client.close()


def _execute(url, name, test, timeout):
    """Run a container's health test once, as docker would, for at most ``timeout`` seconds:
    (passed, its output on one line). Every failure to run it, or to finish in time, is a
    failed check. Runs in a thread: it uses no Salt dunder."""
    deadline = time.monotonic() + timeout
    client = sock = None
    try:
        client = _client(url, timeout=max(timeout, 1.0))
        exec_id = client.exec_create(name, test["cmd"], stdout=True, stderr=True)
        sock = client.exec_start(exec_id, socket=True)
        output, ended = read_exec(getattr(sock, "_sock", sock), deadline)
        text = " ".join(output.decode(errors="replace").split())[:160]
        if not ended:
            return False, f"health check timed out after {timeout:g}s" + (f": {text}" if text else "")
        while True:  # docker records the exit a moment after the stream ends
            found = client.exec_inspect(exec_id)
            if not found.get("Running") or time.monotonic() > deadline + 2:
                return found.get("ExitCode") == 0, text
            time.sleep(0.02)
    except Exception as exc:  # pylint: disable=broad-except
        return False, " ".join(str(exc).split())[:160] or type(exc).__name__
    finally:
        for thing in (sock, client):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # pylint: disable=broad-except
                    pass


class Probes:
    """
    The gate's own checks of the containers docker still calls ``starting``, all due ones at
    once. ``describe(name)`` gives a container's test (health_test) or None; ``execute(name,
    test, timeout)`` runs it once: (passed, output). A container is known by its name and
    its start time, so one that docker restarted is checked afresh. A container whose check
    passed is shown healthy; one whose check failed ``retries`` times (failures at least
    ``every`` apart, after its start period) is shown unhealthy, as docker would mark it at
    that interval. Other containers are shown as docker says. No check runs past
    ``deadline`` (time.monotonic).
    """

    def __init__(self, describe, execute, deadline, clock=time.monotonic):
        self.describe, self.execute, self.deadline, self.clock = describe, execute, deadline, clock
        self.started = clock()
        self.tests, self.passed, self.failed, self.last = {}, {}, {}, {}

    def _due(self, key, now):
        if key not in self.tests:
            try:
                self.tests[key] = self.describe(key[0])
            except Exception:  # pylint: disable=broad-except
                return False  # gone or docker busy: docker's word stands this round
        return self.tests[key] is not None and now - self.last.get(key, -1e9) >= PROBE_EVERY

    def _record(self, key, now, passed, output):
        test = self.tests[key]
        if passed:
            self.passed[key] = output
            self.failed.pop(key, None)
            return
        count, at, _, _ = self.failed.get(key, (0, -1e9, "", False))
        if now - at >= min(test["every"], FAIL_APART_MAX) and now - self.started >= test["start_period"]:
            count, at = count + 1, now
        self.failed[key] = (count, at, output, count >= test["retries"])

    def view(self, inspected):
        """inspected ({name: State}) as the gate sees it."""
        now = self.clock()
        keys = {name: (name, state.get("StartedAt")) for name, state in inspected.items()}
        due = [keys[name] for name, state in inspected.items()
               if health(state) == "starting" and keys[name] not in self.passed and self._due(keys[name], now)]
        budget = self.deadline - now
        if due and budget > 0:
            for key in due:
                self.last[key] = now
            with concurrent.futures.ThreadPoolExecutor(max_workers=len(due)) as pool:
                results = pool.map(lambda k: self.execute(k[0], self.tests[k], min(self.tests[k]["timeout"], budget)),
                                   due)
                for key, (passed, output) in zip(due, results):
                    self._record(key, now, passed, output)
        shown = {}
        for name, state in inspected.items():
            key = keys[name]
            if health(state) == "starting" and key in self.passed:
                state = dict(state, Health={"Status": "healthy", "Log": [{"Output": self.passed[key]}]})
            elif health(state) == "starting" and key in self.failed:
                _, _, output, given_up = self.failed[key]
                state = dict(state, Health={"Status": "unhealthy" if given_up else "starting",
                                            "Log": [{"Output": output}]})
            shown[name] = state
        return shown


def wait_healthy(app, version, count, timeout=60, interval=0.1):
    """
    Wait until the ``count`` containers of a stack are healthy (docker HEALTHCHECK
    where the image has one; while docker still says ``starting``, the gate runs the
    test itself: see Probes). Fail naming the containers that are not, with their
    last check output: at once when one is unhealthy (its check failed ``retries``
    times in a row), else on timeout.

    CLI Example:

    .. code-block:: bash

        salt '*' stack_containers.wait_healthy app 1.2 4 timeout=30
    """
    started = time.monotonic()
    deadline = started + float(timeout)
    url = _docker_url()
    probes = Probes(lambda name: _describe(url, name),
                    lambda name, test, limit: _execute(url, name, test, limit), deadline)
    while True:
        inspected = probes.view(_inspect(app, version))
        ok, message = summarize(inspected, int(count))
        if ok:
            return {"app": app, "version": version, "healthy": int(count), "message": message}
        if any(health(state) == "unhealthy" for state in inspected.values()):
            raise CommandExecutionError(
                f"{app} {version} not healthy (its health check failed, "
                f"{time.monotonic() - started:.0f}s after the gate began): {message}")
        if time.monotonic() >= deadline:
            raise CommandExecutionError(
                f"{app} {version} not healthy after {float(timeout):g}s: {message}")
        time.sleep(interval)


# ---------------------------------------------------------------------------
# removing stacks
def _found(client, app, version=None):
    """{name: (version, stack network or None)} of the app's containers (one version's, or all)."""
    wanted = [f"pigeon.app={app}"] + ([f"pigeon.version={version}"] if version is not None else [])
    result = {}
    for info in client.containers(all=True, filters={"label": wanted}):
        labels = info.get("Labels") or {}
        name = info["Names"][0].lstrip("/")
        result[name] = (labels.get("pigeon.version", "?"), labels.get("pigeon.network"))
    return result


def _listed(url, app, version=None):
    """_found with a client of its own; docker not answering is one line."""
    try:
        client = _client(url)
        try:
            return _found(client, app, version)
        finally:
            client.close()
    except CommandExecutionError:
        raise
    except Exception as exc:  # pylint: disable=broad-except  (docker down, a broken connection)
        raise CommandExecutionError(f"{app} {version or ''}: docker does not answer: "
                                    f"{type(exc).__name__}: {exc}".replace("  ", " ")) from exc


def _remove_one(url, name, graceful):
    """Stop (gracefully: the container's stop signal and timeout) and remove one container.
    Runs in a thread: it uses no Salt dunder."""
    import docker  # pylint: disable=import-outside-toplevel

    try:
        client = _client(url)  # 60 s per call; a stop gets the container's stop timeout on top
    except docker.errors.DockerException as exc:
        raise CommandExecutionError(f"{name}: docker does not answer: {exc}") from exc
    try:
        if graceful:
            stop_timeout = client.inspect_container(name)["Config"].get("StopTimeout") or 10
            client.stop(name, timeout=int(stop_timeout))
        client.remove_container(name, force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        raise CommandExecutionError(f"{name}: {exc.explanation or exc}") from exc
    except Exception as exc:  # pylint: disable=broad-except  (a timeout, a broken connection)
        raise CommandExecutionError(f"{name}: {type(exc).__name__}: {exc}") from exc
    finally:
        client.close()


def _remove(url, found, networks, graceful):
    """Remove ``found`` containers at once, then ``networks``; the names removed."""
    import docker  # pylint: disable=import-outside-toplevel

    failed = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(len(found), 1)) as pool:
        futures = {pool.submit(_remove_one, url, name, graceful): name for name in found}
        for future in concurrent.futures.as_completed(futures):
            try:
                future.result()
            except Exception as exc:  # pylint: disable=broad-except
                failed.append(str(exc))
    if failed:
        raise CommandExecutionError(f"{len(failed)} of {len(found)} containers could not be "
                                    "removed: " + "; ".join(sorted(failed)))
    client = _client(url)
    try:
        for network in sorted(n for n in networks if n):
            try:
                client.remove_network(network)
            except docker.errors.NotFound:
                pass
    except docker.errors.APIError as exc:
        raise CommandExecutionError(f"network {network}: {exc.explanation or exc}") from exc
    finally:
        client.close()
    return sorted(found)


def remove(app, version, network=None):
    """
    Remove one stack from this minion: its containers (found by their labels, so a partly
    started stack goes too) stop gracefully, all at once, and are removed; then the stack's
    network. Returns the names of the containers removed.

    CLI Example:

    .. code-block:: bash

        salt '*' stack_containers.remove app 1.2 pigeon-app-1.2
    """
    url = _docker_url()
    found = _listed(url, app, str(version))
    networks = {net for _, net in found.values()} | ({network} if network else set())
    return _remove(url, found, networks, graceful=True)


def remove_leftovers(app, keep):
    """
    Remove the containers of ``app`` whose version is not in ``keep`` (the versions the
    registry knows): left by an interrupted action or a release kept with --keep-failed.
    They never took traffic: removed at once, without a graceful stop. Returns {version:
    [names]} of what was removed.

    CLI Example:

    .. code-block:: bash

        salt '*' stack_containers.remove_leftovers app '["1.1", "1.2"]'
    """
    url = _docker_url()
    found = {name: seen for name, seen in _listed(url, app).items() if seen[0] not in keep}
    if not found:
        return {}
    _remove(url, found, {net for _, net in found.values()}, graceful=False)
    removed = {}
    for name, (version, _) in sorted(found.items()):
        removed.setdefault(version, []).append(name)
    return removed


# ---------------------------------------------------------------------------
# the operator's views: what runs, and what it says
def _stack_containers(client, app, version=None, service=None):
    """docker's list entries of the app's containers (one version's, one service's, or all)."""
    wanted = [f"pigeon.app={app}"] + ([f"pigeon.version={version}"] if version is not None else [])
    wanted += [f"pigeon.service={service}"] if service is not None else []
    return client.containers(all=True, filters={"label": wanted})


def _viewed(app, what):
    """Run what(client) with a client of its own; docker not answering is one line."""
    try:
        client = _client(_docker_url())
        try:
            return what(client)
        finally:
            client.close()
    except CommandExecutionError:
        raise
    except Exception as exc:  # pylint: disable=broad-except  (docker down, a broken connection)
        raise CommandExecutionError(f"{app}: docker does not answer: {type(exc).__name__}: {exc}") from exc


def details(app, version=None):
    """
    The app's containers on this minion (one version's, or all), one dict each: name,
    version, slot, service, replica, image, state, status (docker's words, with the health),
    health, created (seconds since the epoch), ports (published, "host:port->port/proto").

    CLI Example:

    .. code-block:: bash

        salt 'app*' stack_containers.details app 1.4
    """
    def what(client):
        found = []
        for info in _stack_containers(client, app, version):
            labels = info.get("Labels") or {}
            status = str(info.get("Status") or "")
            found.append({
                "name": ((info.get("Names") or ["?"])[0]).lstrip("/"),
                "version": labels.get("pigeon.version"), "slot": labels.get("pigeon.slot"),
                "service": labels.get("pigeon.service"), "replica": labels.get("pigeon.replica"),
                "image": info.get("Image"), "state": info.get("State"), "status": status,
                "health": _health_of_status(status, info.get("State")),
                "created": info.get("Created"),
                "ports": sorted(f"{p.get('IP', '')}:{p['PublicPort']}->{p.get('PrivatePort')}/{p.get('Type')}"
                                for p in info.get("Ports") or [] if p.get("PublicPort")),
            })
        return sorted(found, key=lambda c: (str(c["version"]), c["name"]))

    return _viewed(app, what)


def _health_of_status(status, state):
    """healthy, unhealthy, starting, running (no HEALTHCHECK) or the container's state, from
    docker's list entry (its Status text says the health in brackets)."""
    if state != "running":
        return state or "unknown"
    for word in ("unhealthy", "health: starting", "healthy"):
        if f"({word})" in status:
            return word.replace("health: ", "")
    return "running"


LOGS_MAX = 262144  # characters of one container's log lines in an answer


def logs(app, version=None, service=None, tail=100):
    """
    The last ``tail`` lines of each of the app's containers on this minion (one version's,
    one service's, or all), time-stamped by docker: {container name: text}.

    CLI Example:

    .. code-block:: bash

        salt 'app*' stack_containers.logs app 1.4 service=web tail=20
    """
    def what(client):
        found = {}
        for info in _stack_containers(client, app, version, service):
            name = ((info.get("Names") or ["?"])[0]).lstrip("/")
            text = client.logs(name, stdout=True, stderr=True, timestamps=True, tail=int(tail))
            text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
            # bounded on its way through the event bus and salt-api: the newest lines kept
            found[name] = text if len(text) <= LOGS_MAX else "[older lines cut]\n" + text[-LOGS_MAX:].split("\n", 1)[-1]
        return found

    return _viewed(app, what)


# ---------------------------------------------------------------------------
# pruning the images of versions no stack uses
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"


def _version_of(template, repo_tag):
    """The version ``repo_tag`` ("repo:tag") is an image of, after the service's image
    ``template`` (pigeon_definition.image: "{version}" replaced, else the version as the tag),
    or None."""
    import re  # pylint: disable=import-outside-toplevel

    if "{version}" in template:
        before, _, after = template.partition("{version}")
        # the version only in the tag: after the repository's last ":" (past its last "/"),
        # so that no template can make an image of another repository look like the app's
        repository = before.rpartition(":")[0]
        if "{version}" in after or ":" not in before.rsplit("/", 1)[-1] or not repository \
                or ":" in after or "/" in after:
            return None
        pattern = re.escape(before) + f"({_TAG})" + re.escape(after)
    else:
        last = template.rsplit("/", 1)[-1]
        if ":" in last or "@" in last:  # a tag of its own: the same image for every version
            return None
        pattern = re.escape(template) + f":({_TAG})"
    match = re.fullmatch(pattern, repo_tag)
    return match.group(1) if match else None


def _prune_folders(build_dir, gone, dry_run, result):
    """Remove the folders of ``build_dir`` named as a version in ``gone`` (whose images prune
    removed), real folders only: a link or a file is left alone, and a folder of another name,
    or of a version whose image stays or that has no image of the app, is not the app's to
    remove. Into ``result``."""
    if os.path.islink(build_dir):
        result["errors"].append(f"{build_dir} is a link: its folders are left; name the real folder "
                                "in config:build_dir")
        return
    try:
        names = sorted(os.listdir(build_dir))
    except FileNotFoundError:
        return
    except OSError as exc:
        result["errors"].append(f"{build_dir}: {exc.strerror or exc}")
        return
    for name in names:
        path = os.path.join(build_dir, name)
        if name not in gone or not VERSION_RE.match(name) or os.path.islink(path) or not os.path.isdir(path):
            continue
        try:
            if not dry_run:
                shutil.rmtree(path)
            result["folders"].append(path)
        except OSError as exc:
            result["errors"].append(f"{path}: {exc.strerror or exc}")


def prune_images(app, templates, keep, last=3, dry_run=False, build_dir=None):
    """
    Remove the images of the app's versions that no stack uses: an image (``repo:tag``)
    that is a version of one of the services' image ``templates`` is kept when its
    version is in ``keep`` (the registry's), when a container (of any state) uses it, or
    when it is among the ``last`` newest other versions; the others are removed (untagged,
    never forced). With ``build_dir`` (the config formula's folder of one folder per version,
    ``config:build_dir``), the folders of the versions whose images go, go too. Returns {"removed":
    [repo:tag], "kept": [repo:tag], "folders": [removed folders], "errors": [one line]}.

    CLI Example:

    .. code-block:: bash

        salt 'app*' stack_containers.prune_images app '[pigeon/demoapp]' '[1.4, 1.3]' last=3
    """
    keep, templates = {str(v) for v in keep or []}, [str(t) for t in templates or []]

    def what(client):
        used = set()
        for info in client.containers(all=True):
            used.update({str(info.get("Image") or ""), str(info.get("ImageID") or "")})
        versions = {}  # version: (newest created, [repo:tag])
        for image in client.images():
            for repo_tag in image.get("RepoTags") or []:
                version = next((v for v in (_version_of(t, repo_tag) for t in templates) if v), None)
                if version is None:
                    continue
                if repo_tag in used or image.get("Id") in used:
                    keep.add(version)
                created, tags = versions.get(version, (0, []))
                versions[version] = (max(created, int(image.get("Created") or 0)), tags + [repo_tag])
        others = sorted((v for v in versions if v not in keep), key=lambda v: versions[v][0], reverse=True)
        kept_versions = keep | set(others[:max(int(last), 0)])
        result = {"removed": [], "kept": [], "folders": [], "errors": []}
        gone = set()  # the versions whose every image went: their build folders go too
        for version, (_, tags) in sorted(versions.items()):
            if version in kept_versions:
                result["kept"] += sorted(tags)
                continue
            failed = False
            for repo_tag in sorted(tags):
                try:
                    if not dry_run:
                        client.remove_image(repo_tag)
                    result["removed"].append(repo_tag)
                except Exception as exc:  # pylint: disable=broad-except  (in use meanwhile, gone already)
                    result["errors"].append(f"{repo_tag}: {str(exc).splitlines()[0][:200]}")
                    failed = True
            if not failed:
                gone.add(version)
        if build_dir:
            _prune_folders(str(build_dir), gone, dry_run, result)
        return result

    return _viewed(app, what)
