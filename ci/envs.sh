#!/usr/bin/env bash
# Build the lean test environments, idempotently:
#   .venv/            torch 2.13 (CPU) + the modules sglang imports + this package (installed, not editable, so its
#                     entry point and .pth bootstrap are real)
#   .envs/pins/SPEC/  one pinned requirement of ci/releases.txt (transformers==5.8.1, ...), installed once, shared
#   .envs/sglang-X/   one real sglang release X (its wheel, no dependencies) plus links to its pins; used through
#                     PYTHONPATH on top of .venv (ci/with-release.sh, tests/conftest.py)
#   bash ci/envs.sh                  .venv and the releases of set "ci" (ci/releases.txt)
#   bash ci/envs.sh --all-releases   .venv and every release 0.5.6-0.5.23
#   bash ci/envs.sh 0.5.17 0.5.20    .venv and these releases
#   bash ci/envs.sh --venv-only      .venv alone (stage A)
# The sglang wheels come from .cache/wheels (ci/fetch-wheels.sh, run here alongside), else from the index.
# torchvision has no CPU build for torch 2.13: 0.5.10-0.5.20 import `decode_jpeg` from it at module level
# (only image inputs call it), so tests/stubs/torchvision stands in for it; 0.5.21+ import it lazily.
# Remove everything this sets up with: rm -rf .venv .envs .cache
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/lib.sh
root=$(pwd)
export PIP_DISABLE_PIP_VERSION_CHECK=1
py=${PYTHON:-python3}
quiet_pip() { grep -v "^WARNING: Location\|^WARNING: Target directory" || true; }

case "${1:-}" in
  --venv-only) releases="" ;;
  --all-releases) releases=$(release_set all) ;;
  "") releases=$(release_set ci) ;;
  *) releases="$*" ;;
esac

# Three things run at once, as each needs only what is already there (on a fresh clone they are mostly downloads):
# the sglang wheels (fetched by ci/fetch-wheels.sh, several at a time; the sweep, patches/ and the release
# environments install from them; lines marked "wheels:"), the release pins (--target installs that need only
# .venv's pip; lines marked "pins:"), and .venv's own packages. The release environments follow, several at a time.
mkdir -p .cache
jobs=${CP_SYMM_BUILD_JOBS:-4}

pins_of() {  # the pins of one release, from ci/releases.txt
  grep -v '^#' ci/releases.txt | sed 's/#.*//' | awk -v r="$1" '$1 == r { $1 = ""; $2 = ""; print }' | xargs
}

install_pin() {  # one pin of ci/releases.txt into .envs/pins/SPEC (shared by every release that names it)
  local spec=$1
  [ -f ".envs/pins/$spec/.done" ] && return 0
  say "installing $spec into .envs/pins/$spec"
  rm -rf ".envs/pins/$spec"
  .venv/bin/pip install -q --no-deps --no-compile --target ".envs/pins/$spec" "$spec" 2>&1 | quiet_pip
  [ -n "$(ls ".envs/pins/$spec")" ] || { echo "could not install $spec into .envs/pins/$spec" >&2; return 1; }
  touch ".envs/pins/$spec/.done"
}

copy_stubs() {  # dir, pins: the CPU stand-ins a release names (stub:NAME), refreshed on every run
  local spec
  for spec in $2; do
    case $spec in
      stub:*) rm -rf "$1/${spec#stub:}"; cp -r "tests/stubs/optional/${spec#stub:}" "$1/" ;;
    esac
  done
}

