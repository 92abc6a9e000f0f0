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

The return is shaped as ``state.orchestrate``'s (``{"data": {<master id>:
states or errors}, "outputter": "highstate", "retcode": 0|1}``), which ``pigeon_outcome.build`` reads;
a progress event goes out on the master's bus as each state ends (``_progress``),
under the ``jid`` given (the deploy runner's, so the CLI shows each step as it ends).

Reached as ``__utils__["pigeon_orchestrate.run"]`` from the deploy runner;
unit tests replace it with recorded returns, the integration tests run it.
"""

import logging

log = logging.getLogger(__name__)


CANCELLED = "not run: "  # the comment of a step that a cancel stopped, before its reason


def run(action, plan, jid=None, user=None, stop=None):
    """
    Render and run ``orch.<action>`` on the master with pillar ``{"pigeon_plan": plan}``,
    as ``state.orchestrate orch.<action> pillar=...`` would. ``jid`` tags the progress
    events (one is made when None); ``user`` is who the minions' jobs are published as.
    ``stop()``, asked before each step the plan marks ``cancellable``, gives a reason (one
    line) to run it no more: that step fails with ``CANCELLED`` and the reason, and what
    requires it does not run (a release's cleanup, an onfail, does).
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
            # a progress event as each state ends, whatever the master's state_events says
            # (Salt's own State.event sends none on a master: its opts say local)
            highstate.state.event = _progress(opts, jid)
            if stop is not None:
                highstate.state.call = _stoppable(highstate.state.call, plan, stop)
            running = highstate.state.call_high(high, jid)
        finally:
            highstate.pop_active()
    data = {opts["id"]: running}
    return {"data": data, "outputter": "highstate", "retcode": 0 if salt.utils.state.check_result(data) else 1}


def _stoppable(call, plan, stop):
    """State.call that asks ``stop()`` before each cancellable step of ``plan``, and runs a
    failing test state in its place when it gives a reason (Salt still times it, numbers it,
    reports its progress and skips what requires it)."""
    cancellable = {s["id"] for s in plan.get("steps") or [] if s.get("cancellable")}

    def asked():
        try:
            return stop()
        except Exception:  # pylint: disable=broad-except  (a cancel is a request: the run goes on)
            log.exception("pigeon: could not tell whether %s was cancelled; going on", plan.get("app"))
            return None

    def checked(low, *args, **kwargs):
        why = asked() if low.get("__id__") in cancellable else None
        if why:
            kept = {k: v for k, v in low.items() if k.startswith("__") or k in ("name", "order")}
            low = dict(kept, state="test", fun="configurable_test_state", changes=False, result=False,
                       comment=CANCELLED + why)
        return call(low, *args, **kwargs)

    return checked


def _progress(opts, jid):
    """State.event for this run: the event Salt sends with ``state_events`` on a minion
    (salt/job/<jid>/prog/<id>/<run number>, {"ret": the state's return, "len": states}),
    fired on the master's own event bus. A state that is started in parallel reports here
    when it starts (result None); its end is in the orchestration's return."""
    import salt.utils.event  # pylint: disable=import-outside-toplevel

    def event(chunk_ret, length, fire_event=False):  # pylint: disable=unused-argument
        tag = salt.utils.event.tagify([jid, "prog", opts["id"], str(chunk_ret.get("__run_num__"))], "job")
        try:
            with salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=False) as bus:
                bus.fire_event({"ret": chunk_ret, "len": length}, tag)
        except Exception:  # pylint: disable=broad-except  (progress is a courtesy: the run goes on)
            log.debug("pigeon: could not send the progress of %s", chunk_ret.get("__id__"), exc_info=True)

    return event
