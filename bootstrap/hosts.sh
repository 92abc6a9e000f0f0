#!/bin/bash
# The multi-host lab's hosts: each a network namespace with its own dockerd and salt-minion,
# joined by a bridge in a switch namespace of its own (docs/lab-multihost.md).
#
#   bootstrap/hosts.sh up [NAME...]      start hosts (default: lb1 lb2 app1 app2 app3); idempotent
#   bootstrap/hosts.sh down [NAME...]    stop hosts and remove what they made (default: every host)
#   bootstrap/hosts.sh status [NAME...]  what runs
#   bootstrap/hosts.sh address NAME...   a host's address; `uplink`: the root namespace's
#   bootstrap/hosts.sh switch            the bridge and the uplink only (`up` makes them too):
#                                        lab.sh starts the master on the uplink before the hosts
#
# NAME is lbN or appN (N one digit). Host N's address is 10.231.0.(10+N) for lbN and
# 10.231.0.(20+N) for appN; the root namespace is 10.231.0.1 on interface pigeon-up.
# Its dockerd listens on .lab/hosts/NAME/docker.sock, its minion's id is NAME.
#
# Environment: PIGEON_PUBLISH_PORT, PIGEON_RET_PORT (default: the lab master's configuration,
#   else minion.sh's), PIGEON_VENV=.lab/venv, PIGEON_HOST_IMAGES="pigeon/base:bookworm"
#   (loaded into every host)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
LAB=$REPO/.lab
export PIGEON_VENV=${PIGEON_VENV:-$LAB/venv}
# the minions' ports are the running master's (a host added later finds them there)
master_conf() { sed -n "s/^$1: *//p" "$LAB/etc/salt/master" 2>/dev/null || true; }
PIGEON_PUBLISH_PORT=${PIGEON_PUBLISH_PORT:-$(master_conf publish_port)}
PIGEON_RET_PORT=${PIGEON_RET_PORT:-$(master_conf ret_port)}
[ -z "$PIGEON_PUBLISH_PORT" ] || export PIGEON_PUBLISH_PORT
[ -z "$PIGEON_RET_PORT" ] || export PIGEON_RET_PORT
IMAGES=${PIGEON_HOST_IMAGES:-pigeon/base:bookworm}
DEFAULT_HOSTS="lb1 lb2 app1 app2 app3"
NET=10.231.0               # the hosts' /24, behind the switch; .1 is the root namespace
UPLINK=pigeon-up           # the only interface of the lab in the root namespace
SWITCH=pigeon-switch       # the namespace of the bridge
NAME_RE='^(lb|app)[0-9]$'
step() { printf '==> %s\n' "$*"; }
fail() { echo "hosts.sh: $*" >&2; exit 1; }

