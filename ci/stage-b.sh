#!/usr/bin/env bash
# Stage B (CPU, minutes): real sglang releases (ci/releases.txt) in fresh processes, the multi-process
# all-gather proof on gloo, patches/ and the sweep over every published wheel, the doctor.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/envs.sh >/dev/null
bash ci/fetch-wheels.sh
.venv/bin/python -m pytest -q tests/test_release_patching.py tests/test_cp_gather_proof.py \
  tests/test_patches_and_sweep.py tests/test_doctor.py tests/test_warmup.py "$@"
