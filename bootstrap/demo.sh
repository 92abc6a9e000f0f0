#!/bin/bash
# The demo: a blue/green deployment of the app `app` on the lab, through stacks.py and salt-api.
# Versions are made up from the time so that every run shows a new release.
set -euo pipefail
cd "$(dirname "$0")/.."
. .lab/env
curl_() { curl -s --cacert "$REQUESTS_CA_BUNDLE" "$@" || echo "(no answer)"; }
show() {
  printf '    production https://localhost:8443/  -> %s\n' "$(curl_ https://localhost:8443/)"
  printf '    preview    https://localhost:4443/  -> %s\n' "$(curl_ https://localhost:4443/)"
}
stamp=$(date +%H%M%S)
blue=blue-$stamp
green=green-$stamp
say() { printf '\n### %s\n' "$*"; }

say "Where we start"
./stacks.py status --app-name app || true
show
# Leave room: an earlier demo's release is deactivated, its inactive stack too
for v in $(./stacks.py status --app-name app --json | python3 -c '
import json, sys
doc = json.load(sys.stdin)["status"].get("app", {"stacks": {}})
print(" ".join(v for v, s in doc["stacks"].items() if s["state"] in ("release", "inactive")))'); do
  say "Clearing $v, left by an earlier run"
  ./stacks.py deactivate --app-name app --version "$v"
done

say "1. Release $blue: it starts beside production and answers on the preview port only"
./stacks.py release --app-name app --version "$blue"
show
say "2. Activate $blue: production switches to it at runtime"
./stacks.py activate --app-name app --version "$blue"
show
say "3. Release $green: preview shows $green, production still $blue"
./stacks.py release --app-name app --version "$green"
show
say "4. Activate $green: production $green; $blue stays inactive for an instant rollback"
./stacks.py activate --app-name app --version "$green"
show
say "Where we are"
./stacks.py status --app-name app
cat <<TXT

The demo is done. Look around:
  . .lab/env                         # salt-api settings and the virtualenv
  ./stacks.py status                 # the registry: versions, states, routes
  ./stacks.py history --app-name app # who did what, when
  ./stacks.py rollback --app-name app   # production back to $blue, at runtime
  curl --cacert .lab/tls/ca.crt https://localhost:8443/
  docker ps --filter label=pigeon.app=app
  make down                          # stop the lab, remove its containers
TXT
