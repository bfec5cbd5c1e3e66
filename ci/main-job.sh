#!/usr/bin/env bash
# The main job: build the environments, then show the plugin at work on real sglang releases on this
# machine: what it does per release, the real CP all-gathers across processes with it off and on, the
# send staging, and what the doctor says for torch 2.11's NCCL and for a safe one.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/envs.sh
for release in 0.5.10 0.5.11 0.5.12; do
  echo; echo "=== sglang $release: status with SGLANG_CP_SYMM=1 (targets imported and patched in this process)"
  SGLANG_CP_SYMM=1 ci/with-release.sh "$release" python -W ignore -m sglang_cp_symm status --apply 2>/dev/null
done
echo; echo "=== sglang 0.5.11: real CP all-gathers, 3 processes, plugin off (unpatched) vs on (patched)"
ci/with-release.sh 0.5.11 python -W ignore -m sglang_cp_symm demo --cp-size 3 --cases 24 2>/dev/null
echo; echo "=== sglang 0.5.10: the same with send staging, policy as for NCCL 2.27.7 (where it engages the kernel)"
ci/with-release.sh 0.5.10 python -W ignore -m sglang_cp_symm demo --cp-size 4 --cases 12 --send --as-nccl 2.27.7 2>/dev/null
for nccl in 2.28.9 2.30.7; do
  echo; echo "=== sglang 0.5.11: doctor, judged for NCCL $nccl"
  SGLANG_CP_SYMM=1 ci/with-release.sh 0.5.11 python -W ignore -m sglang_cp_symm doctor --nccl "$nccl" 2>/dev/null
done
