#!/usr/bin/env bash
# Stage B (CPU, minutes): real sglang releases (ci/releases.txt) in fresh processes, and the
# multi-process all-gather proof on gloo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/envs.sh >/dev/null
.venv/bin/python -m pytest -q tests/test_release_patching.py tests/test_cp_gather_proof.py "$@"
