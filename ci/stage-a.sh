#!/usr/bin/env bash
# Stage A (CPU, seconds): settings, register, source rewrite, NCCL policy, verdicts, sizing, the watchdog. Needs only .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/envs.sh >/dev/null
.venv/bin/python -m pytest -q tests/test_settings.py tests/test_register.py tests/test_rewrite.py tests/test_nccl_policy.py \
  tests/test_verdict.py tests/test_sizing.py tests/test_watchdog.py "$@"
