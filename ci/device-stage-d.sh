#!/usr/bin/env bash
# On the lent device machine (Python 3.12, torch 2.11+cu130 with NCCL 2.28.9, no registry): the one-GPU
# dry runs of stage D, and NCCL 2.30.7 carried in parts. Parts, run in the order given:
#   install [RELEASE]  install the wheels ci/gpu-wheels.sh put in .whl/ (common + r<release>; default 0.5.11)
#   nccl               store the NCCL parts this call carried (.whl/nccl-<v>/p<i>); when all are there, join,
#                      check (sha256 of the wheel's RECORD) and install /tmp/nccl-<v>/nvidia/nccl/lib/libnccl.so.2,
#                      then verify ncclGetVersion via ctypes, sglang's pynccl loader (SGLANG_NCCL_SO_PATH) and
#                      torch.cuda.nccl.version() (LD_PRELOAD). Missing parts: one line saying which, status 0.
#   n1                 bash ci/stage-d.sh --nproc 1 with torch's NCCL; NCCL log and summary into $OUT
#   n2                 the same with 2 ranks on the one GPU: NCCL 2.28.9 is expected to refuse ("Duplicate GPU
#                      detected"); the refusal is the result (its log comes back)
#   n1-carried, n2-carried   the same two with the carried NCCL (n2: NCCL_MULTI_RANK_GPU_ENABLE=1, 2.30.3+;
#                      n2 also repeats its sweep under NCCL_CHECK_MODE=DEBUG_GLOBAL, 2.29.7+)
#   bash ci/device-stage-d.sh install nccl n1 n2      (docs/stage-d.md: the sequence of device calls)
# Results: tables on stdout; $OUT/<run>-r<rank>.log (NCCL's log per rank) and $OUT/<run>.json.
set -uo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
out=${OUT:-/tmp/cp-symm-out}; mkdir -p "$out"
release=0.5.11
nccl_dir=$(ls -d .whl/nccl-* 2>/dev/null | head -1)
nccl_version=${nccl_dir#.whl/nccl-}
carried=/tmp/nccl-${nccl_version:-none}/nvidia/nccl/lib/libnccl.so.2
# A one-GPU dry run proves the paths, it measures nothing: a short sweep and few timed calls.
harness=(--quick -- --iters 20 --warmup 3 --profile-calls 5 --deadline 180 --keep-traces)
status=0
site() { export PYTHONPATH=/tmp/r$release:/tmp/site:$(pwd); }
run_stage_d() {  # name, then ci/stage-d.sh options
  local name=$1; shift
  local dir=/tmp/stage-d-device/$name
  rm -rf "$dir"
  bash ci/stage-d.sh --release "$release" --out "$dir" "$@" "${harness[@]}" || status=1
  local run; run=$(ls -d "$dir"/sglang-*/*/n* 2>/dev/null | grep -v debug-global | head -1)
  if [ -n "$run" ]; then
    python3 -m bench.stage_d collect "$run" "$out" "$name"
    grep -h "NCCL WARN" "$run"/nccl.* 2>/dev/null | head -3
    [ -f "$run/torchrun.log" ] && tail -5 "$run/torchrun.log"
  fi
}
while [ $# -gt 0 ]; do
  part=$1; shift
  case $part in
    install)
      if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then release=$1; shift; fi
      [ -d /tmp/site ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/common/*.whl
      [ -d "/tmp/r$release" ] || python3 -m pip install -q --no-index --no-deps --no-compile --target "/tmp/r$release" \
        ".whl/r$release"/*.whl
      echo "device stage D: sglang $release in /tmp/r$release, common wheels in /tmp/site" ;;
    nccl)
      if [ -z "$nccl_dir" ]; then echo "device stage D: no .whl/nccl-* carried in this call" >&2; status=2; continue; fi
      python3 -m bench.stage_d.nccl_carry add --carried "$nccl_dir"
      code=$?
      if [ $code = 0 ]; then
        site
        python3 -m bench.stage_d.nccl_carry verify --carried "$nccl_dir" --with-sglang || status=1
      elif [ $code != 3 ]; then status=1; fi ;;
    n1) site; run_stage_d "n1-torch" --nproc 1 ;;
    n2) site; run_stage_d "n2-torch" --nproc 2 ;;
    n1-carried|n2-carried)
      if [ ! -f "$carried" ]; then echo "device stage D: $carried is not installed yet (part 'nccl')" >&2; status=2; continue; fi
      site; n=${part:1:1}
      # NCCL_CHECK_MODE=DEBUG_GLOBAL compares registrations across ranks: worth its minute with two ranks only
      extra=(); [ "$n" = 1 ] && extra=(--no-check-mode)
      run_stage_d "n$n-$nccl_version" --nproc "$n" --nccl "$carried" "${extra[@]}" ;;
    *) echo "device stage D: unknown part ${part:0:30} (install, nccl, n1, n2, n1-carried, n2-carried)" >&2; exit 2 ;;
  esac
done
exit $status
