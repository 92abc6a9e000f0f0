"""
Run an action's orchestration (``orch/<action>.sls``) with its plan as the
whole of its pillar: ``{"pigeon_plan": plan}``.

This is what Salt's ``state.orchestrate`` runner does (salt/runners/state.py,
then the ``state.sls`` function of a MasterMinion), less one thing: Salt
compiles the master's pillar again for every orchestration it runs, and the
deploy runner has just compiled it to check the definition and make the plan.
The orchestrations read nothing of that pillar (``orch/steps.jinja`` reads
``pigeon_plan`` only), so the second compile bought nothing and cost about
0.4 s before every action's first step. Salt's ``HighState`` takes the pillar
it is given (``initial_pillar``) instead of compiling one.

The return is shaped as ``state.orchestrate``'s (``{"data": {<id>_master:
states or errors}, "outputter": "highstate", "retcode": 0|1}``), which ``pigeon_outcome.build`` reads;
progress events go out as the master's ``state_events`` config says, under the
``jid`` given (the deploy runner's, so the CLI follows them).

Reached as ``__utils__["pigeon_orchestrate.run"]`` from the deploy runner;
unit tests replace it with recorded returns, the integration tests run it.
"""

import logging

log = logging.getLogger(__name__)


def run(action, plan, jid=None, user=None):
    """
    Render and run ``orch.<action>`` on the master with pillar ``{"pigeon_plan": plan}``,
    as ``state.orchestrate orch.<action> pillar=...`` would. ``jid`` tags the progress
    events (one is made when None); ``user`` is who the minions' jobs are published as.
    """
    # pylint: disable=import-outside-toplevel
    import salt.config
    import salt.state
    import salt.utils.jid
    import salt.utils.state

    # the master minion's view of the master's config (salt.minion.MasterMinion), local files
    opts = salt.config.mminion_config(__opts__["conf_file"], dict(__opts__))
    opts = salt.utils.state.get_sls_opts(opts, saltenv="base", pillarenv=__opts__.get("pillarenv"))
    opts.update(file_client="local", test=False)
    if user:
        opts["user"] = user
    jid = jid or salt.utils.jid.gen_jid(opts)
    pillar = {"pigeon_plan": plan}
    with salt.state.HighState(opts, None, jid, initial_pillar=pillar) as highstate:
        highstate.push_active()
        try:
            high, errors = highstate.render_highstate({"base": [f"orch.{action}"]})
            if errors:  # the SLS did not render: a list of lines, as state.sls returns them
                log.error("pigeon: orch.%s did not render: %s", action, errors)
                return {"data": {opts["id"]: errors}, "outputter": "highstate", "retcode": 1}
            running = highstate.state.call_high(high, jid)
        finally:
            highstate.pop_active()
    data = {opts["id"]: running}
    return {"data": data, "outputter": "highstate", "retcode": 0 if salt.utils.state.check_result(data) else 1}
