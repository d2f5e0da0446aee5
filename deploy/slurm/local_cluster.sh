#!/usr/bin/env bash
# A small Slurm cluster on THIS machine, for testing deploy/slurm/ (tests/test_slurm.py):
#
#   deploy/slurm/local_cluster.sh start DIR [CPUS]   # install (apt), write DIR/slurm.conf, start daemons
#   deploy/slurm/local_cluster.sh stop DIR           # stop the daemons and remove the namespace
#
# Needs root (it installs Debian's slurm-wlm and munge with apt-get and runs the daemons as root).
# Two nodes where the kernel allows network namespaces: node 1 is this machine (NodeAddr
# 10.214.0.1 on one end of a veth pair), node 2 a second slurmd in the network namespace
# fpac-slurm2 (NodeAddr 10.214.0.2, the other end), so a job's tasks on node 2 reach node 1 only
# over the veth, as on two hosts; a heterogeneous job needs two nodes (its components are planned
# node by node). Otherwise one node on 127.0.0.1 (printed). Everything but munge's key lives under
# DIR: the config (use it with SLURM_CONF=DIR/slurm.conf), state, spool, daemon logs and pid
# files; the daemons listen on ports 16817/16818 so that a system Slurm is not disturbed. Each
# node claims CPUS cpus (default 8) whatever the machine has (SlurmdParameters=config_overrides):
# the tests' jobs ask for more tasks than a 2-core CI machine has cores, and the tasks share them.
# Exit codes: 0 ok, 2 cannot run here (not root, no apt, packages not installable), 1 failure.
set -uo pipefail
cmd=${1:-}; DIR=${2:-}; CPUS=${3:-8}
[ -n "$cmd" ] && [ -n "$DIR" ] || { echo "usage: $0 start|stop DIR [CPUS]" >&2; exit 1; }
DIR=$(mkdir -p "$DIR" && cd "$DIR" && pwd)
export SLURM_CONF="$DIR/slurm.conf"

NS=fpac-slurm2; VETH=fpsl0; VETH_NS=fpsl1; NET=10.214.0

stop() {
  for f in slurmd2 slurmd slurmctld munged; do
    if [ -f "$DIR/$f.pid" ]; then
      pid=$(cat "$DIR/$f.pid"); kill "$pid" 2>/dev/null
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null; rm -f "$DIR/$f.pid"
    fi
  done
  if [ -f "$DIR/netns" ]; then  # deleting the namespace deletes the veth pair with it
    ip netns del "$NS" 2>/dev/null; ip link del "$VETH" 2>/dev/null; rm -f "$DIR/netns"
  fi
}

# Node 2's network: a namespace joined to this one by a veth pair. 0 when made.
second_node_network() {
  command -v ip >/dev/null && command -v nsenter >/dev/null || return 1
  ip netns del "$NS" 2>/dev/null; ip link del "$VETH" 2>/dev/null
  touch "$DIR/netns"
  ip netns add "$NS" && ip link add "$VETH" type veth peer name "$VETH_NS" \
    && ip link set "$VETH_NS" netns "$NS" && ip addr add "$NET.1/24" dev "$VETH" \
    && ip link set "$VETH" up && ip -n "$NS" addr add "$NET.2/24" dev "$VETH_NS" \
    && ip -n "$NS" link set "$VETH_NS" up && ip -n "$NS" link set lo up
}

if [ "$cmd" = stop ]; then stop; exit 0; fi
[ "$cmd" = start ] || { echo "usage: $0 start|stop DIR [CPUS]" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "local_cluster: needs root (installs packages, runs slurmd)" >&2; exit 2; }

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
   || ! command -v sbatch >/dev/null; then
  command -v apt-get >/dev/null || { echo "local_cluster: no apt-get to install slurm-wlm" >&2; exit 2; }
  echo "local_cluster: installing slurm-wlm and munge"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
         --no-install-recommends slurm-wlm munge >/dev/null; }; then
    echo "local_cluster: apt-get could not install slurm-wlm munge (no network?)" >&2; exit 2
  fi
fi

NODE=$(hostname -s); NODE2=$NODE-n2
stop  # a previous start in the same DIR
if second_node_network; then
  ADDR=$NET.1; NODES="$NODE,$NODE2"
  NODE2_LINE="NodeName=$NODE2 NodeAddr=$NET.2 CPUs=$CPUS RealMemory=8000 State=UNKNOWN"
else
  echo "local_cluster: no network namespace here: one node only (no heterogeneous jobs)"
  stop; ADDR=127.0.0.1; NODES=$NODE; NODE2_LINE=""
fi
mkdir -p "$DIR/state" "$DIR/spool" "$DIR/munge"
chown munge:munge "$DIR/munge" 2>/dev/null
[ -s /etc/munge/munge.key ] || mungekey --create >/dev/null 2>&1 || {
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }

cat > "$SLURM_CONF" <<CONF
ClusterName=fpaclocal
SlurmctldHost=$NODE($ADDR)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
# heterogeneous jobs are started only by the backfill scheduler: look every second, start at once
SchedulerParameters=bf_interval=1,bf_hetjob_immediate
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
JobRequeue=1
NodeName=$NODE NodeAddr=$ADDR CPUs=$CPUS RealMemory=8000 State=UNKNOWN
$NODE2_LINE
PartitionName=debug Nodes=$NODES Default=YES DefaultTime=60 MaxTime=INFINITE State=UP OverSubscribe=YES
CONF

# Node 2's slurmd reads the same config but its own pid and log files.
sed "s#^SlurmdPidFile=.*#SlurmdPidFile=$DIR/slurmd2.pid#; s#^SlurmdLogFile=.*#SlurmdLogFile=$DIR/slurmd2.log#" \
  "$SLURM_CONF" > "$DIR/slurm2.conf"

munged --socket="$DIR/munge/munge.socket" --pid-file="$DIR/munged.pid" --force \
  --log-file="$DIR/munged.log" || { echo "local_cluster: munged did not start" >&2; stop; exit 1; }
slurmctld || { echo "local_cluster: slurmctld did not start (see $DIR/slurmctld.log)" >&2; stop; exit 1; }
slurmd -N "$NODE" || { echo "local_cluster: slurmd did not start (see $DIR/slurmd.log)" >&2; stop; exit 1; }
n_nodes=1
if [ "$NODES" != "$NODE" ]; then
  n_nodes=2
  # nsenter --net: only the network is node 2's (ip netns exec would also remount /sys, where
  # slurmd needs the cgroup filesystem).
  SLURM_CONF="$DIR/slurm2.conf" nsenter --net="/run/netns/$NS" slurmd -N "$NODE2" \
    || { echo "local_cluster: node 2's slurmd did not start (see $DIR/slurmd2.log)" >&2; stop; exit 1; }
fi
for _ in $(seq 120); do
  if [ "$(sinfo -h -N -o %T 2>/dev/null | grep -cx idle)" = "$n_nodes" ]; then
    echo "local_cluster: up, $n_nodes node(s) ($SLURM_CONF)"; exit 0
  fi
  sleep 0.5
done
echo "local_cluster: the nodes did not become idle in 60 s:" >&2; sinfo -N >&2
tail -n 20 "$DIR/slurmctld.log" "$DIR/slurmd.log" >&2
stop; exit 1
