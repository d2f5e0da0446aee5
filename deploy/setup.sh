#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine for fpac-async, idempotently:
#  1. system packages for headless rendering (Mesa's EGL; DESIGN.md section 2),
#     As root also iproute2 (`ip`) where missing, for tests/test_multihost.py (optional: the test
#     skips without it),
#  2. a virtualenv (.venv, or $VENV),
#  3. torch BEFORE everything else, so a CPU machine gets the CPU build and no CUDA packages,
#  4. the project itself (editable) with its test extras.
# Environment: VENV (default .venv), TORCH_SPEC (default: torch==2.13.0 on CPU machines,
# plain torch where nvidia-smi finds a GPU), FPAC_SKIP_APT=1 to skip step 1.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
GL_PKGS="libegl1 libegl-mesa0 libgl1-mesa-dri"

if [ "${FPAC_SKIP_APT:-0}" != 1 ] && command -v dpkg >/dev/null 2>&1; then
  missing=""
  for p in $GL_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    echo "setup: installing system packages for headless EGL:$missing"
    if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
      echo "setup: need root (or sudo) to install:$missing — install them and re-run" >&2; exit 1; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
  fi
fi

if [ "${FPAC_SKIP_APT:-0}" != 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
   && ! command -v ip >/dev/null 2>&1; then
  echo "setup: installing iproute2 (network namespaces for tests/test_multihost.py)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null; } \
    || echo "setup: could not install iproute2; tests/test_multihost.py will skip" >&2
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating virtualenv $VENV"
  $PY -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi

if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  if [ -z "${TORCH_SPEC:-}" ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then TORCH_SPEC="torch"
    else TORCH_SPEC="torch==2.13.0"; fi
  fi
  echo "setup: installing $TORCH_SPEC first"
  "$VENV/bin/python" -m pip install -q "$TORCH_SPEC"
fi

if ! "$VENV/bin/python" -c "import fpac_async, zmq, msgpack, dm_control, pytest_timeout, hypothesis, kubernetes_validate, yaml" >/dev/null 2>&1 \
   || [ pyproject.toml -nt "$VENV/.fpac-installed" ]; then
  echo "setup: installing fpac-async and its dependencies"
  "$VENV/bin/python" -m pip install -q -e ".[test]"
  touch "$VENV/.fpac-installed"
fi
echo "setup: ready ($("$VENV/bin/python" -c 'import torch,mujoco; print("torch", torch.__version__, "mujoco", mujoco.__version__)'))"
