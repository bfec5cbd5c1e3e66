#!/usr/bin/env bash
# Fetch, for the GPU stages on the lent device machine (Python 3.12, no registry), the wheels that make
# sglang's real allocator, parallel_state and cp_utils importable there next to the image's torch:
# the sglang release(s) (default 0.5.11), their pinned transformers/tokenizers, and the modules those
# imports reach that the image lacks (found by importing them here and subtracting the image's package
# list, /work/.library/device/KINDS.md). One folder per release: .whl/common and .whl/r<release>.
# The device command then runs: pip install --no-index --no-deps --target /tmp/site .whl/common/*.whl
# and, per release, --target /tmp/r<release> .whl/r<release>/*.whl.
#
#   bash ci/gpu-wheels.sh [RELEASE ...]                 sglang wheels (default 0.5.11)
#   bash ci/gpu-wheels.sh --nccl 2.30.7 [RELEASE ...]   also NCCL 2.30.7, split for carrying (stage D):
#     nvidia-nccl-cu13==2.30.7 from pip, its libnccl.so.2 checked against the wheel's RECORD, xz, cut into
#     parts that fit a device call (64 MiB with the working tree; the first part shares its call with the
#     sglang wheels) under .whl/nccl-2.30.7/p<i>/, with .whl/nccl-2.30.7/MANIFEST.json. On the device:
#     bash ci/device-stage-d.sh nccl (docs/stage-d.md gives the sequence of calls).
#     NCCL_WHEEL=/path/to.whl uses a wheel already at hand instead of downloading it; the xz (minutes of CPU)
#     is kept in .cache/nccl-carry/<version> (NCCL_CARRY_WORK=DIR elsewhere) for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
nccl=""
if [ "${1:-}" = "--nccl" ]; then nccl=${2:?--nccl needs a version, e.g. 2.30.7}; shift 2; fi
releases=${*:-0.5.11}
get() {  # folder, then requirements
  local dest=$1; shift
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_18_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d "$dest" "$@" 2>&1 | grep -v "^WARNING: Location" || true
}
mkdir -p .whl/common
get .whl/common dill==0.4.1 ipython==9.18.1 traitlets==5.16.1 openai==3.57.0 orjson==3.13.0 \
  partial-json-parser==0.2.1.1.post7 pybase64==1.5.1 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 \
  typing-inspection==0.4.5 pyzmq==27.3.0 starlette==1.10.0 sniffio==1.3.1 httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5 \
  transformers==5.6.0 tokenizers==0.22.2 ipython-pygments-lexers decorator
first_release=""
for release in $releases; do
  mkdir -p ".whl/r$release"
  get ".whl/r$release" "sglang==$release"
  first_release=${first_release:-$release}
done
du -sh .whl/common .whl/r* | sed 's/^/  /'
if [ -n "$nccl" ]; then
  wheel=${NCCL_WHEEL:-}
  if [ -z "$wheel" ]; then
    mkdir -p .cache/nccl-wheels
    get .cache/nccl-wheels "nvidia-nccl-cu13==$nccl"
    wheel=$(ls .cache/nccl-wheels/nvidia_nccl_cu13-"$nccl"-*.whl | head -1)
  fi
  # what else travels in a call: the working tree (tracked and untracked files git does not ignore)
  tree=$(git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
  first=$(du -cb .whl/common ".whl/r$first_release" | tail -1 | cut -f1)
  python3 -m bench.stage_d.nccl_carry prepare --wheel "$wheel" --version "$nccl" --dest ".whl/nccl-$nccl" \
    --tree-bytes "$tree" --first-call-bytes "$first" ${NCCL_CARRY_WORK:+--work "$NCCL_CARRY_WORK"}
fi
