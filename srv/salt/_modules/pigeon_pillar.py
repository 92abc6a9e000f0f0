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
    each checked (its name and its whole definition), with ``backends``: the app's
    HAProxy backends as the plan names them (``pigeon_definition.backends``: one per
    slot, its name, its servers' DNS name and count), so that the formula derives no
    name itself. ``stacks`` defaults to this minion's ``stacks:`` pillar. A broken one
    raises CommandExecutionError (one line).

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
        # two apps on one frontend: each host name to one app, one app at most without hosts
        claimed = __utils__["pigeon_schema.frontend_claims"](app, stacks)
        if claimed:
            raise CommandExecutionError(f"haproxy: not rendered: {claimed}")
        apps[app] = dict(loadbal, backends=__utils__["pigeon_definition.backends"](
            app, __utils__["pigeon_statemachine.slots"](), __utils__["pigeon_statemachine.backend"], loadbal,
            version_key=__utils__["pigeon_statemachine.version_key"]))
    return apps


def haproxy_settings(haproxy):
    """
    The haproxy formula's settings (pillar ``haproxy:`` merged over its defaults, as
    ``haproxy/map.jinja`` has them), checked by ``pigeon_schema.check_haproxy`` before any of
    them reaches haproxy.cfg: returned as they are, or CommandExecutionError (one line).

    CLI Example:

    .. code-block:: bash

        salt lb-minion pigeon_pillar.haproxy_settings "$(salt-call --out=json pillar.get haproxy)"
    """
    try:
        __utils__["pigeon_schema.check_haproxy"](haproxy)
    except ValueError as exc:  # pigeon_schema.Invalid
        raise CommandExecutionError(f"haproxy: not rendered: {exc}") from None
    return haproxy


def routes_map(apps, routes=None):
    """
    The text of routes.map for these apps (the keys of ``loadbal_apps``): the routes the
    registry holds (``routes`` defaults to this minion's ``pigeon:routes`` pillar, from the
    ext_pillar pigeon_registry) whose app is one of them, in the same format as
    haproxy_runtime writes at runtime (``haproxy_maps.map_text``).

    CLI Example:

    .. code-block:: bash

        salt lb-minion pigeon_pillar.routes_map '[app]'
    """
    if routes is None:
        routes = (__pillar__.get("pigeon") or {}).get("routes") or {}
    mine = {str(k): str(v) for k, v in routes.items() if v and str(k).split("/")[0] in list(apps or [])}
    return __utils__["haproxy_maps.map_text"](mine)


def servers(apps, registered=None):
    """
    The servers the registry holds for these apps' slots that HAProxy reaches by address, as
    haproxy_runtime.sync_servers takes them: {backend: [[address, port], ...]}.
    ``registered`` defaults to this minion's ``pigeon:servers`` pillar ({app: {slot:
    servers}}, from the ext_pillar pigeon_registry).

    CLI Example:

    .. code-block:: bash

        salt lb-minion pigeon_pillar.servers '[app]'
    """
    if registered is None:
        registered = (__pillar__.get("pigeon") or {}).get("servers") or {}
    stacks = __pillar__.get("stacks") or {}
    backend, known = __utils__["pigeon_statemachine.backend"], __utils__["pigeon_statemachine.slots"]()
    # only the slots of apps this minion serves by address (loadbal:servers): another app's
    # slots are resolved by DNS, and `set server` there would take them from it
    return {backend(str(app), str(slot)): [list(s) for s in found]
            for app, slots in sorted(registered.items(), key=lambda kv: str(kv[0]))
            if str(app) in list(apps or []) and isinstance(slots, dict)
            and __utils__["pigeon_definition.by_address"]((stacks.get(app) or {}).get("loadbal"))
            for slot, found in sorted(slots.items(), key=lambda kv: str(kv[0]))
            if slot in known and isinstance(found, list)}
