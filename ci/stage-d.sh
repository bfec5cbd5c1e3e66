#!/usr/bin/env bash
# Stage D: NCCL's symmetric kernel on sglang's real CP all-gathers across real ranks, one table per
# release, N, CP size and NCCL (docs/stage-d.md). On a host with GPUs it starts, per release and NCCL,
#   torchrun --standalone --nproc-per-node N -m bench.stage_d worker ...
# with NCCL's own log (NCCL_DEBUG=INFO, NCCL_DEBUG_SUBSYS=INIT,TUNING) and the profiler for the kernel
# columns, prints the table, and, where that NCCL has it (>= 2.29.7), repeats the correctness sweep under
# NCCL_CHECK_MODE=DEBUG_GLOBAL. Exits 0 when every table is complete, bit-identical and hang-free.
#
#   bash ci/stage-d.sh                                  every GPU, sglang 0.5.11, torch's NCCL
#   bash ci/stage-d.sh --release 0.5.11,0.5.18,0.5.23 --nccl torch,/tmp/nccl-2.30.7/nvidia/nccl/lib/libnccl.so.2
#   bash ci/stage-d.sh --cpu --nproc 2 --quick          the CPU dry run (gloo; kernel columns n/a)
#   bash ci/stage-d.sh --cpu --launcher spawn --nproc 2,4,8 --quick   the same for N = 2, 4, 8, forked after one
#                                                       import of sglang instead of one per rank (CI)
# Options: --release R[,R..]  --nccl torch|PATH[,..]  --nproc N  --cp-sizes 2,4,8  --out DIR  --quick  --cpu
#          --launcher torchrun|spawn  --no-check-mode  and, after --, anything for the harness
#          (python -m bench.stage_d worker --help).
# Environments: on the device machine /tmp/r<release> + /tmp/site (ci/device-stage-d.sh install); here
# .envs/sglang-<release> (ci/envs.sh). An NCCL given by path is both SGLANG_NCCL_SO_PATH (sglang's pynccl)
# and LD_PRELOAD: sglang's allocator links -lnccl, and its ncclMemAlloc/ncclCommWindowRegister must come
# from the same library as the communicator they register with.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1

releases=0.5.11 ncclspec=torch nproc="" cpsizes="" out="${OUT:-/tmp}/stage-d" quick="" cpu="" checkmode=1 launcher=torchrun
while [ $# -gt 0 ]; do
  case $1 in
    --release) releases=$2; shift 2 ;;
    --nccl) ncclspec=$2; shift 2 ;;
    --nproc) nproc=$2; shift 2 ;;
    --cp-sizes) cpsizes=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --quick) quick=--quick; shift ;;
    --cpu) cpu=--cpu; shift ;;
    --no-check-mode) checkmode=""; shift ;;
    --launcher) launcher=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "stage D: unknown option ${1:0:40}; see bash ci/stage-d.sh --help" >&2; exit 2 ;;
  esac
done
gpus=0
if [ -z "$cpu" ] && command -v nvidia-smi >/dev/null 2>&1; then gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true); fi
if [ "$gpus" = 0 ] && [ -z "$cpu" ]; then
  echo "stage D: no GPU visible; for the CPU dry run: bash ci/stage-d.sh --cpu --nproc 2 --quick" >&2; exit 2
