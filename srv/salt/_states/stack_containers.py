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


def running(name, app, version, network, containers, healthy_timeout=None):
    """
    The containers of one stack exist and run: created on the stack's network (and the
    app's default network for load-balanced services), all at once. With
    ``healthy_timeout`` (seconds), also healthy: the state waits for every container's
    docker HEALTHCHECK and fails naming those that are not, with their last check output.

    .. code-block:: yaml

        app 1.2 containers:
          stack_containers.running:
            - app: app
            - version: '1.2'
            - network: pigeon-app-1.2
            - containers: [...]   # from the plan (stacks.containers on the master)
            - healthy_timeout: 30
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    if __opts__.get("test"):
        ret["result"] = None
        ret["comment"] = f"{len(containers)} containers of {app} {version} would be running"
        return ret
    try:
        changed = __salt__["stack_containers.start"](app, version, network, containers)
    except CommandExecutionError as exc:
        ret["result"] = False
        ret["comment"] = str(exc)
        return ret
    if changed:
        ret["changes"] = changed
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
