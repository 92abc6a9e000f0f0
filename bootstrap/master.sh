#!/bin/bash
# Configures and starts a salt-master and salt-api (rest_cherrypy, TLS) for Pigeon.
# Idempotent: keeps existing certificates and password, restarts nothing that runs.
#
#   bootstrap/master.sh ROOT_DIR
#
# Environment (defaults are the lab's):
#   PIGEON_INTERFACE=127.0.0.1  PIGEON_PUBLISH_PORT=14505  PIGEON_RET_PORT=14506
#   PIGEON_API_PORT=8000        PIGEON_API_HOST=127.0.0.1  PIGEON_USER=pigeon
#   PIGEON_MASTER_ID=lab        PIGEON_VENV=ROOT_DIR/venv  PIGEON_HAPROXY_SANS=
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
ROOT=$(mkdir -p "$1" && cd "$1" && pwd)
VENV=${PIGEON_VENV:-$ROOT/venv}
INTERFACE=${PIGEON_INTERFACE:-127.0.0.1}
PUBLISH_PORT=${PIGEON_PUBLISH_PORT:-14505}
RET_PORT=${PIGEON_RET_PORT:-14506}
API_HOST=${PIGEON_API_HOST:-127.0.0.1}
API_PORT=${PIGEON_API_PORT:-8000}
API_USER=${PIGEON_USER:-pigeon}
MASTER_ID=${PIGEON_MASTER_ID:-lab}
CONF=$ROOT/etc/salt
TLS=$ROOT/tls
mkdir -p "$CONF/master.d" "$TLS" "$ROOT/pillar"

# TLS: a CA of the lab's own, a certificate for salt-api and one for HAProxy (localhost).
# ECDSA P-256 keys: a handshake costs the server a fraction of what an RSA-2048 one does,
# which matters to HAProxy when clients open a connection per request.
KEY="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1"
if [ ! -f "$TLS/ca.crt" ]; then
  openssl req -x509 $KEY -nodes -days 3650 -subj "/CN=Pigeon lab CA" \
    -keyout "$TLS/ca.key" -out "$TLS/ca.crt" 2>/dev/null
fi
# HAProxy's names besides these: PIGEON_HAPROXY_SANS (the multi-host lab's LB addresses, e.g.
# "IP:10.231.0.11,IP:10.231.0.12"); a certificate whose names differ is made again
SANS="DNS:localhost,IP:127.0.0.1,DNS:$(hostname)"
for name in api haproxy; do
  san=$SANS
  [ "$name" = haproxy ] && [ -n "${PIGEON_HAPROXY_SANS:-}" ] && san="$san,$PIGEON_HAPROXY_SANS"
  [ -f "$TLS/$name.crt" ] && [ "$(cat "$TLS/$name.san" 2>/dev/null || echo "$SANS")" = "$san" ] && continue
  openssl req $KEY -nodes -subj "/CN=localhost" \
    -keyout "$TLS/$name.key" -out "$TLS/$name.csr" 2>/dev/null
  printf 'subjectAltName=%s\n' "$san" > "$TLS/$name.ext"
  openssl x509 -req -in "$TLS/$name.csr" -CA "$TLS/ca.crt" -CAkey "$TLS/ca.key" \
    -CAcreateserial -days 825 -extfile "$TLS/$name.ext" -out "$TLS/$name.crt" 2>/dev/null
  cat "$TLS/$name.crt" "$TLS/$name.key" > "$TLS/$name.pem"
  echo "$san" > "$TLS/$name.san"
  rm -f "$TLS/$name.csr" "$TLS/$name.ext"
done
chmod 600 "$TLS"/*.key "$TLS"/*.pem

# eauth: one user with a generated password, stored hashed (salt's `file` eauth)
if [ ! -f "$ROOT/api-password" ]; then
  (umask 077; openssl rand -hex 16 > "$ROOT/api-password")
fi
# the shared secret that signs CI webhooks (reactor/deploy.sls)
if [ ! -f "$ROOT/webhook-secret" ]; then
  (umask 077; openssl rand -hex 24 > "$ROOT/webhook-secret")
fi
printf '%s:%s\n' "$API_USER" "$(tr -d '\n' < "$ROOT/api-password" | sha256sum | cut -d' ' -f1)" > "$CONF/eauth-users"
chmod 600 "$CONF/eauth-users"

HOOK_PORT=${PIGEON_HOOK_PORT:-8001}
# the configuration: one file in the repo (bootstrap/salt-master.conf), its placeholders replaced
config_before=$(cat "$CONF/master" 2>/dev/null | sha256sum || true)
rm -f "$CONF/master.d/api.conf" "$CONF/master.d/reactor.conf"   # written by earlier versions
sed -e "s|@ROOT@|$ROOT|g" -e "s|@REPO@|$REPO|g" -e "s|@MASTER_ID@|$MASTER_ID|g" \
    -e "s|@INTERFACE@|$INTERFACE|g" -e "s|@PUBLISH_PORT@|$PUBLISH_PORT|g" -e "s|@RET_PORT@|$RET_PORT|g" \
    -e "s|@API_HOST@|$API_HOST|g" -e "s|@API_PORT@|$API_PORT|g" -e "s|@HOOK_PORT@|$HOOK_PORT|g" \
    -e "s|@API_USER@|$API_USER|g" "$REPO/bootstrap/salt-master.conf" > "$CONF/master.new"
if grep -q '@[A-Z_]*@' "$CONF/master.new"; then
  echo "master.sh: unreplaced placeholders in $CONF/master.new: $(grep -o '@[A-Z_]*@' "$CONF/master.new" | sort -u | tr '\n' ' ')" >&2
  exit 1
fi
chmod 600 "$CONF/master.new"
mv "$CONF/master.new" "$CONF/master"

# A daemon's processes are found by their command line (NAME -c CONF): the main process and
# the children it forked, which outlive it when it dies (they keep the master's ports).
pids_of() { pgrep -f -- "$1 -c $CONF( |\$)" || true; }
alive() {  # NAME: its pidfile names a live process of that name
  local pidfile=$ROOT/var/run/$1.pid
  [ -f "$pidfile" ] && grep -qa "$1" "/proc/$(cat "$pidfile")/cmdline" 2>/dev/null
}
stop() {  # stop NAME and every process of it: TERM, then KILL what is left after 10 s
  local pids
  pids=$(pids_of "$1")
  [ -n "$pids" ] || return 0
  kill $pids 2>/dev/null || true
  for _ in $(seq 1 50); do [ -z "$(pids_of "$1")" ] && break; sleep 0.2; done
  pids=$(pids_of "$1")
  [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
  rm -f "$ROOT/var/run/$1.pid"
}
start() {  # start NAME unless it runs; orphans of a main process that died are ended first
  local name=$1
  alive "$name" && return 0
  stop "$name"
  "$VENV/bin/$name" -c "$CONF" -d
}
# a changed configuration takes effect: restart what runs
if [ "$config_before" != "$(sha256sum < "$CONF/master")" ]; then
  stop salt-api
  stop salt-master
fi
start salt-master
start salt-api
