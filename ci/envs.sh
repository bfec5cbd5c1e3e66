#!/usr/bin/env bash
# Build the lean test environments, idempotently:
#   .venv/                 torch 2.13 (CPU) + the modules sglang imports + this package (installed, not editable,
#                          so its entry point and .pth bootstrap are real)
#   .envs/sglang-X/        one real sglang release X (wheel, no dependencies) with its pinned transformers,
#                          used through PYTHONPATH on top of .venv
# torchvision has no CPU build for torch 2.13: 0.5.10-0.5.20 import `decode_jpeg` from it at module level
# (only image inputs call it), so tests/stubs/torchvision stands in for it; 0.5.21+ import it lazily.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export PIP_DISABLE_PIP_VERSION_CHECK=1
py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
stamp=.venv/.base-$(sha256sum ci/base-requirements.txt | cut -c1-12)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install -q -c <(echo torch==2.13.0) -r ci/base-requirements.txt 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/pip install -q --no-deps compressed-tensors==0.20.0 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import torch, wrapt; assert torch.__version__.startswith('2.13.0'), torch.__version__"
  touch "$stamp"
fi
.venv/bin/pip install -q --no-deps --no-build-isolation --force-reinstall . 2>&1 | grep -v "^WARNING: Location" || true
mkdir -p .envs
# A libnccl stand-in that answers ncclGetVersion (tests/stubs/libnccl_stub.c says why).
if [ ! -f .envs/libnccl-stub.so ] || [ tests/stubs/libnccl_stub.c -nt .envs/libnccl-stub.so ]; then
  gcc -shared -fPIC -O2 -o .envs/libnccl-stub.so tests/stubs/libnccl_stub.c
fi
grep -v '^#' ci/releases.txt | while read -r release pins; do
  [ -n "$release" ] || continue
  dir=.envs/sglang-$release
  if [ ! -f "$dir/.done" ]; then
    rm -rf "$dir"
    # shellcheck disable=SC2086
    .venv/bin/pip install -q --no-deps --target "$dir" "sglang==$release" $pins 2>&1 | grep -v "^WARNING: Location" || true
    [ -d "$dir/sglang" ] || { echo "could not install sglang $release into $dir" >&2; exit 1; }
    touch "$dir/.done"
  fi
done
echo "environments ready: $root/.venv and $(ls -d .envs/sglang-* | tr '\n' ' ')"
