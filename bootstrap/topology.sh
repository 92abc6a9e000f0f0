#!/bin/bash
# Writes the pillar of a multi-host topology (load-balancer minions lbN, app minions appN):
# the stacks' targets there, and where HAProxy finds the app minions (their addresses in
# NETWORK, the ports from 21000; docs/multi-host.md). Used by bootstrap/lab.sh (TOPOLOGY=multi)
# and the Vagrantfile's master, which differ only in NETWORK and BUILD_DIR.
#
#   bootstrap/topology.sh FILE NETWORK [BUILD_DIR]
set -euo pipefail

FILE=$1 NETWORK=$2 BUILD_DIR=${3:-}
mkdir -p "$(dirname "$FILE")"
cat > "$FILE" <<SLS
# managed by bootstrap/topology.sh; changes will be overwritten
# HAProxy on the lbN minions, the stacks on the appN minions (count replicas on each)
stacks:
  app:
    loadbal:
      target: '^lb[0-9]\$'
      target_type: pcre
      servers:                  # HAProxy reaches the app minions by address (docs/multi-host.md)
        network: $NETWORK       # each one's address: its first ipv4 grain in this network
        first_port: 21000       # the load-balanced containers publish 21000-21029 there
    config:
      target: '^app[0-9]\$'
      target_type: pcre
SLS
if [ -n "$BUILD_DIR" ]; then
  echo "      build_dir: $BUILD_DIR" >> "$FILE"
fi
