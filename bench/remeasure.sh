#!/usr/bin/env bash
# Re-measures every figure of the README's performance table on a QUIET machine (nothing else
# running), from a clean, committed tree, then regenerates the table from the new rows.
#
#   bash bench/remeasure.sh          # the speed benchmarks: about 15 minutes on 2 cores
#   bash bench/remeasure.sh all      # + the learning runs: about 45 minutes more
#
# Every row gets bench/provenance.py's fields (commit, machine, versions) and
# "machine_shared": false (FPAC_MACHINE_SHARED=0): only run this when that is true.
# Afterwards: review `git diff bench/results README.md bench/README.md` and commit.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export FPAC_MACHINE_SHARED=0 MUJOCO_GL=${MUJOCO_GL:-egl} PYTHONPATH=$PWD

if [ -n "$(git status --porcelain --untracked-files=no -- . ':!bench/results' ':!README.md' ':!bench/README.md')" ]; then
    echo "remeasure: commit the code first (rows must name the commit they measured)" >&2
    exit 2
fi
load=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
    echo "remeasure: 1-minute load is $load: wait until the machine is quiet" >&2
    exit 2
fi
NOTE="quiet machine (bench/remeasure.sh)"
step() { echo; echo "== $1 (about $2 min)"; }

step "env backends, frames/s, 3 repeats" 2
for _ in 1 2 3; do "$PY" bench/bench_envs.py --steps 200 --note "$NOTE"; done
step "actor overhead, dmc + numpy, 3 interleaved rounds" 4
"$PY" bench/bench_actor.py --seconds 8 --configs dmc:cartpole_swingup numpy:point_reach --note "$NOTE"
step "transport, the service's sockets, 5 repeats" 1
"$PY" bench/bench_transport.py --seconds 5 --image-size 84 --steps-per-message 16 --note "$NOTE"
step "feature points, CPU, 2 threads then 1, 3 repeats each" 3
for _ in 1 2 3; do
    "$PY" bench/bench_feature_points.py --repeats 50 --threads 2 --devices cpu --note "$NOTE"
    "$PY" bench/bench_feature_points.py --repeats 50 --threads 1 --devices cpu --note "$NOTE"
done
step "SAC updates/s, CPU: plain loop, eager Trainer, torch.compile; 3 timed blocks each" 5
"$PY" bench/bench_learner.py --device cpu --threads 2 --variants plain,eager,compile --note "$NOTE"
step "state actor with / without rendering, 3 rounds" 2
"$PY" bench/bench_state_actor.py --note "$NOTE"

if [ "${1:-}" = all ]; then
    step "tiny task, 1/2/4 actors x 3 seeds" 15
    "$PY" bench/bench_learning.py --preset tiny-actors
    step "SAC from state, cartpole_swingup, 100k env steps" 13
    "$PY" bench/bench_learning.py --preset sac-state-cartpole
    step "scaling, 1 and 2 actors, replay ratio 0 (CSV/Markdown, not in the table)" 4
    "$PY" -m studies.scaling --task cartpole_swingup --actors 1,2 --seconds 60 --warmup 20 \
        --replay-ratio 0 --initial-random-steps 0 --gpus 0 --out bench/results \
        --name scaling-cartpole-cpu --note "$NOTE"
fi

"$PY" bench/readme_table.py --write
echo "done: review git diff bench/results README.md bench/README.md, then commit"