# --- a host's facts, all from its name -----------------------------------------------------
number() { case $1 in lb*) echo $((10 + ${1#lb})) ;; app*) echo $((20 + ${1#app})) ;; esac; }
address() { echo "$NET.$(number "$1")"; }
dir() { echo "$LAB/hosts/$1"; }
sock() { echo "$(dir "$1")/docker.sock"; }
# exec-root: short and global like the namespaces (containerd's socket path must stay short)
exec_root() { echo "/run/pigeon-lab/$1"; }
dockerd_pid() { local f; f="$(dir "$1")/dockerd.pid"; [ -f "$f" ] && grep -qa dockerd "/proc/$(cat "$f")/cmdline" 2>/dev/null && cat "$f"; }
minion_pid() { local f; f="$(dir "$1")/var/run/salt-minion.pid"; [ -f "$f" ] && grep -qa salt-minion "/proc/$(cat "$f")/cmdline" 2>/dev/null && cat "$f"; }
ns_exists() { [ -e "/run/netns/$1" ]; }
hosts_running() { ls /run/netns 2>/dev/null | grep -E '^pigeon-(lb|app)[0-9]$' | sed 's/^pigeon-//' || true; }
dockr() { local h=$1; shift; docker -H "unix://$(sock "$h")" "$@"; }

# --- the switch: a bridge in a namespace of its own, an uplink veth to the root namespace ----
# (on a root bridge, frames between hosts would cross docker's FORWARD chain, policy DROP)
# The namespaces, the uplink and 10.231.0.0/24 are machine-wide: the lab that made them owns
# them (OWNER names its .lab folder). Another checkout's up is refused, its down leaves them.
OWNER=/run/pigeon-lab/owner
owner() { cat "$OWNER" 2>/dev/null || true; }
foreign() { [ -n "$(owner)" ] && [ "$(owner)" != "$LAB" ]; }

switch_up() {
  foreign && fail "the multi-host lab of $(owner) runs on this machine (its namespaces are machine-wide): take it down there first (bootstrap/lab.sh down)"
  mkdir -p /run/pigeon-lab
  echo "$LAB" > "$OWNER"
  ns_exists "$SWITCH" && return 0
  ip netns add "$SWITCH"
  ip -n "$SWITCH" link add br0 type bridge
  ip -n "$SWITCH" link set lo up
  ip -n "$SWITCH" link set br0 up
  ip link add "$UPLINK" type veth peer name uplink netns "$SWITCH"
  ip -n "$SWITCH" link set uplink master br0 up
  ip addr add "$NET.1/24" dev "$UPLINK"
  ip link set "$UPLINK" up
}

switch_down() {  # the uplink goes with the namespace (its peer is in it)
  ! ns_exists "$SWITCH" || ip netns del "$SWITCH"
  ip link del "$UPLINK" 2>/dev/null || true
}

# --- one host --------------------------------------------------------------------------------
host_up() {
  local h=$1 ns=pigeon-$1 d n
  d=$(dir "$h"); n=$(number "$h")
  mkdir -p "$d/etc-docker" "$d/docker" "$d/etc/salt/minion.d" "/etc/netns/$ns"
  # the network: eth0 on the switch, and nothing beyond the lab (no default route)
  if ! ns_exists "$ns"; then
    ip netns add "$ns"
    ip -n "$SWITCH" link add "p-$h" type veth peer name eth0 netns "$ns"
    ip -n "$SWITCH" link set "p-$h" master br0 up
    ip -n "$ns" addr add "$(address "$h")/24" dev eth0
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route replace unreachable default
  fi
  # /etc/hosts and resolv.conf as `ip netns exec` mounts them; the machine's hostname stays
  # the hosts' hostname (no UTS namespace): without an entry for it the minion stalls on DNS
  printf '127.0.0.1 localhost\n%s %s %s\n%s.1 salt\n' "$(address "$h")" "$h" "$(hostname)" "$NET" > "/etc/netns/$ns/hosts"
  printf 'nameserver 127.0.0.1\n' > "/etc/netns/$ns/resolv.conf"
  # dockerd: its own everything, through unshare with the cgroups re-mounted (see _dockerd)
  if [ -z "$(dockerd_pid "$h")" ]; then
    rm -f "$d/dockerd.pid" "$(sock "$h")"
    mkdir -p "$(exec_root "$h")"
    setsid ip netns exec "$ns" unshare --mount --propagation slave "$REPO/bootstrap/hosts.sh" _dockerd "$h" \
      </dev/null >"$d/dockerd.log" 2>&1 &
    for _ in $(seq 1 120); do dockr "$h" info >/dev/null 2>&1 && break; sleep 0.25; done
    dockr "$h" info >/dev/null 2>&1 || fail "$h: dockerd did not start; see $d/dockerd.log"
    # a host starts empty: containers a killed daemon left behind go
    local ids; ids=$(dockr "$h" ps -aq)
    [ -z "$ids" ] || dockr "$h" rm -f $ids >/dev/null
  fi
  # images: saved once (save_images), loaded where the daemon lacks them
  local image id
  for image in $IMAGES; do
    id=$(cat "$LAB/images/$(tar_name "$image").id")
    [ "$(dockr "$h" image inspect --format '{{.Id}}' "$image" 2>/dev/null)" = "$id" ] && continue
    dockr "$h" load -q -i "$LAB/images/$(tar_name "$image").tar" >/dev/null
  done
  # salt-minion: keys made here and accepted by the master beforehand (salt-key --gen-keys
  # crashes in salt 3008.4), its docker modules and CLI pointed at this host's daemon
  local pki=$d/etc/salt/pki/minion master_pki=$LAB/etc/salt/pki/master
  if [ ! -f "$pki/minion.pem" ]; then
    mkdir -p "$pki"
    (umask 077; openssl genrsa -out "$pki/minion.pem" 2048 2>/dev/null)
    openssl rsa -in "$pki/minion.pem" -pubout -out "$pki/minion.pub" 2>/dev/null
  fi
  mkdir -p "$master_pki/minions"
  rm -f "$master_pki/minions_pre/$h" "$master_pki/minions_denied/$h" "$master_pki/minions_rejected/$h"
  cp "$pki/minion.pub" "$master_pki/minions/$h"
  cat > "$d/etc/salt/minion.d/host.conf" <<CFG
# managed by bootstrap/hosts.sh; changes will be overwritten
docker.url: unix://$(sock "$h")
CFG
  ip netns exec "$ns" env DOCKER_HOST="unix://$(sock "$h")" \
    "$REPO/bootstrap/minion.sh" "$d" "$h" "$NET.1" </dev/null >"$d/minion-start.log" 2>&1 \
    || fail "$h: salt-minion did not start; see $d/minion-start.log"
}

# inside the host's namespaces (called through `ip netns exec ... unshare`): `ip netns exec`
# mounted a sysfs of the namespace, hiding the cgroups dockerd needs: mount them again as
# PID 1 has them, and this host's /etc/docker (key.json: the daemon's ID)
_dockerd() {
  local h=$1 n d
  n=$(number "$h"); d=$(dir "$h")
  while read -r src target type opts _; do
    case $target in /sys/fs/cgroup*) mkdir -p "$target"; mount -t "$type" -o "$opts" "$src" "$target" ;; esac
  done < /proc/1/mounts
  mount --bind "$d/etc-docker" /etc/docker
  exec dockerd --data-root "$d/docker" --exec-root "$(exec_root "$h")" --pidfile "$d/dockerd.pid" \
    -H "unix://$(sock "$h")" --bip "10.232.$n.1/24" \
    --default-address-pool "base=10.$((100 + n)).0.0/16,size=24" \
    --cgroup-parent "pigeon-$h" --exec-opt native.cgroupdriver=cgroupfs --iptables=true --userland-proxy=false
}

host_down() {
  local h=$1 ns=pigeon-$1 d pid
  d=$(dir "$h")
  pid=$(minion_pid "$h" || true)
  [ -z "$pid" ] || kill "$pid" 2>/dev/null || true
  pkill -f -- "salt-minion -c $d/etc/salt( |\$)" 2>/dev/null || true
  pid=$(dockerd_pid "$h" || true)
  if [ -n "$pid" ]; then
    local ids; ids=$(dockr "$h" ps -aq 2>/dev/null || true)
    [ -z "$ids" ] || dockr "$h" rm -f $ids >/dev/null 2>&1 || true
    dockr "$h" network prune -f >/dev/null 2>&1 || true
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 75); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  fi
  # whatever still runs in the host's network namespace is the lab's: dockerd, containerd,
  # shims, minion children
  if ns_exists "$ns"; then
    local pids; pids=$(ip netns pids "$ns")
    [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
    for _ in $(seq 1 25); do [ -z "$(ip netns pids "$ns")" ] && break; sleep 0.2; done
    ip netns del "$ns"
  fi
  pkill -9 -f -- "salt-minion -c $d/etc/salt( |\$)" 2>/dev/null || true
  ip -n "$SWITCH" link del "p-$h" 2>/dev/null || true
  rm -rf "/etc/netns/$ns" "$(exec_root "$h")"
  # the containers' cgroup parent (--cgroup-parent), empty now, in every hierarchy
  # (cgroup v1: one level down in each hierarchy; v2: at the top of the unified one)
  find /sys/fs/cgroup -mindepth 1 -maxdepth 2 -type d -name "$ns" -exec rmdir {} + 2>/dev/null || true
  rm -f "$d/dockerd.pid" "$(sock "$h")" "$LAB/etc/salt/pki/master/minions/$h"
}

host_status() {
  local h=$1 ns=pigeon-$1 pid
  if ! ns_exists "$ns"; then echo "$h: down"; return; fi
  printf '%s: %s' "$h" "$(address "$h")"
  pid=$(dockerd_pid "$h" || true)
  if [ -n "$pid" ]; then printf ', dockerd %s (%s containers)' "$pid" "$(dockr "$h" ps -q | wc -l)"; else printf ', dockerd stopped'; fi
  pid=$(minion_pid "$h" || true)
  if [ -n "$pid" ]; then printf ', salt-minion %s\n' "$pid"; else printf ', salt-minion stopped\n'; fi
}

# --- images: docker save once from the default daemon ------------------------------------------
tar_name() { echo "$1" | tr '/:' '__'; }
save_images() {
  local image id base
  mkdir -p "$LAB/images"
  for image in $IMAGES; do
    base=$LAB/images/$(tar_name "$image")
    id=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null) \
      || fail "image $image not found in the default docker daemon: run bootstrap/install.sh"
    [ "$(cat "$base.id" 2>/dev/null)" = "$id" ] && [ -f "$base.tar" ] && continue
    step "saving $image for the hosts"
    docker save -o "$base.tar" "$image"
    echo "$id" > "$base.id"
  done
}

# --- each host in parallel; a failure of one is reported by its own line -----------------------
each() {  # VERB NAME...: host_VERB for every NAME at once (waiting for those pids only)
  local verb=$1 h pids=() names=() i rc=0; shift
  for h in "$@"; do "host_$verb" "$h" & pids+=($!); names+=("$h"); done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" && continue
    echo "hosts.sh: $verb of ${names[$i]} failed (see above); retry with bootstrap/hosts.sh down ${names[$i]}, then $verb ${names[$i]}" >&2
    rc=1
  done
  return $rc
}

names() {  # the names given, checked; else the default (up) or every host there is (down, status)
  local h
  for h in "$@"; do [[ $h =~ $NAME_RE ]] || fail "not a host name: ${h@Q} (lb0-lb9 or app0-app9)"; done
  if [ $# -gt 0 ]; then echo "$@"; return; fi
  case $cmd in
    up) echo "$DEFAULT_HOSTS" ;;
    *) { hosts_running; ls "$LAB/hosts" 2>/dev/null | grep -E "$NAME_RE" || true; } | sort -u | tr '\n' ' ' ;;
  esac
}

