#!/usr/bin/env bash
# Run a command with one real sglang release importable: ci/with-release.sh 0.5.11 python -m sglang_cp_symm demo
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
release=$1; shift
dir=$root/.envs/sglang-$release
[ -d "$dir/sglang" ] || { echo "no environment for sglang $release: run ci/envs.sh (releases: ci/releases.txt)" >&2; exit 2; }
# torchvision has no CPU build for torch 2.13: 0.5.10-0.5.20 import it at module level, 0.5.21+ through
# io_struct's import chain; tests/stubs stands in for the names they import (as tests/conftest.py does).
export PYTHONPATH=$dir:$root/tests/stubs${PYTHONPATH:+:$PYTHONPATH}
export PATH=$root/.venv/bin:$PATH
exec "$@"
