#!/bin/bash
# The lab: Pigeon on one machine. A salt-master, a salt-minion and salt-api run
# as ordinary processes under .lab/; the docker engine, HAProxy and the apps are
# deployed by the same formulas and orchestrations a real master uses.
#
#   bootstrap/lab.sh up      install what is missing, start everything, apply the minions' states
#   bootstrap/lab.sh down    stop the salt processes and the hosts, remove the lab's containers
#   bootstrap/lab.sh status  what runs
#
# TOPOLOGY=single (the default): one minion, lab-minion, on this machine's docker engine.
# TOPOLOGY=multi: the master and salt-api here, and five hosts (bootstrap/hosts.sh): lb1, lb2
# (HAProxy), app1, app2, app3 (the stacks), each a network namespace with its own dockerd
# and salt-minion (docs/lab-multihost.md). .lab/topology remembers which one was brought up:
# `up` of the other takes it down first, `down` takes down whichever it is.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
LAB=$REPO/.lab
export PIGEON_VENV=${PIGEON_VENV:-$LAB/venv}
HOSTS=$REPO/bootstrap/hosts.sh
MINION_ID=lab-minion
SALT="$PIGEON_VENV/bin/salt -c $LAB/etc/salt"
SALT_RUN="$PIGEON_VENV/bin/salt-run -c $LAB/etc/salt"
API_PORT=${PIGEON_API_PORT:-8000}
step() { printf '==> %s\n' "$*"; }
# the topology that was brought up last: a lab from before topologies existed was single
topology() { cat "$LAB/topology" 2>/dev/null || echo single; }

# a daemon runs when its pidfile names a live process of that name (pids get reused)
running() { [ -f "$LAB/var/run/$1.pid" ] && grep -qa "$1" "/proc/$(cat "$LAB/var/run/$1.pid")/cmdline" 2>/dev/null; }

up() {
  local t0=$SECONDS want=${TOPOLOGY:-single}
  case $want in
    single|multi) ;;
    *) echo "lab: unknown TOPOLOGY=$want; use single (the default) or multi" >&2; exit 2 ;;
  esac
  if [ -e "$LAB/topology" ] || [ -e "$LAB/var/run/salt-master.pid" ]; then
    if [ "$(topology)" != "$want" ]; then step "taking the $(topology) lab down first"; down; fi
  fi
  "$REPO/bootstrap/install.sh"
  mkdir -p "$LAB/pillar"
  echo "$want" > "$LAB/topology"
  if [ "$want" = multi ]; then up_multi; else up_single; fi
  write_env
  for _ in $(seq 1 50); do curl -sk -o /dev/null "https://localhost:$API_PORT/" && break; sleep 0.2; done
  if [ "$want" = multi ]; then
    step "lab up (multi) in $((SECONDS - t0)) s: salt-api https://localhost:$API_PORT/, production $(production_urls), preview $(preview_urls)"
  else
    step "lab up in $((SECONDS - t0)) s: salt-api https://localhost:$API_PORT/, production https://localhost:8443/, preview https://localhost:4443/"
  fi
  echo "    . .lab/env   # then ./stacks.py status"
}

up_single() {
  rm -f "$LAB/pillar/topology.sls"
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
}

# --- TOPOLOGY=multi ---------------------------------------------------------------------------
lb_hosts() { ls /run/netns 2>/dev/null | sed -n 's/^pigeon-\(lb[0-9]\)$/\1/p'; }
all_hosts() { ls /run/netns 2>/dev/null | sed -n 's/^pigeon-\(\(lb\|app\)[0-9]\)$/\1/p'; }
urls() { local h; for h in $(lb_hosts); do printf 'https://%s:%s/ ' "$("$HOSTS" address "$h")" "$1"; done | sed 's/ $//'; }
production_urls() { urls 8443; }   # the frontend's ports: srv/pillar/haproxy.sls
preview_urls() { urls 4443; }

