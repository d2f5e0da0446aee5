#!/usr/bin/env bash
# The GPU measurements in one command (issue 13), at most 8 minutes: the CUDA tests, the learner
# updates/s table (plain loop vs every speed setting), the rendering table (NVIDIA EGL vs Mesa),
# and an FPAC cartpole_swingup run to 100k env steps with 15 actors (eval returns, time to score).
# Every step runs under its own `timeout`; all output goes to $OUT (the device tool's folder) or
# bench/results/gpu_suite, with steps.txt (exit code and seconds per step) and summary.txt.
#
# Prepare here (once):  bash bench/gpu_prep.sh     (-> .device/sim-cp312.tar.xz and .gl/*.deb)
# On the device:        run(command="bash bench/gpu_suite.sh", carry=[".device", ".gl"], timeout_s=590)
# Dry run on a CPU:     GPU_SUITE_DRY=1 PYTHON=/work/main/.venv/bin/python bash bench/gpu_suite.sh
#   (every step tiny, on the CPU, with this machine's Python environment (no archive, no
#   loaders); CUDA-only variants report themselves skipped)
set -uo pipefail
dry=${GPU_SUITE_DRY:-0}
out=${OUT:-bench/results/gpu_suite}
py=${PYTHON:-python3}
mkdir -p "$out"
: > "$out/steps.txt"

step() {  # name budget_s command... : run under timeout, log to $out/name.log, record rc and time
  local name=$1 budget=$2; shift 2
  local t0=$SECONDS rc
  echo "== $name (budget ${budget} s)"
  timeout --kill-after=5 "$budget" "$@" > "$out/$name.log" 2>&1
  rc=$?
  echo "$name rc=$rc seconds=$((SECONDS - t0)) budget=$budget" | tee -a "$out/steps.txt"
  tail -n 14 "$out/$name.log"
}

# ---------------------------------------------------------------- environment (~10 s)
if [ -d .gl ] && [ "$dry" != 1 ]; then  # EGL/GL loaders (device README recipe)
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
if [ "$dry" = 1 ]; then  # this machine's own Python environment
  export PYTHONPATH=$PWD
elif [ -f .device/sim-cp312.tar.xz ]; then
  site=$(mktemp -d) && tar -xJf .device/sim-cp312.tar.xz -C "$site" || exit 1
  if [ -f .device/extra-cp312.tar.xz ]; then  # msgpack, lxml (gpu_prep.sh)
    extra=$(mktemp -d) && tar -xJf .device/extra-cp312.tar.xz -C "$extra" && site=$site:$extra
  fi
  export PYTHONPATH=$site:$PWD
else
  echo "no .device/sim-cp312.tar.xz: run bash bench/gpu_prep.sh here and carry .device" >&2
  exit 1
fi
export MUJOCO_GL=egl PYOPENGL_PLATFORM=egl PYTHONUNBUFFERED=1
note="gpu_suite"
if [ "$dry" = 1 ]; then
  note="gpu_suite dry run (CPU, tiny)"
  shared=--machine-shared
  tiny=(--image-size 32 --num-points 4 --hidden-dim 32 --conv-channels 8 --batch-size 16)
else
  shared=""
  tiny=()
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
fi
"$py" - <<'PY' 2>&1 | tee -a "$out/gpu.txt"
import importlib, sys
import torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available())
for name in ("numpy", "msgpack", "zmq", "mujoco", "lxml", "scipy", "dm_control.suite", "pytest"):
    try:
        importlib.import_module(name)
        print("import", name, "ok")
    except Exception as e:  # noqa: BLE001 - report every missing piece at once
        print("import", name, "FAILED:", type(e).__name__, e)
PY

# ---------------------------------------------------------------- 1. tests (90 s)
# The `device`-fixture tests on CUDA only (their CPU runs are the ordinary test suite's), the
# CUDA-only tests, and the device-independent ones; the CPU inductor test (compiled == eager,
# ~1 min) is left to the ordinary suite.
tests=(tests/test_update_modes.py tests/test_trainer_prefetch.py tests/test_replay.py
       tests/test_sac.py tests/test_trainer.py tests/test_feature_points.py)
if [ "$dry" = 1 ]; then
  step tests 150 "$py" -m pytest -q -p no:cacheprovider -rs "${tests[@]}" -k "not compiled"
else
  FPAC_TEST_DEVICES=cuda step tests 90 "$py" -m pytest -q -p no:cacheprovider -rs "${tests[@]}" \
    -k "not compiled"
fi

# ---------------------------------------------------------------- 2. updates/s table (130 s)
if [ "$dry" = 1 ]; then
  step learner 120 "$py" bench/bench_learner.py --device cpu "${tiny[@]}" --capacity 300 \
    --updates 3 --repeats 2 --warmup 1 --threads 1 $shared --note "$note" \
    --variants plain,eager,cudagraphs,best,channels_last --out "$out/learner.jsonl"
else
  step learner 130 "$py" bench/bench_learner.py --device cuda --updates 300 --repeats 3 \
    --warmup 20 --note "$note" --out "$out/learner.jsonl"
fi

# ---------------------------------------------------------------- 3. rendering table (50 s)
if [ "$dry" = 1 ]; then
  step render 90 "$py" bench/bench_render.py --renderers nvidia,mesa --processes 1,2 \
    --seconds 2 --image-size 84 $shared --note "$note" --out "$out/render.jsonl"
else
  step render 50 "$py" bench/bench_render.py --renderers nvidia,mesa --processes 1,15 \
    --seconds 4 --startup-timeout-s 20 --note "$note" --out "$out/render.jsonl"
fi

# ---------------------------------------------------------------- 4. FPAC cartpole (190 s)
# Learner on the GPU (the CUDA defaults), 15 actors and the evaluator on the 16 cores; stopped
# at 180 s if 100k env steps are not reached (evals.jsonl is written as it goes).
if [ "$dry" = 1 ]; then
  step cartpole 150 "$py" bench/bench_learning.py --preset fpac-cartpole-gpu --timeout-s 140 \
    --out "$out/learning.jsonl" --keep "$out/runs" -- --env-steps 2000 --gpus 0 --actors 2 \
    "${tiny[@]}" --capacity 4000 --initial-random-steps 100 --eval-every-env-steps 1000 \
    --eval-episodes 1
else
  step cartpole 190 "$py" bench/bench_learning.py --preset fpac-cartpole-gpu --timeout-s 180 \
    --out "$out/learning.jsonl" --keep "$out/runs"
fi
run="$out/runs/fpac-cartpole-gpu"
mkdir -p "$out/cartpole"
cp "$run"/*.jsonl "$run"/*.log "$run"/*.json "$out/cartpole/" 2>/dev/null
rm -rf "$out/runs"

# ---------------------------------------------------------------- summary
"$py" bench/gpu_summary.py "$out" | tee "$out/summary.txt"
echo "gpu_suite: $SECONDS s in all"
