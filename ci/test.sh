#!/usr/bin/env bash
# The test command of README and .ci/run: build the environments, then stages A and B (tests/, no GPU).
#   bash ci/test.sh                    the releases of set "ci" (one release of each distinct digest: today every release 0.5.6-0.5.23, ci/releases.txt)
#   bash ci/test.sh --all-releases     every release 0.5.6-0.5.23
#   bash ci/test.sh [--all-releases] -- PYTEST-ARGS   e.g. -- -k proof
# Prints a line at least every 15-20 s: each setup step, pip's per-package lines, one line per test, a heartbeat.
# Ends with pytest's summary: every failure and every skip with its reason, and the slowest tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/lib.sh
# Bytecode is written: the environments are installed without it (pip --no-compile, ci/envs.sh), so each module's
# is written at its first import and read by every later interpreter. With PYTHONDONTWRITEBYTECODE set (as some
# shells and CI images do) nothing is written, and every sglang interpreter and forked check of the suite compiles
# the sglang and transformers modules it imports from source again: about 0.6 s of CPU a forked check, about 15% of
# the stage-B tests' CPU (2026-12-06, 14 stage-B modules on 0.5.11 and 0.5.21: 340 s of CPU without bytecode,
# 292 s with). Nothing a test checks depends on it; the __pycache__ folders it leaves are ignored (.gitignore).
unset PYTHONDONTWRITEBYTECODE
set_name=ci
if [ "${1:-}" = "--all-releases" ]; then set_name=all; shift; fi
if [ "${1:-}" = "--" ]; then shift; fi
say "ci/test.sh: set '$set_name' of ci/releases.txt: $(release_set "$set_name" | xargs)"
if [ "$set_name" = all ]; then bash ci/envs.sh --all-releases; else bash ci/envs.sh; fi
export CP_SYMM_RELEASES=$set_name
# The index check waits on the network, not the CPU: it runs beside pytest, and its lines are printed after it.
index_log=$(mktemp)
say "index check: releases on the index newer than this checkout knows (warnings only, never fails, <= 30 s;" \
  "runs beside pytest, its lines follow pytest's)"
( timeout 40 .venv/bin/python -m maint.index_check --timeout 30 || say "index check: did not finish (ignored)" ) \
  > "$index_log" 2>&1 &
index_pid=$!
say "pytest: stages A and B (tests/, -m 'not gpu'), one line per test"
# Three workers (--dist loadscope), sharing the tests in the units of tests/xdist_schedule.py (conftest's scheduler
# hook): every release-parametrised test of the per-release modules is in its release's unit (one fork server and
# each cached result computed once, in the worker that runs that release: tests/forkserver.py), a module whose
# tests share nothing one unit per test, any other module one unit; the costliest go first, so no worker ends the
# run alone on a long unit. Three workers on a two-core machine: the tests run sglang in subprocesses, mostly
# CPU-bound, but the warm-up scenarios sleep through their 2 s deadlines (about 20 s a release), and the third
# worker keeps both cores busy meanwhile.
workers=${CP_SYMM_TEST_WORKERS:-3}
rc=0
heartbeat "pytest" .venv/bin/python -m pytest -p no:cacheprovider -v -rfEs --durations=25 --color=no \
  -n "$workers" --dist loadscope tests -m "not gpu" "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
  say "pytest collected no test (exit 5): the selection above matched nothing; that is a failure here"
  rc=1
fi
wait "$index_pid" || true
say "index check:"
cat "$index_log"
rm -f "$index_log"
say "ci/test.sh: done, exit $rc"
exit "$rc"
