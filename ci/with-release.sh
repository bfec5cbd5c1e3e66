#!/usr/bin/env bash
# Run a command with one real sglang release importable: ci/with-release.sh 0.5.11 python -m sglang_cp_symm demo
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
release=$1; shift
dir=$root/.envs/sglang-$release
[ -d "$dir/sglang" ] || { echo "no environment for sglang $release: run ci/envs.sh (releases: ci/releases.txt)" >&2; exit 2; }
# 0.5.10-0.5.20 import torchvision at module level (see tests/stubs); 0.5.21+ import it lazily.
stubs=""
if [ "$(printf '%s\n0.5.21\n' "$release" | sort -V | head -1)" != "0.5.21" ]; then stubs=:$root/tests/stubs; fi
export PYTHONPATH=$dir$stubs${PYTHONPATH:+:$PYTHONPATH}
export PATH=$root/.venv/bin:$PATH
exec "$@"
