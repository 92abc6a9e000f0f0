"""
State module ``stack_containers``: one stack's containers running on an app
minion, started all at once (stacks/running.sls). The work is done by the
execution module of the same name (``stack_containers.start``).
"""

try:
    from salt.exceptions import CommandExecutionError
except ImportError:  # pragma: no cover
    CommandExecutionError = RuntimeError

__virtualname__ = "stack_containers"


def __virtual__():
    return __virtualname__


def running(name, app, version, network, containers, keep=None, healthy_timeout=None, addresses=None):
    """
    The containers of one stack exist and run. First, with ``keep`` (the versions the
    registry knows), the app's containers of any other version are removed, this one's
    included: left by an interrupted action or a failed release, they never took traffic (``changes["leftovers_removed"]``:
    {version: [names]}). Then the stack's containers are created on the stack's network (and the
    app's default network for load-balanced services), all at once. With
    ``healthy_timeout`` (seconds), also healthy: the state waits for every container's
    docker HEALTHCHECK and fails naming those that are not, with their last check output.
    ``addresses`` ({minion: address}): the load-balanced containers publish their port on this
    minion's address, where HAProxy on another minion reaches them.

    .. code-block:: yaml

        app 1.2 containers:
          stack_containers.running:
            - app: app
            - version: '1.2'
            - network: pigeon-app-1.2
            - containers: [...]   # from the plan (pigeon_definition.containers on the master)
            - keep: ['1.1']       # the registry's versions
            - healthy_timeout: 30
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    if __opts__.get("test"):
        ret["result"] = None
        ret["comment"] = f"{len(containers)} containers of {app} {version} would be running"
        return ret
    try:
        if keep is not None:
            # this version's own containers too, when an earlier try left them: it starts clean
            leftovers = __salt__["stack_containers.remove_leftovers"](app, list(keep))
            if leftovers:
                ret["changes"]["leftovers_removed"] = leftovers
        changed = __salt__["stack_containers.start"](app, version, network, containers, addresses=addresses)
    except CommandExecutionError as exc:
        ret["result"] = False
        ret["comment"] = str(exc)
        return ret
    if changed:
        ret["changes"]["containers"] = changed
    ret["comment"] = f"{len(containers)} containers of {app} {version} running"
    if healthy_timeout:
        try:
            healthy = __salt__["stack_containers.wait_healthy"](app, version, len(containers),
                                                                timeout=healthy_timeout)
        except CommandExecutionError as exc:
            ret["result"] = False
            ret["comment"] = str(exc)
            return ret
        ret["comment"] = healthy["message"]
    return ret


def absent(name, app, version, network=None):
    """
    No container of one stack on this minion: they stop gracefully (their stop signal and
    timeout), all at once, and are removed; then the stack's network. Found by their
    labels, so a partly started stack is removed as well.

    .. code-block:: yaml

        app 1.2 gone:
          stack_containers.absent:
            - app: app
            - version: '1.2'
            - network: pigeon-app-1.2
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    if __opts__.get("test"):
        ret["result"] = None
        ret["comment"] = f"the containers of {app} {version} would be removed"
        return ret
    try:
        removed = __salt__["stack_containers.remove"](app, version, network)
    except CommandExecutionError as exc:
        ret["result"] = False
        ret["comment"] = str(exc)
        return ret
    if removed:
        ret["changes"]["removed"] = removed
    ret["comment"] = (f"{len(removed)} containers of {app} {version} removed" if removed
                      else f"no container of {app} {version}")
    return ret
