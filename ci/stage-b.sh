#!/usr/bin/env bash
# Stage B (CPU, minutes): real sglang releases (ci/releases.txt, set "ci"; --all-releases: every one) in fresh
# processes, the multi-process all-gather proof on gloo, patches/ and the sweep over every published wheel, the
# doctor, the warm-up, the README's checked blocks.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/lib.sh
set_name=ci
if [ "${1:-}" = "--all-releases" ]; then set_name=all; shift; fi
if [ "$set_name" = all ]; then bash ci/envs.sh --all-releases; else bash ci/envs.sh; fi
export CP_SYMM_RELEASES=$set_name
heartbeat "stage B" .venv/bin/python -m pytest -p no:cacheprovider -v -rfEs -m release tests "$@"
