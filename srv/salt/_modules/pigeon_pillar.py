"""
The ``stacks:`` pillar as a load balancer's formula may use it: the same checks as
the deploy runner's door (``_utils/pigeon_schema.py``), on the minion. The haproxy
formula (``haproxy/map.jinja``) takes its apps from here, so that no value of a
stack definition reaches ``haproxy.cfg`` unchecked: a broken definition fails the
formula with one line, and HAProxy keeps the configuration it runs.

CLI Example:

.. code-block:: bash

    salt lb-minion pigeon_pillar.loadbal_apps '[www]'
"""

try:
    from salt.exceptions import CommandExecutionError
except ImportError:  # pragma: no cover
    CommandExecutionError = RuntimeError

__virtualname__ = "pigeon_pillar"


def __virtual__():
    return __virtualname__


def loadbal_apps(frontends, stacks=None):
    """
    ``{app: loadbal}`` of the apps whose ``loadbal:frontend`` is one of ``frontends``,
    each checked (its name and its whole definition); ``stacks`` defaults to this
    minion's ``stacks:`` pillar. A broken one raises CommandExecutionError (one line).

    CLI Example:

    .. code-block:: bash

        salt lb-minion pigeon_pillar.loadbal_apps '[www]'
    """
    if stacks is None:
        stacks = __pillar__.get("stacks") or {}
    apps = {}
    for app, definition in sorted((stacks or {}).items(), key=lambda kv: str(kv[0])):
        loadbal = definition.get("loadbal") if isinstance(definition, dict) else None
        if not isinstance(loadbal, dict) or loadbal.get("frontend") not in list(frontends or []):
            continue
        try:
            __utils__["pigeon_schema.check_app"](app)
            __utils__["pigeon_schema.check_definition"](app, definition)
        except ValueError as exc:  # pigeon_schema.Invalid
            raise CommandExecutionError(f"haproxy: stacks:{str(app)[:60]!r} not rendered: {exc}") from None
        apps[app] = loadbal
    return apps
