#!/usr/bin/env bash
# A one-node Slurm cluster on THIS machine, for testing deploy/slurm/ (tests/test_slurm.py):
#
#   deploy/slurm/local_cluster.sh start DIR [CPUS]   # install (apt), write DIR/slurm.conf, start daemons
#   deploy/slurm/local_cluster.sh stop DIR           # stop the daemons started by `start DIR`
#
# Needs root (it installs Debian's slurm-wlm and munge with apt-get and runs the daemons as root).
# Everything but munge's key lives under DIR: the config (use it with SLURM_CONF=DIR/slurm.conf),
# state, spool, daemon logs and pid files; the daemons listen on ports 16817/16818 so that a
# system Slurm is not disturbed. The node claims CPUS cpus (default 8) whatever the machine has
# (SlurmdParameters=config_overrides): the test's job asks for more tasks than a 2-core CI machine
# has cores, and the tasks share the cores. select/cons_tres, which heterogeneous jobs need.
# Exit codes: 0 ok, 2 cannot run here (not root, no apt, packages not installable), 1 failure.
set -uo pipefail
cmd=${1:-}; DIR=${2:-}; CPUS=${3:-8}
[ -n "$cmd" ] && [ -n "$DIR" ] || { echo "usage: $0 start|stop DIR [CPUS]" >&2; exit 1; }
DIR=$(mkdir -p "$DIR" && cd "$DIR" && pwd)
export SLURM_CONF="$DIR/slurm.conf"

stop() {
  for f in slurmd slurmctld munged; do
    if [ -f "$DIR/$f.pid" ]; then
      pid=$(cat "$DIR/$f.pid"); kill "$pid" 2>/dev/null
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null; rm -f "$DIR/$f.pid"
    fi
  done
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

NODE=$(hostname -s)
# The actors reach the learner by its node's name (as on a real cluster): it must resolve here.
getent hosts "$NODE" >/dev/null || { echo "local_cluster: this machine's name $NODE does not resolve (add it to /etc/hosts)" >&2; exit 2; }
mkdir -p "$DIR/state" "$DIR/spool" "$DIR/munge"
chown munge:munge "$DIR/munge" 2>/dev/null
[ -s /etc/munge/munge.key ] || mungekey --create >/dev/null 2>&1 || {
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }

cat > "$SLURM_CONF" <<CONF
ClusterName=fpaclocal
SlurmctldHost=$NODE(127.0.0.1)
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
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=8000 State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES DefaultTime=60 MaxTime=INFINITE State=UP OverSubscribe=YES
CONF

stop  # a previous start in the same DIR
munged --socket="$DIR/munge/munge.socket" --pid-file="$DIR/munged.pid" --force \
  --log-file="$DIR/munged.log" || { echo "local_cluster: munged did not start" >&2; exit 1; }
slurmctld || { echo "local_cluster: slurmctld did not start (see $DIR/slurmctld.log)" >&2; stop; exit 1; }
slurmd || { echo "local_cluster: slurmd did not start (see $DIR/slurmd.log)" >&2; stop; exit 1; }
for _ in $(seq 120); do
  if sinfo -h -o %T 2>/dev/null | grep -qx idle; then echo "local_cluster: up ($SLURM_CONF)"; exit 0; fi
  sleep 0.5
done
echo "local_cluster: the node did not become idle in 60 s:" >&2; sinfo >&2; tail -n 20 "$DIR/slurmctld.log" "$DIR/slurmd.log" >&2
stop; exit 1
