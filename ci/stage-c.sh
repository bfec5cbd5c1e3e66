#!/usr/bin/env bash
# Stage C (one CUDA GPU): sglang's real symmetric pool. Run on a GPU host where sglang 0.5.11 imports
# (for example the carried wheels of docs/gpu-runs.md on PYTHONPATH). Skips itself without a GPU.
set -euo pipefail
cd "$(dirname "$0")/../tests"
python3 -m pytest -p no:cacheprovider -q test_gpu_pool.py "$@"
