#!/usr/bin/env bash
# Install what the bridge needs on Debian 12 (as root): apt packages, a production pjsua2
# (built from PJSIP source once, then cached), and a virtual environment in .venv.
#
# usage: scripts/setup.sh [run|test]    run: the bridge and the demo; test: also the test peers
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-run}
say() { echo "=== setup: $*" >&2; }

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
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "setup: need Python >= 3.11" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PY" -m venv .venv
fi
# The wheel is keyed by the PJSIP config and the native media pipe's source: a changed checkout
# builds (or finds in the cache) its own wheel, and it is installed when it is not the one in .venv.
say "pjsua2: the cached wheel, or a build from PJSIP source (about 3 minutes, then cached)"
WHEEL=$(bash scripts/build-pjsua2.sh "$PWD/.venv/bin/python" | tail -1)
if [ "$(cat .venv/pjsua2-wheel 2>/dev/null)" != "$WHEEL" ] || ! .venv/bin/python -c 'import pjsua2' 2>/dev/null; then
  .venv/bin/pip install -q --force-reinstall "$WHEEL"
  echo "$WHEEL" > .venv/pjsua2-wheel
fi
.venv/bin/python -c 'import pjsua2; pjsua2.MediaPipe' 2>/dev/null \
  || { echo "setup: the installed pjsua2 lacks the bridge's MediaPipe (see scripts/build-pjsua2.sh)" >&2; exit 1; }
MAX=$(.venv/bin/python -c 'import pjsua2; print(pjsua2.EpConfig().uaConfig.maxCalls)')
[ "$MAX" -ge 1024 ] || { echo "setup: pjsua2 allows only $MAX calls (need >= 1024)" >&2; exit 1; }
EXTRA=""
[ "$MODE" = test ] && EXTRA="[test]"
if ! .venv/bin/pip install -q -e ".$EXTRA" >/tmp/sip-ws-bridge-pip.log 2>&1; then
  cat /tmp/sip-ws-bridge-pip.log >&2; exit 1
fi
say "ready: pjsua2 $(.venv/bin/python -c 'import pjsua2; print(pjsua2.Endpoint().libVersion().full)' 2>/dev/null) with $MAX calls per process"
