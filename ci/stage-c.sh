#!/usr/bin/env bash
# Stage C (one CUDA GPU): sglang's real symmetric pool with the plugin, and the warm-up's effect on it. Run on a
# GPU host where sglang imports (on the lent device machine: ci/device-stage-c.sh, which installs the carried
# wheels of ci/gpu-wheels.sh first). Skips itself without a GPU.
set -euo pipefail
cd "$(dirname "$0")/../tests/engine"
python3 -m pytest -p no:cacheprovider -q test_gpu_pool.py test_gpu_warmup.py "$@"
