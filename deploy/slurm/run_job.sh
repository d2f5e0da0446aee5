#!/usr/bin/env bash
# The body of deploy/slurm/fpac-hetjob.sbatch and fpac-single.sbatch (run inside the job's batch
# step):  run_job.sh het|single
#
#   het:    the learner is het group 0 (its first node), the actor tasks are het group 1.
#   single: one homogeneous job; the learner is task 0 on the job's first node, the other
#           SLURM_NTASKS - 1 tasks are actor tasks (for clusters without heterogeneous jobs).
#
# Each actor task runs FPAC_ACTORS_PER_TASK actors with ids rank * FPAC_ACTORS_PER_TASK ...
# (deploy/cluster_task.py), reaching the learner at its first node's name and FPAC_PORT. A
# requeued job (same job id, same run dir) resumes from the run's latest checkpoint. Logs: one file
# per component and task under RUN_DIR/logs (appended across requeues): learner-JOBID.out and
# actors-JOBID-RANK.out, where JOBID is the component's own id (in a heterogeneous job the actors'
# component has the next id). Exit code: the learner's.
#
# Environment (all optional): FPAC_REPO (the checkout; default the submit directory),
# FPAC_PYTHON (default python), FPAC_RUN_DIR (default $FPAC_REPO/runs/slurm-$SLURM_JOB_ID),
# FPAC_PORT (5555; the learner binds it and the next two), FPAC_ACTORS_PER_TASK (default
# SLURM_CPUS_PER_TASK of the actor tasks), FPAC_RUN_ARGS (flags for both roles, e.g.
# "--task cartpole_swingup"), FPAC_LEARNER_ARGS (learner-only flags, default "--gpus 1"),
# FPAC_EVALUATOR (1: actor task 0 also runs the evaluator; 0: none, for runs without evaluations),
# FPAC_STOP_GRACE_S (30: time the actors get to exit after the learner ends).
# A new run's learner waits for every actor's hello before its first policy (--wait-for-actors
# ACTOR_TASKS x PER_TASK; FPAC_LEARNER_ARGS may override it), so all actor tasks start together.
set -uo pipefail
mode=${1:?usage: run_job.sh het|single}
REPO=${FPAC_REPO:-$SLURM_SUBMIT_DIR}
cd "$REPO" || exit 2
PY=${FPAC_PYTHON:-python}
RUN_DIR=${FPAC_RUN_DIR:-$REPO/runs/slurm-$SLURM_JOB_ID}
PORT=${FPAC_PORT:-5555}
LOGS=$RUN_DIR/logs
evaluator=--evaluator; if [ "${FPAC_EVALUATOR:-1}" = 0 ]; then evaluator=""; fi
mkdir -p "$LOGS"
# shellcheck disable=SC2206  # word splitting of the flag strings is intended
RUN_ARGS=(${FPAC_RUN_ARGS:-})
# shellcheck disable=SC2206
LEARNER_ARGS=(${FPAC_LEARNER_ARGS:---gpus 1})

case "$mode" in
  het)
    learner_step=(--het-group=0 --ntasks=1)
    actor_tasks=${SLURM_NTASKS_HET_GROUP_1:?not a heterogeneous job with 2 components}
    actor_step=(--het-group=1 --ntasks="$actor_tasks")
    per_task=${FPAC_ACTORS_PER_TASK:-${SLURM_CPUS_PER_TASK_HET_GROUP_1:-1}}
    echo "run_job: learner on ${SLURM_JOB_NODELIST_HET_GROUP_0:-?}," \
         "actors on ${SLURM_JOB_NODELIST_HET_GROUP_1:-?}" ;;
  single)
    first=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
    actor_tasks=$(( SLURM_NTASKS - 1 ))
    [ "$actor_tasks" -ge 1 ] || { echo "run_job: need --ntasks >= 2 (learner + actors)" >&2; exit 2; }
    learner_step=(--ntasks=1 --nodes=1 --nodelist="$first")
    actor_step=(--ntasks="$actor_tasks")
    per_task=${FPAC_ACTORS_PER_TASK:-${SLURM_CPUS_PER_TASK:-1}} ;;
  *) echo "run_job: mode must be het or single, not $mode" >&2; exit 2 ;;
esac
echo "run_job: job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}), run dir $RUN_DIR," \
     "$actor_tasks actor tasks x $per_task actors, logs in $LOGS"

# --exact: each step gets only the cpus it asks for, so both steps run at once.
srun "${learner_step[@]}" --exact --open-mode=append --output="$LOGS/learner-%j.out" \
  "$PY" -m deploy.cluster_task learner "${RUN_ARGS[@]}" \
  --wait-for-actors $(( actor_tasks * per_task )) "${LEARNER_ARGS[@]}" \
  --bind "tcp://*:$PORT" --run-dir "$RUN_DIR" &
learner=$!
srun "${actor_step[@]}" --exact --open-mode=append --output="$LOGS/actors-%j-%t.out" \
  "$PY" -m deploy.cluster_task actors --per-task "$per_task" --learner-port "$PORT" \
  $evaluator "${RUN_ARGS[@]}" &
actors=$!

wait "$learner"; rc=$?
echo "run_job: the learner exited with $rc"
# After a finished run the actors exit on the learner's `stop`; otherwise (or if they hang) end them.
for _ in $(seq "${FPAC_STOP_GRACE_S:-30}"); do kill -0 "$actors" 2>/dev/null || break; sleep 1; done
if kill -0 "$actors" 2>/dev/null; then echo "run_job: stopping the actor step"; kill -TERM "$actors"; fi
wait "$actors"; echo "run_job: the actor step exited with $?"
exit "$rc"
