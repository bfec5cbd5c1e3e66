#!/usr/bin/env bash
# The main job: build the environments, then show the plugin at work on real sglang releases on this
# machine: what it does per release, and the real CP all-gathers across processes with it off and on.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/envs.sh
for release in 0.5.10 0.5.11 0.5.12; do
  echo; echo "=== sglang $release: status with SGLANG_CP_SYMM=1 (targets imported and patched in this process)"
  SGLANG_CP_SYMM=1 ci/with-release.sh "$release" python -W ignore -m sglang_cp_symm status --apply 2>/dev/null
done
echo; echo "=== sglang 0.5.11: real CP all-gathers, 3 processes, plugin off (unpatched) vs on (patched)"
ci/with-release.sh 0.5.11 python -W ignore -m sglang_cp_symm demo --cp-size 3 --cases 24 2>/dev/null
