#!/bin/bash
# The lab: Pigeon on one machine. A salt-master, a salt-minion and salt-api run
# as ordinary processes under .lab/; the docker engine, HAProxy and the apps are
# deployed by the same formulas and orchestrations a real master uses.
#
#   bootstrap/lab.sh up      install what is missing, start everything, apply the minion's states
#   bootstrap/lab.sh down    stop the salt processes, remove the lab's containers and networks
#   bootstrap/lab.sh status  what runs
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
LAB=$REPO/.lab
export PIGEON_VENV=$LAB/venv
MINION_ID=lab-minion
SALT="$PIGEON_VENV/bin/salt -c $LAB/etc/salt"
SALT_RUN="$PIGEON_VENV/bin/salt-run -c $LAB/etc/salt"
step() { printf '==> %s\n' "$*"; }

# a daemon runs when its pidfile names a live process of that name (pids get reused)
running() { [ -f "$LAB/var/run/$1.pid" ] && grep -qa "$1" "/proc/$(cat "$LAB/var/run/$1.pid")/cmdline" 2>/dev/null; }

up() {
  local t0=$SECONDS
  "$REPO/bootstrap/install.sh"
  mkdir -p "$LAB/pillar"
  # Pillar only the lab knows: where its certificate is
  cat > "$LAB/pillar/lab.sls" <<SLS
# managed by bootstrap/lab.sh; changes will be overwritten
haproxy:
  tls:
    certificate_source: $LAB/tls/haproxy.pem
SLS
  # An HAProxy container that a killed daemon left stopped may name networks that are gone, and
  # one whose routes.map is gone (make down removes it) crash-loops until the states write it:
  # the formula starts a new one (its configuration and server state live on the host)
  if [ -f /srv/pigeon/haproxy/etc/maps/routes.map ]; then
    stale=$(docker ps -aq --filter label=pigeon.role=haproxy --filter status=exited --filter status=created \
              --filter status=dead --filter status=restarting)
  else
    stale=$(docker ps -aq --filter label=pigeon.role=haproxy)
  fi
  if [ -n "$stale" ]; then step "removing an HAProxy container that cannot run as it is"; docker rm -f $stale >/dev/null; fi
  step "starting salt-master and salt-api (.lab/etc/salt)"
  "$REPO/bootstrap/master.sh" "$LAB"
  step "starting salt-minion $MINION_ID"
  "$REPO/bootstrap/minion.sh" "$LAB" "$MINION_ID" 127.0.0.1
  # The minion's key: accept it once it has been submitted
  for _ in $(seq 1 60); do
    $PIGEON_VENV/bin/salt-key -c "$LAB/etc/salt" -l acc 2>/dev/null | grep -qx "$MINION_ID" && break
    $PIGEON_VENV/bin/salt-key -c "$LAB/etc/salt" -a "$MINION_ID" -y >/dev/null 2>&1 || true
    sleep 0.5
  done
  for _ in $(seq 1 60); do
    $SALT "$MINION_ID" test.ping --timeout 5 >/dev/null 2>&1 && break
    sleep 1
  done
  $SALT "$MINION_ID" test.ping --timeout 5 >/dev/null || { echo "lab: $MINION_ID does not answer; see $LAB/var/log/salt/minion" >&2; exit 1; }
  step "syncing Pigeon's modules (master and minion)"
  $SALT_RUN saltutil.sync_all >/dev/null
  $SALT "$MINION_ID" saltutil.sync_all >/dev/null
  step "applying the minion's states (docker engine, HAProxy)"
  if ! $SALT "$MINION_ID" state.apply --state-output=terse --state-verbose=False >"$LAB/highstate.log" 2>&1; then
    cat "$LAB/highstate.log" >&2
    echo "lab: the minion's states failed (above)" >&2; exit 1
  fi
  write_env
  for _ in $(seq 1 50); do curl -sk -o /dev/null https://localhost:8000/ && break; sleep 0.2; done
  step "lab up in $((SECONDS - t0)) s: salt-api https://localhost:8000/, production https://localhost:8443/, preview https://localhost:4443/"
  echo "    . .lab/env   # then ./stacks.py status"
}

write_env() {
  # secrets inside: only root may read it, from the moment it exists
  rm -f "$LAB/env.new"
  (umask 077; : > "$LAB/env.new")
  cat >> "$LAB/env.new" <<ENV
# source me: . .lab/env  (written by bootstrap/lab.sh)
export SALTAPI_URL=https://localhost:8000/
export SALTAPI_USER=pigeon
export SALTAPI_PASS=$(cat "$LAB/api-password")
export SALTAPI_EAUTH=file
export REQUESTS_CA_BUNDLE=$LAB/tls/ca.crt
export PIGEON_WEBHOOK_SECRET=$(cat "$LAB/webhook-secret")
export PIGEON_WEBHOOK_URL=https://localhost:8001/hook/pigeon/deploy
export PATH=$PIGEON_VENV/bin:\$PATH
ENV
  mv "$LAB/env.new" "$LAB/env"
}

down() {
  for name in salt-api salt-minion salt-master; do
    if running "$name"; then
      step "stopping $name"
      pid=$(cat "$LAB/var/run/$name.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
  # salt's daemons leave children behind when killed, and salt-api's may ignore SIGTERM:
  # make sure none of the lab's survive
  pkill -f -- "-c $LAB/etc/salt" 2>/dev/null || true
  for _ in $(seq 1 25); do pgrep -f -- "-c $LAB/etc/salt" >/dev/null || break; sleep 0.2; done
  pkill -9 -f -- "-c $LAB/etc/salt" 2>/dev/null || true
  if docker info >/dev/null 2>&1; then
    ids=$(docker ps -aq --filter label=pigeon.managed=true)
    if [ -n "$ids" ]; then step "removing the lab's containers"; docker rm -f $ids >/dev/null; fi
    nets=$(docker network ls -q --filter label=pigeon.managed=true)
    if [ -n "$nets" ]; then docker network rm $nets >/dev/null || true; fi
  fi
  # the registry of stacks lives in the master's cache: with the containers gone, so is it
  rm -rf "$LAB/var/cache/salt/master/pigeon" /srv/pigeon/haproxy/etc/maps/routes.map
  step "lab down"
}

status() {
  for name in salt-master salt-api salt-minion; do
    if running "$name"; then echo "$name: running (pid $(cat "$LAB/var/run/$name.pid"))"; else echo "$name: stopped"; fi
  done
  docker ps --filter label=pigeon.managed=true --format '{{.Names}}\t{{.Status}}' 2>/dev/null || echo "docker: not running"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: bootstrap/lab.sh up|down|status" >&2; exit 2 ;;
esac
