#!/usr/bin/env bash
# The test command of README and .ci/run: builds the environments, then stages A and B.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/envs.sh
bash ci/fetch-wheels.sh
.venv/bin/python -m pytest -q tests -m "not gpu" "$@"
