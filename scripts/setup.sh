#!/usr/bin/env bash
# Install what the bridge needs on Debian 12 (as root): apt packages, a production pjsua2
# (built from PJSIP source once, then cached), and a virtual environment in .venv.
#
# usage: scripts/setup.sh [run|test]    run: the bridge and the demo; test: also the test peers
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-run}
. scripts/steps.sh
step_note "setup ($MODE): full output in $STEP_LOG"

BUILD_DEPS="build-essential pkg-config xz-utils swig python3-venv python3-dev libssl-dev libsrtp2-dev
  uuid-dev libspeex-dev libspeexdsp-dev libgsm1-dev debian-archive-keyring"
# Test peers: sipp, kamailio, baresip, tshark, sox; iproute2 for the private network namespace;
# systemd for systemd-analyze (the units are verified).
TEST_DEPS="sip-tester kamailio baresip-core tshark sox libsox-fmt-all iproute2 procps systemd"

missing=()
wanted="$BUILD_DEPS"
[ "$MODE" = test ] && wanted="$wanted $TEST_DEPS"
for pkg in $wanted; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]} (run as root, or install them first)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  step_run "apt package lists" apt-get update -q
  step_run "apt packages (${#missing[@]})" apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  step_note "apt packages ... ok (all installed)"
fi

PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "setup: need Python >= 3.11" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  step_run "virtual environment (.venv)" "$PY" -m venv .venv
fi
# The wheel is keyed by the PJSIP config and the native sources: a changed checkout builds (or
# finds in the cache) its own wheel, and it is installed when it is not the one in .venv.
WHEEL_OUT=$(mktemp)
step_run "PJSIP 2.17 + pjsua2 build (cached after the first time; 5 to 8 min)" \
  sh -c 'bash native/build-pjsua2.sh "$1" >"$2"' sh "$PWD/.venv/bin/python" "$WHEEL_OUT"
WHEEL=$(tail -1 "$WHEEL_OUT"); rm -f "$WHEEL_OUT"
if [ "$(cat .venv/pjsua2-wheel 2>/dev/null)" != "$WHEEL" ] || ! .venv/bin/python -c 'import pjsua2' 2>/dev/null; then
  step_run "pjsua2 wheel into .venv" .venv/bin/pip install -q --force-reinstall "$WHEEL"
  echo "$WHEEL" > .venv/pjsua2-wheel
fi
.venv/bin/python -c 'import pjsua2; pjsua2.MediaPipe' 2>/dev/null \
  || { echo "setup: the installed pjsua2 lacks the bridge's MediaPipe (see native/build-pjsua2.sh)" >&2; exit 1; }
MAX=$(.venv/bin/python -c 'import pjsua2; print(pjsua2.EpConfig().uaConfig.maxCalls)')
[ "$MAX" -ge 1024 ] || { echo "setup: pjsua2 allows only $MAX calls (need >= 1024)" >&2; exit 1; }
EXTRA=""
[ "$MODE" = test ] && EXTRA="[test]"
step_run "Python packages (pip install -e .$EXTRA)" .venv/bin/pip install -q -e ".$EXTRA"
step_note "ready: pjsua2 $(.venv/bin/python -c 'import pjsua2; print(pjsua2.Endpoint().libVersion().full)' 2>/dev/null) with $MAX calls per process"
