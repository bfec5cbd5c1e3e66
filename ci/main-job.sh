#!/usr/bin/env bash
# The main job: build the environments, then show the plugin at work on real sglang releases on this machine
# (no GPU): what it does on each release of the CI set, the proof on each (the real CP all-gathers across
# processes, plugin off and on), what the doctor says for torch 2.11's NCCL and for a safe one, and the warm-up.
#   bash ci/main-job.sh                  the releases of set "ci" (ci/releases.txt)
#   bash ci/main-job.sh --all-releases   every release 0.5.6-0.5.23
# stderr is shown; the only lines left out are sglang's own CPU-machine notices named in the filter below.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/lib.sh
set_name=ci
if [ "${1:-}" = "--all-releases" ]; then set_name=all; fi
if [ "$set_name" = all ]; then bash ci/envs.sh --all-releases; else bash ci/envs.sh; fi
releases=$(release_set "$set_name")
# sglang notices that only say this machine has no GPU, no generation config or no AMX (nothing of the plugin's)
noise="AMX\|generation config\|prealloc size\|No platform detected\|Failed to import from custom_ar"
with_pinned_nccl() {  # release, command...: run with the stub libnccl answering as the NCCL the release's torch pins
  local release=$1; shift
  local code
  code=$(.venv/bin/python -c "from sglang_cp_symm.pins import pin_for; from sglang_cp_symm.releases import Release as R
n = pin_for(R.parse('$release')).nccl.split('.'); print(int(n[0]) * 10000 + int(n[1]) * 100 + int(n[2]))")
  SGLANG_NCCL_SO_PATH=$(pwd)/.envs/libnccl-stub.so NCCL_STUB_VERSION=$code ci/with-release.sh "$release" "$@"
}
echo
echo "=== What the plugin does on each release: status --apply with SGLANG_CP_SYMM=1, in one process that imports"
echo "=== every module of the register. This machine has no NCCL: a stub libnccl answers as the NCCL each release's"
echo "=== torch pins (sglang_cp_symm/pins.py), which the engine reads exactly as it would a real one."
for release in $releases; do
  echo; say "sglang $release"
  SGLANG_CP_SYMM=1 with_pinned_nccl "$release" python -W ignore -m sglang_cp_symm status --apply 2>&1 | grep -v "$noise" || true
done
echo
echo "=== The proof on each release: sglang-cp-symm demo runs the release's own CP all-gathers on 4 CPU processes"
echo "=== (gloo), every target and branch, plugin off, on, on with send staging, and (--every) the opt-ins."
for release in $releases; do
  echo; say "sglang $release"
  ci/with-release.sh "$release" python -W ignore -m sglang_cp_symm demo --every 2>&1 | grep -v "$noise" || true
done
for nccl in 2.28.9 2.30.7; do
  echo; say "sglang 0.5.11: doctor for a server with --enable-symm-mem and attention CP 2 over TP 8 on one node, judged"
  echo "=== for NCCL $nccl (the plan the engine would execute, the race exposure, the topology)"
  SGLANG_CP_SYMM=1 ci/with-release.sh 0.5.11 python -W ignore -m sglang_cp_symm doctor --nccl "$nccl" \
    --enable-symm-mem --tp 8 --attn-cp-size 2 2>&1 | grep -v "$noise" || true
done
echo; say "sglang 0.5.11: the warm-up the plugin sends for a real command line (Qwen3-30B-A3B, TP 4, attention CP 2, DP attention 2),"
echo "=== parsed by sglang's own prepare_server_args and run by its own named warm-up runner (tokenizer manager recorded)"
with_pinned_nccl 0.5.11 python -W ignore -m sglang_cp_symm demo-warmup -- \
  --model-path tests/models/qwen3-30b-a3b --device cpu --skip-tokenizer-init --tp 4 --dp 2 --enable-dp-attention \
  --attn-cp-size 2 --enable-prefill-context-parallel --enable-symm-mem --chunked-prefill-size 8192 2>&1 \
  | grep -v "$noise" || true
echo; say "sglang 0.5.12: the same warm-up and the pool it needs, sized by the doctor without sglang or a GPU"
SGLANG_CP_SYMM=1 ci/with-release.sh 0.5.12 python -W ignore -m sglang_cp_symm doctor --nccl 2.30.7 \
  --model tests/models/qwen3-30b-a3b --tp 4 --dp 2 --enable-dp-attention --cp-size 2 --chunked-prefill-size 8192 2>&1 \
  | grep -v "$noise" || true
echo; say "main job done"
