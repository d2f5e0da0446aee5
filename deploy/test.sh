#!/usr/bin/env bash
# Sets everything up (deploy/setup.sh) and runs the test suite. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh || exit 1
export MUJOCO_GL=${MUJOCO_GL:-egl}
.venv/bin/python -m pytest -q --durations=15 "$@"
rc=$?
if [ $rc -eq 5 ]; then echo "test: pytest collected no tests" >&2; exit 1; fi
exit $rc
