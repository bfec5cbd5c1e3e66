#!/usr/bin/env bash
# Download (no dependencies) every published sglang wheel from 0.5.1 to the last release in the register,
# post releases included, into .cache/wheels, for the source-level release sweep, patches/ and the release
# environments (ci/envs.sh installs from here). About 370 MB; already present wheels are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/lib.sh
mkdir -p .cache/wheels
# The interpreter that runs ci/envs.sh (no .venv needed: envs.sh runs this while it builds .venv); the release
# logic is the package's own, imported from the source tree (pure Python, no dependency).
py=${PYTHON:-python3}
export PYTHONPATH=$(pwd)${PYTHONPATH:+:$PYTHONPATH}
last=$($py -c "from sglang_cp_symm.targets import LAST_SUPPORTED as L; print(L)")
versions=$($py -m pip index versions sglang 2>/dev/null | sed -n 's/^Available versions: //p' | tr ',' '\n' | tr -d ' ' || true)
[ -n "$versions" ] || versions=$(grep -v '^#' ci/sweep-releases.txt)
wanted=$($py - "$last" $versions <<'PY'
import sys
from sglang_cp_symm.releases import Release
last, versions = Release.parse(sys.argv[1]), sys.argv[2:]
print(" ".join(v for v in versions if Release.parse("0.5.1") <= Release.parse(v) <= last))
PY
)
missing=""
for v in $wanted; do
  ls .cache/wheels/sglang-"$v"-*.whl >/dev/null 2>&1 || missing="$missing $v"
done
if [ -n "$missing" ]; then
  say "downloading $(echo $missing | wc -w) sglang wheels into .cache/wheels (of $(echo $wanted | wc -w))"
  # several at a time (each is mostly a round trip to the index); a failed one is retried once, alone
  export py
  export -f elapsed say
  fetch_one() {
    say "  sglang $1"
    $py -m pip download -q --no-deps --only-binary=:all: "sglang==$1" -d .cache/wheels 2>&1 \
      | grep -v "^WARNING: Location" || true
  }
  export -f fetch_one
  heartbeat "pip download" bash -c 'printf "%s\n" $0 | xargs -P "${CP_SYMM_FETCH_JOBS:-6}" -I{} bash -c "fetch_one {}"' \
    "$missing" || true
  for v in $missing; do
    ls .cache/wheels/sglang-"$v"-*.whl >/dev/null 2>&1 || fetch_one "$v"
  done
fi
say "wheels: $(ls .cache/wheels | wc -l) in .cache/wheels"
