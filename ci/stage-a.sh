#!/usr/bin/env bash
# Stage A (CPU, seconds): layout, settings, register, source rewrite, NCCL policy, verdicts, sizing, the watchdog.
# Needs only .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/envs.sh --venv-only >/dev/null
.venv/bin/python -m pytest -q tests/test_layout.py tests/test_register.py tests/engine/test_settings.py \
  tests/engine/test_rewrite.py tests/engine/test_nccl_policy.py tests/tools/test_verdict.py tests/engine/test_sizing.py \
  tests/engine/test_watchdog.py "$@"