up_multi() {
  local uplink list answering
  uplink=$("$HOSTS" address uplink)
  # Pillar only the multi lab knows, besides stacks.sls (merged over it, one fact each): the
  # stacks' targets and servers (bootstrap/topology.sh, as on the Vagrant VMs), and where each
  # host keeps its files on this shared file system: the hosts share this machine's disk, so
  # not the one-host lab's build folder
  "$REPO/bootstrap/topology.sh" "$LAB/pillar/topology.sls" "${uplink%.*}.0/24" "$LAB/build/demoapp"
  cat > "$LAB/pillar/lab.sls" <<SLS
# managed by bootstrap/lab.sh (TOPOLOGY=multi); changes will be overwritten
# A host's files live under .lab/hosts/<id>/ (this machine's disk is every host's); its docker
# daemon is started by bootstrap/hosts.sh, never by the docker formula
{%- set host_dir = '$LAB/hosts/' ~ grains['id'] %}
docker:
  start_daemon: False
  pkg_refresh: False          # the hosts share this machine's packages, and reach no mirror
{%- if grains['id'].startswith('lb') %}
haproxy:
  host_dir: {{ host_dir }}/haproxy
  tls:
    certificate_source: $LAB/tls/haproxy.pem
haproxy_runtime:
  socket: {{ host_dir }}/haproxy/run/admin.sock
  maps_dir: {{ host_dir }}/haproxy/etc/maps
{%- endif %}
SLS
  step "starting salt-master (on $uplink, where the hosts reach it) and salt-api (.lab/etc/salt)"
  "$HOSTS" switch
  # HAProxy's certificate names every address an LB host can have (lb0-lb9)
  PIGEON_INTERFACE=$uplink \
    PIGEON_HAPROXY_SANS=$("$HOSTS" address lb0 lb1 lb2 lb3 lb4 lb5 lb6 lb7 lb8 lb9 | sed 's/^/IP:/' | paste -sd,) \
    "$REPO/bootstrap/master.sh" "$LAB"
  "$HOSTS" up
  list=$(all_hosts | paste -sd,)
  step "waiting for the hosts' minions: $list"
  for _ in $(seq 1 90); do
    answering=$($SALT -L "$list" test.ping --timeout 3 --out txt 2>/dev/null | grep -c ': True' || true)
    [ "$answering" -eq "$(all_hosts | wc -l)" ] && break
    sleep 1
  done
  [ "$answering" -eq "$(all_hosts | wc -l)" ] \
    || { echo "lab: $answering of the hosts' minions ($list) answer; see .lab/hosts/*/var/log/salt/minion" >&2; exit 1; }
  step "syncing Pigeon's modules (master; the highstate syncs the hosts')"
  $SALT_RUN saltutil.sync_all >/dev/null
  step "applying the hosts' states (docker engine; HAProxy on the lb hosts)"
  if ! $SALT -L "$list" state.apply --state-output=terse --state-verbose=False >"$LAB/highstate.log" 2>&1; then
    cat "$LAB/highstate.log" >&2
    echo "lab: the hosts' states failed (above); after a fix, run make lab TOPOLOGY=multi again" >&2; exit 1
  fi
}

write_env() {
  # secrets inside: only root may read it, from the moment it exists
  rm -f "$LAB/env.new"
  (umask 077; : > "$LAB/env.new")
  cat >> "$LAB/env.new" <<ENV
# source me: . .lab/env  (written by bootstrap/lab.sh)
export SALTAPI_URL=https://localhost:$API_PORT/
export SALTAPI_USER=pigeon
export SALTAPI_PASS=$(cat "$LAB/api-password")
export SALTAPI_EAUTH=file
export REQUESTS_CA_BUNDLE=$LAB/tls/ca.crt
export PIGEON_WEBHOOK_SECRET=$(cat "$LAB/webhook-secret")
export PIGEON_WEBHOOK_URL=https://localhost:${PIGEON_HOOK_PORT:-8001}/hook/pigeon/deploy
export PATH=$PIGEON_VENV/bin:\$PATH
ENV
  # the load balancers' URLs, one per LB host, space-separated
  if [ "$(topology)" = multi ]; then
    cat >> "$LAB/env.new" <<ENV
export PIGEON_TOPOLOGY=multi
export PIGEON_PRODUCTION_URLS="$(production_urls)"
export PIGEON_PREVIEW_URLS="$(preview_urls)"
ENV
  else
    cat >> "$LAB/env.new" <<ENV
export PIGEON_TOPOLOGY=single
export PIGEON_PRODUCTION_URLS="https://localhost:8443/"
export PIGEON_PREVIEW_URLS="https://localhost:4443/"
ENV
  fi
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
  # the hosts of a multi lab, whatever the topology (their containers go with them)
  "$HOSTS" down
  # the single lab's containers are on this machine's docker engine
  if [ "$(topology)" = single ] && docker info >/dev/null 2>&1; then
    ids=$(docker ps -aq --filter label=pigeon.managed=true)
    if [ -n "$ids" ]; then step "removing the lab's containers"; docker rm -f $ids >/dev/null; fi
    nets=$(docker network ls -q --filter label=pigeon.managed=true)
    if [ -n "$nets" ]; then docker network rm $nets >/dev/null || true; fi
  fi
  # the registry of stacks lives in the master's cache: with the containers gone, so is it
  rm -rf "$LAB/var/cache/salt/master/pigeon"
  if [ "$(topology)" = single ]; then rm -f /srv/pigeon/haproxy/etc/maps/routes.map; else rm -rf "$LAB"/hosts/*/haproxy; fi
  step "lab down"
}

status() {
  echo "topology: $(topology)"
  for name in salt-master salt-api salt-minion; do
    if running "$name"; then echo "$name: running (pid $(cat "$LAB/var/run/$name.pid"))"; else echo "$name: stopped"; fi
  done
  if [ "$(topology)" = multi ]; then
    "$HOSTS" status
  else
    docker ps --filter label=pigeon.managed=true --format '{{.Names}}\t{{.Status}}' 2>/dev/null || echo "docker: not running"
  fi
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: bootstrap/lab.sh up|down|status" >&2; exit 2 ;;
esac
