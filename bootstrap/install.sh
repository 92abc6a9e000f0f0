#!/bin/bash
# Installs what Pigeon needs on a Debian 12 machine, skipping what is there:
# Debian packages, the Python virtualenv (pinned requirements.txt), a running
# docker engine, and the locally built base image (no registry needed).
# Used by the lab (make lab / demo / test) and by the Vagrant VMs.
#
#   bootstrap/install.sh [--no-images] [--venv DIR]
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
VENV=${PIGEON_VENV:-$REPO/.lab/venv}
IMAGES=yes
while [ $# -gt 0 ]; do
  case $1 in
    --no-images) IMAGES=no ;;
    --venv) VENV=$2; shift ;;
    *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
BASE_IMAGE=${PIGEON_BASE_IMAGE:-pigeon/base:bookworm}
step() { printf '==> %s\n' "$*"; }

# 1. Debian packages
PKGS="docker.io iptables iproute2 mmdebstrap openssl curl ca-certificates python3-venv wrk"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  step "installing Debian packages:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# 2. Python virtualenv from the pinned requirements
stamp="$VENV/.requirements.sha256"
want=$(sha256sum "$REPO/requirements.txt" | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  step "creating virtualenv $VENV (pinned requirements.txt)"
  PY=$(command -v python3.11 || command -v python3)
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REPO/requirements.txt"
  echo "$want" > "$stamp"
fi

# 3. The docker engine: started in the background where no init system runs it
if ! docker info >/dev/null 2>&1; then
  if [ -d /run/systemd/system ]; then
    step "starting docker (systemd)"
    systemctl enable --now docker >/dev/null
  else
    step "starting dockerd in the background (log: /var/log/pigeon-dockerd.log)"
    # a daemon that was killed leaves its pidfile, and dockerd refuses to start beside it
    # while that pid exists at all (a zombie, or a reused pid): remove it unless a live dockerd owns it
    pid=$(cat /var/run/docker.pid 2>/dev/null || true)
    if [ -n "$pid" ] && ! { [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = dockerd ] \
                          && ! grep -q '^State:[[:space:]]*Z' /proc/"$pid"/status 2>/dev/null; }; then
      rm -f /var/run/docker.pid
    fi
    # no userland proxy: published ports (HAProxy's) are forwarded by iptables alone, instead
    # of a docker-proxy process copying every connection (the docker formula does the same)
    nohup dockerd --userland-proxy=false >/var/log/pigeon-dockerd.log 2>&1 &
  fi
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "install.sh: dockerd did not start; see /var/log/pigeon-dockerd.log" >&2; exit 1; }
fi

# 4. The base image, built locally: Debian bookworm with HAProxy, nginx, curl
if [ "$IMAGES" = yes ] && ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  step "building $BASE_IMAGE with mmdebstrap (about 30 s)"
  work=$(mktemp -d)
  mmdebstrap --quiet --variant=apt --include=haproxy,nginx-light,curl,ca-certificates \
    bookworm "$work/rootfs.tar"
  docker import "$work/rootfs.tar" "$BASE_IMAGE" >/dev/null
  rm -rf "$work"
fi