cmd=${1:-}
[ $# -gt 0 ] && shift
[ "$cmd" = address ] || [ "$(id -u)" = 0 ] || fail "needs root (network namespaces, dockerd)"
case $cmd in
  up)
    t0=$SECONDS; hosts=$(names "$@")
    switch_up
    save_images
    step "starting hosts: $hosts"
    each up $hosts
    step "hosts up in $((SECONDS - t0)) s: $(for h in $hosts; do printf '%s=%s ' "$h" "$(address "$h")"; done)"
    ;;
  down)
    t0=$SECONDS; hosts=$(names "$@")
    if foreign; then echo "hosts.sh: the hosts belong to the lab of $(owner): left alone"; exit 0; fi
    [ -n "${hosts// /}" ] || ns_exists "$SWITCH" || exit 0   # nothing of the lab's here
    if [ -n "${hosts// /}" ]; then step "stopping hosts: $hosts"; each down $hosts; fi
    # the switch goes with the last host
    if [ -z "$(hosts_running)" ]; then switch_down; rm -f "$OWNER"; rmdir /run/pigeon-lab /etc/netns 2>/dev/null || true; fi
    step "hosts down in $((SECONDS - t0)) s"
    ;;
  status) hosts=$(names "$@"); for h in $hosts; do host_status "$h"; done ;;
  switch) switch_up ;;
  address)
    for h in "$@"; do
      if [ "$h" = uplink ]; then echo "$NET.1"; else names "$h" >/dev/null; address "$h"; fi
    done ;;
  _dockerd) names "${1:-}" >/dev/null; _dockerd "$1" ;;
  *) echo "usage: bootstrap/hosts.sh up|down|status [NAME...] | address NAME... | switch" >&2; exit 2 ;;
esac
