#!/usr/bin/env bash
# Stage A (CPU, seconds): every test that needs no sglang release and no GPU (layout, settings, register, the
# rewrite's refusal corpus, NCCL policy, verdicts, sizing, the watchdog, the stage D log readers). Needs only .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/envs.sh --venv-only >/dev/null
.venv/bin/python -m pytest -q -p no:cacheprovider tests -m "not release and not gpu" "$@"