build_release() {  # one release into .envs/sglang-X; its pins are installed already (install_pin)
  local release=$1 dir=.envs/sglang-$1 pins spec wheel entry
  pins=$(pins_of "$release")
  [ -n "$pins" ] || { echo "sglang $release is not in ci/releases.txt" >&2; return 2; }
  if [ -f "$dir/.done" ]; then
    copy_stubs "$dir" "$pins"
    # An environment built before the .pins record (all pins inside it) is taken as built with today's pins.
    [ -f "$dir/.pins" ] || echo "$pins" > "$dir/.pins"
    [ "$(cat "$dir/.pins")" = "$pins" ] && return 0
    say "sglang $release: pins changed, rebuilding $dir"
  fi
  wheel=$(ls .cache/wheels/sglang-"$release"-*.whl 2>/dev/null | head -1 || true)
  say "sglang $release: installing ${wheel:-sglang==$release from the index} into $dir, with $pins"
  rm -rf "$dir"
  .venv/bin/pip install -q --no-deps --no-compile --target "$dir" "${wheel:-sglang==$release}" 2>&1 | quiet_pip
  [ -d "$dir/sglang" ] || { echo "could not install sglang $release into $dir" >&2; return 1; }
  copy_stubs "$dir" "$pins"
  for spec in $pins; do
    case $spec in stub:*) continue ;; esac
    [ -f ".envs/pins/$spec/.done" ] || { echo "sglang $release: pin $spec is not installed" >&2; return 1; }
    for entry in ".envs/pins/$spec"/*; do
      case $(basename "$entry") in bin) continue ;; esac
      ln -sfn "../pins/$spec/$(basename "$entry")" "$dir/$(basename "$entry")"
    done
  done
  echo "$pins" > "$dir/.pins"
  say "sglang $release: ready in $dir"
  touch "$dir/.done"
}

# parallel FUNCTION ARGS...: FUNCTION on each argument, $jobs at a time (xargs); fails if any one fails.
parallel() {
  local fn=$1; shift
  [ $# -gt 0 ] || return 0
  printf '%s\n' "$@" | xargs -P "$jobs" -I{} bash -c "set -euo pipefail; $fn \"\$1\"" _ {}
}
export -f elapsed say quiet_pip pins_of install_pin copy_stubs build_release

fetch_pid=""
if [ -n "$releases" ]; then
  (bash ci/fetch-wheels.sh 2>&1 | sed -u 's/^/  wheels: /') &
  fetch_pid=$!
fi
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$py" -m venv .venv
fi
mkdir -p .envs/pins
pins_pid=""
pins=$(for release in $releases; do pins_of "$release"; done | tr ' ' '\n' | grep -v '^stub:' | grep . | sort -u || true)
if [ -n "$pins" ]; then
  (parallel install_pin $pins 2>&1 | sed -u 's/^/  pins: /') &
  pins_pid=$!
fi
# --no-compile: of .venv's ~10,700 modules the tests import a few thousand; Python writes their bytecode at first
# import, instead of pip compiling all of them (~23 s of CPU, measured on the development machine).
stamp=.venv/.base-$(sha256sum ci/base-requirements.txt | cut -c1-12)
if [ ! -f "$stamp" ]; then
  say "installing torch 2.13 (CPU) and the modules sglang imports into .venv (ci/base-requirements.txt; pip prints each package)"
  heartbeat "pip install -r ci/base-requirements.txt" \
    .venv/bin/pip install --progress-bar off --no-compile -c <(echo torch==2.13.0) -r ci/base-requirements.txt 2>&1 \
    | grep --line-buffered "^Collecting\|^Downloading\|^Installing\|^Successfully\|ERROR" || true
  .venv/bin/pip install -q --no-deps compressed-tensors==0.20.0 2>&1 | quiet_pip
  .venv/bin/python -c "import torch, wrapt; assert torch.__version__.startswith('2.13.0'), torch.__version__"
  touch "$stamp"
fi
say "installing this package into .venv"
.venv/bin/pip install -q --no-deps --no-build-isolation --force-reinstall . 2>&1 | quiet_pip
# A libnccl stand-in that answers ncclGetVersion (tests/stubs/libnccl_stub.c says why).
if [ ! -f .envs/libnccl-stub.so ] || [ tests/stubs/libnccl_stub.c -nt .envs/libnccl-stub.so ]; then
  gcc -shared -fPIC -O2 -o .envs/libnccl-stub.so tests/stubs/libnccl_stub.c
fi

if [ -n "$pins_pid" ]; then
  heartbeat "installing the pins" wait "$pins_pid" || { say "installing the release pins failed (lines marked pins: above)"; exit 1; }
fi
if [ -n "$fetch_pid" ]; then
  heartbeat "fetching the sglang wheels" wait "$fetch_pid" \
    || say "fetching the sglang wheels failed: the releases install from the index"
fi
heartbeat "building the release environments" parallel build_release $releases \
  || { say "building a release environment failed (see above)"; exit 1; }
say "environments ready: $root/.venv$([ -z "$releases" ] || echo " and") $(for r in $releases; do printf '.envs/sglang-%s ' "$r"; done)"
