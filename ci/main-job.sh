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
echo; echo "=== sglang 0.5.11: the warm-up the plugin sends for a real command line (Qwen3-30B-A3B, TP 4, attention CP 2, DP attention 2),"
echo "=== parsed by sglang's own prepare_server_args and run by its own named warm-up runner (tokenizer manager recorded)"
SGLANG_CP_SYMM=1 ci/with-release.sh 0.5.11 python -W ignore -m sglang_cp_symm demo-warmup -- \
  --model-path tests/models/qwen3-30b-a3b --device cpu --skip-tokenizer-init --tp 4 --dp 2 --enable-dp-attention \
  --attn-cp-size 2 --enable-prefill-context-parallel --enable-symm-mem --chunked-prefill-size 8192 2>&1 \
  | grep -v "AMX\|generation config\|prealloc size"
echo; echo "=== sglang 0.5.12: the same warm-up and the pool it needs, sized by the doctor without sglang or a GPU"
SGLANG_CP_SYMM=1 ci/with-release.sh 0.5.12 python -W ignore -m sglang_cp_symm doctor --nccl 2.30.7 \
  --model tests/models/qwen3-30b-a3b --tp 4 --dp 2 --enable-dp-attention --cp-size 2 --chunked-prefill-size 8192 2>/dev/null
