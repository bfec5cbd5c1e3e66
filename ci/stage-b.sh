#!/usr/bin/env bash
# Stage B (CPU, minutes): real sglang releases (ci/releases.txt) in fresh processes, the multi-process
# all-gather proof on gloo, patches/ and the sweep over every published wheel, the doctor.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/envs.sh >/dev/null
bash ci/fetch-wheels.sh
.venv/bin/python -m pytest -q tests/engine/test_release_patching.py tests/tools/test_cp_gather_proof.py \
  tests/tools/test_patches_and_sweep.py tests/tools/test_doctor.py tests/engine/test_warmup.py \
  tests/engine/test_longest_forward.py tests/engine/test_longest_forward_sources.py tests/engine/test_warmup_bounded.py "$@"
