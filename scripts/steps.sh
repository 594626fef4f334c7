# Sourced by the set-up scripts: one line per step with its elapsed time, the full output of every
# step in one log file, and the log's last 40 lines when a step fails.
#
#   step_begin  NAME...      prints "NAME ... " (no newline yet)
#   step_run    NAME CMD...  runs CMD with its output (stdout and stderr) appended to $STEP_LOG,
#                            then prints "ok 12 s"; on failure prints the log's tail and exits
#   step_try    NAME CMD...  the same, but a failure only prints the tail and returns its status
#   step_note   TEXT         one line of its own
#
# STEP_LOG defaults to ~/.cache/sip-ws-bridge/logs/<script>-<time>.log; its path is printed first.

STEP_LOG=${STEP_LOG:-"${SIP_WS_BRIDGE_CACHE:-$HOME/.cache/sip-ws-bridge}/logs/$(basename "${0%.sh}")-$(date +%Y%m%d-%H%M%S).log"}
mkdir -p "$(dirname "$STEP_LOG")"
: >>"$STEP_LOG"
export STEP_LOG

_step_elapsed() {
  local s=$1
  if [ "$s" -ge 60 ]; then echo "$((s / 60)) m $((s % 60)) s"; else echo "$s s"; fi
}

step_note() { printf '%s\n' "$*" >&2; }

step_run() {
  _step "$@" || exit $?
}

step_try() {
  _step "$@"
}

_step() {
  local name=$1; shift
  local t0=$SECONDS
  printf '%s ... ' "$name" >&2
  { echo; echo "=== $(date +%T) $name: $*"; } >>"$STEP_LOG"
  if "$@" >>"$STEP_LOG" 2>&1; then
    printf 'ok %s\n' "$(_step_elapsed $((SECONDS - t0)))" >&2
  else
    local rc=$?
    printf 'FAILED after %s (exit %d)\n' "$(_step_elapsed $((SECONDS - t0)))" "$rc" >&2
    echo "--- last 40 lines of $STEP_LOG:" >&2
    tail -n 40 "$STEP_LOG" >&2
    echo "--- the whole log: $STEP_LOG" >&2
    return "$rc"
  fi
}
