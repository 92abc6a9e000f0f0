#!/usr/bin/env python3
"""
stacks.py: blue/green deployments of dockerized apps, through salt-api.

    ./stacks.py release    --app-name APP --version V   # start V, internal/preview traffic only
    ./stacks.py activate   --app-name APP [--version V] # V takes production; the old active stays as rollback target
    ./stacks.py rollback   --app-name APP               # the inactive stack takes production back
    ./stacks.py deactivate --app-name APP --version V [--force]
    ./stacks.py status     [--app-name APP] [--json]
    ./stacks.py history    --app-name APP [--json]
    ./stacks.py --app-name APP --version V --action release   # the original form

Settings come from SALTAPI_URL, SALTAPI_USER, SALTAPI_PASS, SALTAPI_EAUTH (as
salt-pepper) and REQUESTS_CA_BUNDLE; flags override them. TLS is verified.
The salt-api token is kept between runs in ~/.cache/pigeon/tokens.json (mode
0600; PIGEON_TOKEN_CACHE names another file, or "off"; --no-token-cache).

Exit codes: 0 done (or already done); 1 the action failed or was refused;
2 bad usage; 3 salt-api unreachable, TLS or authentication failed; 4 the
deadline passed (the orchestration may still be running: see status).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

from pigeon.cli import main  # noqa: E402  (the package beside this file)

if __name__ == "__main__":
    sys.exit(main())