fi
nproc=${nproc:-$([ -n "$cpu" ] && echo 2 || echo "$gpus")}
if [ "$launcher" = spawn ]; then
  [ -n "$cpu" ] || { echo "stage D: --launcher spawn is for the CPU dry run (--cpu); GPUs run under torchrun" >&2; exit 2; }
  for release in ${releases//,/ }; do
    [ -d ".envs/sglang-$release/sglang" ] || { echo "stage D: no environment for sglang $release (ci/envs.sh)" >&2; exit 2; }
    echo "stage D: sglang $release, CPU, N = $nproc forked after one import -> $out/sglang-$release/cpu"
    # shellcheck disable=SC2086
    ci/with-release.sh "$release" python -m bench.stage_d spawn --nproc "$nproc" --out "$out/sglang-$release/cpu" \
      $quick "$@" || exit 1
  done
  exit 0
fi
[ "$launcher" = torchrun ] || { echo "stage D: --launcher ${launcher:0:20}: torchrun or spawn" >&2; exit 2; }
if [ -z "$cpsizes" ]; then  # every power of two from 2 up to N that divides N: one launch measures CP 2, 4, 8
  for c in 2 4 8 16; do [ "$c" -le "$nproc" ] && [ $((nproc % c)) = 0 ] && cpsizes=${cpsizes:+$cpsizes,}$c; done
  cpsizes=${cpsizes:-$nproc}
fi
if [ -z "$cpu" ] && [ "$nproc" -gt "$gpus" ]; then
  # NCCL refuses two ranks on one GPU ("Duplicate GPU detected", 2.28; lifted by this switch from 2.30.3)
  export NCCL_MULTI_RANK_GPU_ENABLE=1
  echo "stage D: $nproc ranks on $gpus GPU(s): NCCL_MULTI_RANK_GPU_ENABLE=1 (NCCL >= 2.30.3; older NCCL refuses)"
fi

status=0
IFS=, read -ra release_list <<< "$releases"
IFS=, read -ra nccl_list <<< "$ncclspec"
for release in "${release_list[@]}"; do
  if [ -n "$cpu" ] || [ ! -d "/tmp/r$release" ]; then
    if [ ! -d ".envs/sglang-$release/sglang" ]; then
      echo "stage D: no environment for sglang $release (device: bash ci/device-stage-d.sh install $release with" \
           "wheels from ci/gpu-wheels.sh $release; here: ci/envs.sh)" >&2
      status=2; continue
    fi
    run=(ci/with-release.sh "$release" python)
  else
    export PYTHONPATH=/tmp/r$release:/tmp/site:$root
    run=(python3)
  fi
  for nccl in "${nccl_list[@]}"; do
    if [ "$nccl" = torch ]; then
      unset SGLANG_NCCL_SO_PATH LD_PRELOAD
      kind=torch
    elif [ -f "$nccl" ]; then
      export SGLANG_NCCL_SO_PATH=$nccl LD_PRELOAD=$nccl
      kind=so
    else
      echo "stage D: --nccl ${nccl:0:80}: neither 'torch' nor a file" >&2; status=2; continue
    fi
    code=$("${run[@]}" -m bench.stage_d nccl-version 2>/dev/null || echo 0)
    label=$kind-$((code / 10000)).$((code % 10000 / 100)).$((code % 100))
    [ "$code" = 0 ] && label=$kind-none
    [ -n "$cpu" ] && label=cpu
    dir=$out/sglang-$release/$label/n$nproc
    rm -rf "$dir"; mkdir -p "$dir"
    env_nccl=()
    if [ -z "$cpu" ]; then
      env_nccl=(env NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT,TUNING "NCCL_DEBUG_FILE=$dir/nccl.%h.%p")
    fi
    echo "stage D: sglang $release, NCCL $label, $nproc rank(s), CP sizes $cpsizes -> $dir"
    started=$(date +%s)
    # shellcheck disable=SC2086
    timeout "${STAGE_D_TIMEOUT:-3000}" "${env_nccl[@]}" "${run[@]}" -m torch.distributed.run --standalone \
      --nproc-per-node "$nproc" -m bench.stage_d worker --out "$dir" --cp-sizes "$cpsizes" $quick $cpu "$@" \
      > "$dir/torchrun.log" 2>&1 || echo "stage D: torchrun exited $? (ranks' output: $dir/torchrun.log)"
    "${run[@]}" -m bench.stage_d table "$dir" --check || status=1
    echo "stage D: $(( $(date +%s) - started )) s"
    if [ -z "$cpu" ] && [ -n "$checkmode" ]; then
      if [ "$code" -ge 22907 ]; then  # NCCL_CHECK_MODE exists from 2.29.7 (src/init.cc:1961 at v2.29.7-1)
        dbg=$dir-debug-global; rm -rf "$dbg"; mkdir -p "$dbg"
        echo "stage D: correctness again under NCCL_CHECK_MODE=DEBUG_GLOBAL -> $dbg"
        # shellcheck disable=SC2086
        timeout "${STAGE_D_TIMEOUT:-3000}" env NCCL_CHECK_MODE=DEBUG_GLOBAL "${run[@]}" -m torch.distributed.run \
          --standalone --nproc-per-node "$nproc" -m bench.stage_d worker --out "$dbg" --cp-sizes "$cpsizes" \
          --sizes "" $quick "$@" > "$dbg/torchrun.log" 2>&1 || echo "stage D: torchrun exited $?"
        "${run[@]}" -m bench.stage_d table "$dbg" --check || status=1
      else
        echo "stage D: NCCL_CHECK_MODE=DEBUG_GLOBAL n/a (NCCL code $code < 22907, the option is new in 2.29.7)"
      fi
    fi
  done
done
exit $status
