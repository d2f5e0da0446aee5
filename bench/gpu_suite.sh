#!/usr/bin/env bash
# The GPU measurements in one command, for a session that is lent a GPU machine (device tool):
# CUDA tests, feature points and learner updates/s on CUDA, and a cartpole_swingup learning curve
# with 15 actors. Results go to $OUT (the device tool's folder) or bench/results.
# Prepare here first:  bash ../shared/device/pack-sim.sh   (then carry .device)
# On the device:       bash bench/gpu_suite.sh [ENV_STEPS]
set -uo pipefail
out=${OUT:-bench/results}
mkdir -p "$out"
site=$(mktemp -d) && tar -xJf .device/sim-cp312.tar.xz -C "$site" || exit 1
export PYTHONPATH=$site:$PWD MUJOCO_GL=egl PYTHONUNBUFFERED=1
env_steps=${1:-100000}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -m pytest -q -x tests/test_replay.py tests/test_sac.py tests/test_trainer.py \
  tests/test_feature_points.py 2>&1 | tail -3 | tee "$out/cuda_tests.txt"
python3 bench/bench_feature_points.py --devices cpu,cuda --out "$out/feature_points.jsonl" \
  --note "gpu_suite" 2>&1 | tail -6
python3 bench/bench_learner.py --device all --out "$out/learner.jsonl" --note "gpu_suite" 2>&1 | tail -5
python3 bench/bench_learner.py --device cuda --amp --out "$out/learner.jsonl" \
  --note "gpu_suite, bf16 autocast" 2>&1 | tail -3
# FPAC learning from pixels: learner on the GPU, 15 actors and the evaluator on the 16 cores,
# cartpole_swingup to ENV_STEPS (default 100k) with the authors' defaults; killed after 360 s if
# the budget is not reached (evals.jsonl is written as it goes, and recorded either way).
python3 bench/bench_learning.py --preset fpac-cartpole-gpu --timeout-s 360 \
  --out "$out/learning.jsonl" --keep "$out/runs" -- --env-steps "$env_steps" 2>&1 | tail -15
cp "$out/runs/fpac-cartpole-gpu/evals.jsonl" "$out/cartpole_evals.jsonl" 2>/dev/null
cp "$out/runs/fpac-cartpole-gpu/metrics.csv" "$out/cartpole_metrics.csv" 2>/dev/null
rm -rf "$out/runs"
