#!/usr/bin/env bash
# Download (no dependencies) every published sglang wheel from 0.5.1 to the last release in the register,
# post releases included, into .cache/wheels, for the source-level release sweep and patches/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .cache/wheels
last=$(.venv/bin/python -c "from sglang_cp_symm.targets import LAST_SUPPORTED as L; print(L)")
versions=$(.venv/bin/pip index versions sglang 2>/dev/null | sed -n 's/^Available versions: //p' | tr ',' '\n' | tr -d ' ' || true)
[ -n "$versions" ] || versions=$(grep -v '^#' ci/sweep-releases.txt)
for v in $versions; do
  keep=$(.venv/bin/python - "$v" "$last" <<'PY'
import sys
from sglang_cp_symm.releases import Release
v, last = Release.parse(sys.argv[1]), Release.parse(sys.argv[2])
print("yes" if Release.parse("0.5.1") <= v <= last else "no")
PY
)
  [ "$keep" = yes ] || continue
  ls .cache/wheels/sglang-"$v"-*.whl >/dev/null 2>&1 && continue
  .venv/bin/pip download -q --no-deps --only-binary=:all: "sglang==$v" -d .cache/wheels 2>&1 | grep -v "^WARNING: Location" || true
done
echo "wheels: $(ls .cache/wheels | wc -l) in .cache/wheels"
