#!/usr/bin/env bash
# Fetch, for the GPU stage on the lent device machine (Python 3.12, no registry), the wheels that make
# sglang's real allocator, parallel_state and cp_utils importable there next to the image's torch:
# the sglang release(s) (default 0.5.11), their pinned transformers/tokenizers, and the modules those
# imports reach that the image lacks (found by importing them here and subtracting the image's package
# list, /work/.library/device/KINDS.md). One folder per release: .whl/common and .whl/r<release>.
# The device command then runs: pip install --no-index --no-deps --target /tmp/site .whl/common/*.whl
# and, per release, --target /tmp/r<release> .whl/r<release>/*.whl.
set -euo pipefail
cd "$(dirname "$0")/.."
releases=${*:-0.5.11}
get() {  # folder, then requirements
  local dest=$1; shift
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d "$dest" "$@" 2>&1 \
    | grep -v "^WARNING: Location" || true
}
mkdir -p .whl/common
get .whl/common dill==0.4.1 ipython==9.18.1 traitlets==5.16.1 openai==3.57.0 orjson==3.13.0 \
  partial-json-parser==0.2.1.1.post7 pybase64==1.5.1 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 \
  typing-inspection==0.4.5 pyzmq==27.3.0 starlette==1.10.0 sniffio==1.3.1 httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5 \
  transformers==5.6.0 tokenizers==0.22.2 ipython-pygments-lexers decorator
for release in $releases; do
  mkdir -p ".whl/r$release"
  get ".whl/r$release" "sglang==$release"
done
du -sh .whl/* | sed 's/^/  /'
