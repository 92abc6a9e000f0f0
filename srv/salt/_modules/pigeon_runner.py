"""
Execution module ``pigeon_runner``, loaded on the master only (by the MasterMinion
that runs an orchestration): calls a function of the stacks runner in this process.

The orchestrations make their plan at render time (``stacks.plan``). Through
``saltutil.runner`` that call becomes a job of its own: a RunnerClient with its
own MasterMinion, a job id, events and a job-cache entry, about 0.1 s on the lab
for a function that takes a hundredth of that. This calls it directly instead,
in the same process and thread as the orchestration (as saltutil.runner does),
so the deploy lock the plan takes has the same owner as the steps that release it.

CLI Example (on the master):

.. code-block:: bash

    salt-run salt.cmd pigeon_runner.call stacks.status
"""

import salt.loader

try:
    from salt.exceptions import CommandExecutionError
except ImportError:  # pragma: no cover
    CommandExecutionError = RuntimeError

__virtualname__ = "pigeon_runner"


def __virtual__():
    if __opts__.get("__role") != "master":
        return (False, "pigeon_runner: on the master only (orchestrations)")
    return __virtualname__


def call(fun, **kwargs):
    """
    Call ``fun``, a function of the stacks runner, with ``kwargs``; return what it returns.
    """
    if not str(fun).startswith("stacks."):
        raise CommandExecutionError(f"pigeon_runner.call: {fun} is not a function of the stacks runner")
    runners = __context__.get("pigeon_runner.runners")
    if runners is None:
        runners = salt.loader.runner(__opts__, utils=__utils__, whitelist=["stacks"])
        __context__["pigeon_runner.runners"] = runners
    kwargs = {k: v for k, v in kwargs.items() if not k.startswith("__")}
    return runners[fun](**kwargs)
