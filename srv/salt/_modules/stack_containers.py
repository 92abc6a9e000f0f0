"""
Execution module ``stack_containers``: the containers of one stack on an app
minion, found by the labels Pigeon gives them (``pigeon.app``,
``pigeon.version``), and the health gate of a release.

A container with a docker HEALTHCHECK counts as healthy when docker says
``healthy``; one without counts as healthy while it runs.
"""

import logging
import time

try:
    from salt.exceptions import CommandExecutionError
except ImportError:  # pragma: no cover - the pure part needs no salt
    CommandExecutionError = RuntimeError

log = logging.getLogger(__name__)

__virtualname__ = "stack_containers"


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


def _inspect(app, version):
    found = __salt__["docker.ps"](
        all=True, filters={"label": [f"pigeon.app={app}", f"pigeon.version={version}"]})
    result = {}
    for info in found.values():
        name = info["Names"][0].lstrip("/")
        result[name] = __salt__["docker.inspect_container"](name)["State"]
    return result


def wait_healthy(app, version, count, timeout=60, interval=0.5):
    """
    Wait until the ``count`` containers of a stack are healthy (docker HEALTHCHECK
    where the image has one). On timeout, fail naming the containers that are not,
    with their last check output.

    CLI Example:

    .. code-block:: bash

        salt '*' stack_containers.wait_healthy app 1.2 4 timeout=30
    """
    deadline = time.monotonic() + float(timeout)
    while True:
        ok, message = summarize(_inspect(app, version), int(count))
        if ok:
            return {"app": app, "version": version, "healthy": int(count), "message": message}
        if time.monotonic() >= deadline:
            raise CommandExecutionError(
                f"{app} {version} not healthy after {float(timeout):g}s: {message}")
        time.sleep(interval)


def forget_docker_client():
    """
    Close and forget the docker client this state run holds, so that states run with
    ``parallel: True`` after this one (forked processes) each open a client of their own
    instead of sharing the parent's connection (stacks/running.sls, stacks/absent.sls).

    CLI Example:

    .. code-block:: bash

        salt '*' stack_containers.forget_docker_client
    """
    client = __context__.pop("docker.client", None)
    if client is not None:
        try:
            client.close()
        except Exception:  # pylint: disable=broad-except
            pass
    return True
