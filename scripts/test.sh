#!/usr/bin/env bash
# The README's second command: install what is needed (test peers, a cached Asterisk build),
# then lint, type-check and run the whole test suite. Slow load/soak runs are left to the
# benchmark command (pytest -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/steps.sh
bash scripts/setup.sh test
if [ "${SKIP_ASTERISK:-0}" != 1 ]; then
  step_try "Asterisk 22 for the interop tests (cached after the first time; about 4 min)" \
    bash scripts/build-asterisk.sh || step_note "Asterisk build failed: its interop tests will be skipped"
fi
step_run "ruff" .venv/bin/ruff check bridge tests benchmarks
step_run "mypy" .venv/bin/mypy
step_run "layout (scripts/check-layout)" .venv/bin/python scripts/check-layout
echo "=== test: pytest"
ARGS=(-m "not slow" -p no:cacheprovider "$@")
# A private network namespace gives the tests their own loopback: no port of another
# program on this machine can collide with them, and nothing can leave the machine.
NS=""
if [ "$(id -u)" = 0 ] && command -v ip >/dev/null && ip netns add "sipwsb-test-$$" 2>/dev/null; then
  NS="sipwsb-test-$$"
  trap 'ip netns del "$NS" 2>/dev/null || true' EXIT
  ip netns exec "$NS" ip link set lo up
  echo "=== test: running in network namespace $NS"
  set +e
  ip netns exec "$NS" .venv/bin/python -m pytest "${ARGS[@]}"
  rc=$?
else
  set +e
  .venv/bin/python -m pytest "${ARGS[@]}"
  rc=$?
fi
set -e
# pytest's 5 means no test ran: that is a failure here.
exit $rc
