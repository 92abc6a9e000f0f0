"""
Pigeon's command line, ``./stacks.py``: the CLI (``pigeon.cli``), its salt-api client
(``pigeon.saltapi``) and its errors (``pigeon.errors``). It talks to the master only
through salt-api; nothing here runs on the master.
"""
