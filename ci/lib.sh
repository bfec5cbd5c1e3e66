# Shared by the ci/ scripts (sourced): elapsed-time stamps and a heartbeat, so a run prints a line at least every
# 15-20 seconds from its first second. CI_START is inherited, so nested scripts count from the same start.
export CI_START=${CI_START:-$(date +%s)}
# fd 9: where the heartbeat writes, so that it is seen even when the command's own output is piped into a filter.
exec 9>&1

elapsed() {
  local s=$(( $(date +%s) - CI_START ))
  printf '%dm%02ds' $((s / 60)) $((s % 60))
}

say() {
  printf '[%s] %s\n' "$(elapsed)" "$*"
}

# heartbeat LABEL CMD...: run CMD; while it runs, print "LABEL: still running" every 15 s. Returns CMD's status.
heartbeat() {
  local label=$1; shift
  (
    n=0
    while sleep 5; do
      n=$((n + 5))
      if [ $((n % 15)) -eq 0 ]; then say "$label: still running" >&9; fi
    done
  ) &
  local ticker=$! rc=0
  "$@" || rc=$?
  kill "$ticker" 2>/dev/null || true
  wait "$ticker" 2>/dev/null || true
  return $rc
}

# The releases of ci/releases.txt in a set: release_set ci|all
release_set() {
  local want=$1
  grep -v '^#' "$(dirname "${BASH_SOURCE[0]}")/releases.txt" | while read -r release set _; do
    [ -n "$release" ] || continue
    if [ "$want" = all ] || [ "$set" = "$want" ]; then echo "$release"; fi
  done
}
