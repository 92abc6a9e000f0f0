#!/bin/bash
# Configures and starts a salt-master and salt-api (rest_cherrypy, TLS) for Pigeon.
# Idempotent: keeps existing certificates and password, restarts nothing that runs.
#
#   bootstrap/master.sh ROOT_DIR
#
# Environment (defaults are the lab's):
#   PIGEON_INTERFACE=127.0.0.1  PIGEON_PUBLISH_PORT=14505  PIGEON_RET_PORT=14506
#   PIGEON_API_PORT=8000        PIGEON_API_HOST=127.0.0.1  PIGEON_USER=pigeon
#   PIGEON_MASTER_ID=lab        PIGEON_VENV=ROOT_DIR/venv
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
for name in api haproxy; do
  [ -f "$TLS/$name.crt" ] && continue
  openssl req $KEY -nodes -subj "/CN=localhost" \
    -keyout "$TLS/$name.key" -out "$TLS/$name.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1,DNS:%s\n' "$(hostname)" > "$TLS/$name.ext"
  openssl x509 -req -in "$TLS/$name.csr" -CA "$TLS/ca.crt" -CAkey "$TLS/ca.key" \
    -CAcreateserial -days 825 -extfile "$TLS/$name.ext" -out "$TLS/$name.crt" 2>/dev/null
  cat "$TLS/$name.crt" "$TLS/$name.key" > "$TLS/$name.pem"
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

config_before=$(cat "$CONF/master" "$CONF"/master.d/*.conf 2>/dev/null | sha256sum || true)
cat > "$CONF/master" <<CFG
# managed by bootstrap/master.sh; changes will be overwritten
id: $MASTER_ID
root_dir: $ROOT
user: root
interface: $INTERFACE
publish_port: $PUBLISH_PORT
ret_port: $RET_PORT
log_level: warning
log_level_logfile: info
worker_threads: 4
# Every runner job (an orchestration, each salt.runner step in it) builds a MasterMinion,
# which computes the master's grains again unless they are cached: 0.1-0.2 s each time.
grains_cache: True
grains_cache_expiration: 86400
file_roots:
  base:
    - $REPO/srv/salt
pillar_roots:
  base:
    - $REPO/srv/pillar
    - $ROOT/pillar
ext_pillar:
  - pigeon_registry: True
default_include: master.d/*.conf
CFG

cat > "$CONF/master.d/api.conf" <<CFG
# managed by bootstrap/master.sh; changes will be overwritten
# salt-api: only the runner client, only Pigeon's orchestrations and read-only runners.
netapi_enable_clients:
  - runner
  - runner_async   # stacks.py: the orchestration's steps shown as they finish (/events)
rest_cherrypy:
  host: $API_HOST
  port: $API_PORT
  ssl_crt: $TLS/api.crt
  ssl_key: $TLS/api.key
  # /hook/pigeon/deploy takes no salt-api token: the reactor checks the request's HMAC
  # signature (X-Pigeon-Signature) against pigeon_webhook_secret_file instead
  webhook_disable_auth: True
  webhook_url: /hook
external_auth:
  file:
    ^filename: $CONF/eauth-users
    ^hashtype: sha256
    $API_USER:
      - '@runner':
          - 'state.orchestrate':
              args:
                - 'orch\.(release|activate|deactivate|rollback)$'
              kwargs:
                pillar: "^\\\\{'pigeon': \\\\{[^{}]*\\\\}\\\\}$"
          - 'stacks\.(status|history)$'
CFG

cat > "$CONF/master.d/reactor.conf" <<CFG
# managed by bootstrap/master.sh; changes will be overwritten
# Deployments from CI: a signed webhook, or an event from a CI minion listed below.
reactor:
  - 'salt/netapi/hook/pigeon/deploy':
    - salt://reactor/deploy.sls
  - 'pigeon/ci/deploy':
    - salt://reactor/deploy.sls
pigeon_webhook_secret_file: $ROOT/webhook-secret
pigeon_ci_minions: []
CFG

stop() {  # stop NAME if it runs
  local pidfile=$ROOT/var/run/$1.pid
  [ -f "$pidfile" ] && grep -qa "$1" "/proc/$(cat "$pidfile")/cmdline" 2>/dev/null || return 0
  kill "$(cat "$pidfile")"
  for _ in $(seq 1 50); do grep -qa "$1" "/proc/$(cat "$pidfile")/cmdline" 2>/dev/null || return 0; sleep 0.2; done
}
start() {  # start NAME unless its pidfile names a live process
  local name=$1 pidfile=$ROOT/var/run/$1.pid
  if [ -f "$pidfile" ] && grep -qa "$name" "/proc/$(cat "$pidfile")/cmdline" 2>/dev/null; then return 0; fi
  "$VENV/bin/$name" -c "$CONF" -d
}
# a changed configuration takes effect: restart what runs
if [ "$config_before" != "$(cat "$CONF/master" "$CONF"/master.d/*.conf | sha256sum)" ]; then
  stop salt-api
  stop salt-master
fi
start salt-master
start salt-api
