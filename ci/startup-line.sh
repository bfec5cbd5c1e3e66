#!/usr/bin/env bash
# The line the plugin logs in each sglang process at start-up, for one release, on this machine (no GPU):
#   ci/startup-line.sh 0.5.11          (SGLANG_CP_SYMM_SEND=1 ... in front to see another setting)
#   ci/startup-line.sh 0.5.11 2.30.7   as if that NCCL were loaded instead of the release's pin
# The plugin is turned on as sglang's loader does (engine.plugin.activate), every module of the register is
# imported as a scheduler does, and the NCCL read is the one the release's torch pins (sglang_cp_symm/pins.py),
# answered by the stub libnccl (tests/stubs/libnccl_stub.c) since this machine has none.
set -euo pipefail
cd "$(dirname "$0")/.."
release=$1
nccl=${2:-}
code=$(.venv/bin/python -c "from sglang_cp_symm.pins import pin_for; from sglang_cp_symm.releases import Release as R
n = ('$nccl' or pin_for(R.parse('$release')).nccl).split('.'); print(int(n[0]) * 10000 + int(n[1]) * 100 + int(n[2]))")
SGLANG_CP_SYMM=${SGLANG_CP_SYMM:-1} SGLANG_NCCL_SO_PATH=$(pwd)/.envs/libnccl-stub.so NCCL_STUB_VERSION=$code \
  ci/with-release.sh "$release" python -W ignore -c '
from sglang_cp_symm.engine import activation
from sglang_cp_symm.engine.plugin import activate
from sglang_cp_symm.engine.report import status_line
from sglang_cp_symm.tools.cli import import_register_modules
activate()
import_register_modules()
print(status_line(activation.plugin()))
' 2>/dev/null
