#!/bin/bash
# Configures and starts a salt-minion for Pigeon. Idempotent.
#
#   bootstrap/minion.sh ROOT_DIR MINION_ID MASTER_ADDRESS
#
# Environment: PIGEON_PUBLISH_PORT=14505 PIGEON_RET_PORT=14506 PIGEON_VENV=ROOT_DIR/venv
set -euo pipefail

ROOT=$(mkdir -p "$1" && cd "$1" && pwd)
MINION_ID=$2
MASTER=$3
VENV=${PIGEON_VENV:-$ROOT/venv}
CONF=$ROOT/etc/salt
mkdir -p "$CONF"

cat > "$CONF/minion" <<CFG
# managed by bootstrap/minion.sh; changes will be overwritten
id: $MINION_ID
root_dir: $ROOT
user: root
master: $MASTER
publish_port: ${PIGEON_PUBLISH_PORT:-14505}
master_port: ${PIGEON_RET_PORT:-14506}
acceptance_wait_time: 1
random_reauth_delay: 0
log_level: warning
log_level_logfile: info
# asyncio's "Task was destroyed but it is pending!", hundreds a day under Salt 3008
log_granular_levels:
  asyncio: critical
CFG

pidfile=$ROOT/var/run/salt-minion.pid
if ! { [ -f "$pidfile" ] && grep -qa salt-minion "/proc/$(cat "$pidfile")/cmdline" 2>/dev/null; }; then
  # children of a minion whose main process died are ended first
  pkill -9 -f -- "salt-minion -c $CONF( |\$)" 2>/dev/null || true
  "$VENV/bin/salt-minion" -c "$CONF" -d
fi
