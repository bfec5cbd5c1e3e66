#!/usr/bin/env bash
# On the lent device machine (Python 3.12, torch 2.11+cu130, no registry): install the wheels that
# ci/gpu-wheels.sh fetched into .whl/, then run stage C and the GPU probes and benchmarks for one release.
#   bash ci/device-stage-c.sh 0.5.11 [probes|tests|bench|overhead|paired ...]   (default: probes tests)
# (overhead: only the watchdog's cost per context kind, one configuration per process, and its profile,
#  bench/warmup_latency.py --overhead-only --profile; paired: the same configurations in turn within each process,
#  bench/warmup_latency.py --paired-only, the figures of docs/watchdog-cost.md run 2)
# Results: JSON lines and tables on stdout, copies under $OUT when it is set.
set -euo pipefail
cd "$(dirname "$0")/.."
release=$1; shift
parts=${*:-probes tests}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
out=${OUT:-/tmp/cp-symm-out}; mkdir -p "$out"
if [ ! -d /tmp/site ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/common/*.whl
fi
if [ ! -d "/tmp/r$release" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target "/tmp/r$release" ".whl/r$release"/*.whl
fi
export PYTHONPATH=/tmp/r$release:/tmp/site:$(pwd)
for part in $parts; do
  case $part in
    probes)
      for spec in "none 32768" "max 32768" "full 32768"; do
        # shellcheck disable=SC2086
        python3 tests/engine/gpu_warmup_probe.py $spec
      done | tee "$out/warmup-probe-$release.jsonl" ;;
    tests) CP_SYMM_PROBE_LOG=$out/warmup-probe-8192-$release.jsonl bash ci/stage-c.sh 2>&1 \
             | tee "$out/stage-c-$release.txt" ;;
    bench) python3 bench/warmup_latency.py --repeats 2 2>"$out/warmup-latency-$release.jsonl" \
             | tee "$out/warmup-latency-$release.txt" ;;
    overhead) python3 bench/warmup_latency.py --overhead-only --profile --repeats ${CP_SYMM_REPEATS:-5} \
             2>"$out/watchdog-cost-$release.jsonl" | tee "$out/watchdog-cost-$release.txt" ;;
    paired) python3 bench/warmup_latency.py --paired-only ${CP_SYMM_PROFILE:+--profile} --repeats ${CP_SYMM_REPEATS:-3} \
             2>"$out/watchdog-paired-$release.jsonl" | tee "$out/watchdog-paired-$release.txt" ;;
    *) echo "unknown part $part (probes, tests, bench, overhead, paired)" >&2; exit 2 ;;
  esac
done
