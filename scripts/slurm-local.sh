#!/usr/bin/env bash
# A real single-node SLURM cluster on this host, for the SLURM tests (tests/test_slurm.py) and for trying
# the workflow's SLURM profile without a cluster. Needs root; installs Debian's slurm-wlm and munge with
# apt-get when missing. Declares two GPUs backed by empty files, so `--gpus=1` jobs are accepted.
#
#   bash scripts/slurm-local.sh start    # install if needed, configure, start; waits until the node is idle
#   bash scripts/slurm-local.sh status   # exit 0 when the cluster answers and the node is usable
#   bash scripts/slurm-local.sh stop     # stop the daemons this script started
#
# Exit status 3: cannot run here (not root, no apt-get, or another SLURM configuration owns /etc/slurm).
# State, logs and the dummy GPU files live in $FLOWRL_SLURM_STATE (default /var/tmp/flowrl-slurm).
set -euo pipefail

STATE=${FLOWRL_SLURM_STATE:-/var/tmp/flowrl-slurm}
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
MARK="# written by flowrl-bench scripts/slurm-local.sh"
HOST=$(hostname -s)

say() { echo "slurm-local: $*" >&2; }
cannot() { say "$*"; exit 3; }

cluster_answers() { timeout 10 sinfo -h -o %T >/dev/null 2>&1; }

node_state() { timeout 10 sinfo -h -n "$HOST" -o %T 2>/dev/null | head -1; }

our_config() { [ -f "$CONF" ] && head -1 "$CONF" | grep -qF "$MARK"; }

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    return
  fi
  command -v apt-get >/dev/null || cannot "SLURM is not installed and apt-get is not available to install it"
  say "installing slurm-wlm and munge with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || cannot "apt-get update failed (no network?)"
  apt-get install -y -qq slurm-wlm munge >/dev/null || cannot "apt-get install slurm-wlm munge failed"
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    return
  fi
  mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
  chmod 400 /etc/munge/munge.key
  chmod 755 /run/munge
  su munge -s /bin/sh -c "munged --force"
  touch "$STATE/munged.started"
  for _ in $(seq 20); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return
    sleep 0.5
  done
  cannot "munged did not start (see /var/log/munge/munged.log)"
}

write_config() {
  local cpus mem_mb
  cpus=$(nproc)
  mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)
  mkdir -p "$STATE"/{state,spool,log} "$CONF_DIR"
  : > "$STATE/gpu0"
  : > "$STATE/gpu1"
  cat > "$STATE/slurm.conf.new" <<EOF
$MARK (safe to delete; 'stop' then 'start' rewrites it)
ClusterName=flowrl-local
SlurmctldHost=$HOST
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
MinJobAge=600
KillWait=30
GresTypes=gpu
NodeName=$HOST CPUs=$cpus RealMemory=$mem_mb Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
  cat > "$STATE/gres.conf.new" <<EOF
$MARK
NodeName=$HOST Name=gpu File=$STATE/gpu[0-1]
EOF
  local changed=0
  cmp -s "$STATE/slurm.conf.new" "$CONF" || changed=1
  cmp -s "$STATE/gres.conf.new" "$CONF_DIR/gres.conf" || changed=1
  mv "$STATE/slurm.conf.new" "$CONF"
  mv "$STATE/gres.conf.new" "$CONF_DIR/gres.conf"
  echo "$changed"
}

start() {
  [ "$(id -u)" = 0 ] || cannot "needs root (it installs packages and runs slurmctld/slurmd as root)"
  if [ -f "$CONF" ] && ! our_config; then
    if cluster_answers; then
      say "a SLURM cluster configured elsewhere answers on this host; using it as it is"
      exit 0
    fi
    cannot "$CONF exists and was not written by this script; not touching it"
  fi
  install_packages
  mkdir -p "$STATE"
  start_munge
  local changed
  changed=$(write_config)
  if cluster_answers && [ "$changed" = 1 ]; then
    say "configuration changed: restarting the daemons"
    scontrol shutdown >/dev/null 2>&1 || true
    sleep 2
  fi
  if ! pgrep -x slurmctld >/dev/null; then slurmctld; fi
  if ! pgrep -x slurmd >/dev/null; then slurmd; fi
  for _ in $(seq 60); do
    case "$(node_state)" in
      idle*|mixed*|allocated*) say "node $HOST is up ($(node_state)); partition debug, 2 dummy GPUs"; return 0 ;;
      down*|drain*|fail*|inval*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 1
  done
  say "the node did not become idle; see $STATE/log/slurmctld.log and slurmd.log"
  sinfo >&2 || true
  exit 1
}

stop() {
  if ! our_config; then
    say "$CONF was not written by this script; nothing to stop"
    return 0
  fi
  scontrol shutdown >/dev/null 2>&1 || true
  if [ -f "$STATE/munged.started" ] && [ -f /run/munge/munged.pid ]; then
    kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
    rm -f "$STATE/munged.started"
  fi
  say "stopped"
}

status() {
  cluster_answers || { say "no SLURM cluster answers"; exit 1; }
  local state
  state=$(node_state)
  case "$state" in
    idle*|mixed*|allocated*) say "up: node $HOST $state"; exit 0 ;;
    *) say "node $HOST is '$state'"; exit 1 ;;
  esac
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
