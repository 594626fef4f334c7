#!/usr/bin/env bash
# Build PJSIP's own libFuzzer targets (tests/fuzz in its source) against the PJSIP the bridge uses:
# the same source, config_site.h and fixes (native/pjsip-source.sh), compiled with clang,
# AddressSanitizer and libFuzzer. For the slow suite (tests/faults/test_pjsip_fuzzers.py).
#
# usage: native/build-fuzzers.sh    (prints the directory holding the fuzzers on its last line)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${SIP_WS_BRIDGE_CACHE:-$HOME/.cache/sip-ws-bridge}
JOBS=${JOBS:-$(nproc)}
CONFIG_SITE="$HERE/config_site.h"
step() { echo "=== $(date +%T) pjsip fuzzers: $*" >&2; }
# The targets that read what a peer sends the bridge: SIP, SDP, multipart bodies, URIs, RTP, RTCP.
TARGETS="fuzz-sip fuzz-sdp fuzz-multipart fuzz-uri fuzz-rtp fuzz-rtcp"

KEY=$( (cat "$CONFIG_SITE" "$HERE/pjsip-source.sh" "$0"; echo "$TARGETS") | sha256sum | cut -c1-12)
OUT="$CACHE/fuzzers/$KEY"
if [ -x "$OUT/fuzz-sip" ]; then
  step "cached build found"
  echo "$OUT"
  exit 0
fi
if ! command -v clang >/dev/null; then
  step "installing clang"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends clang >&2
fi
# libFuzzer and the sanitizers' runtimes are a package of their own, named for clang's version.
CLANG_MAJOR=$(clang -dumpversion | cut -d. -f1)
if ! dpkg-query -W -f='${Status}' "libclang-rt-$CLANG_MAJOR-dev" 2>/dev/null | grep -q "install ok installed"; then
  step "installing libclang-rt-$CLANG_MAJOR-dev (libFuzzer, AddressSanitizer)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "libclang-rt-$CLANG_MAJOR-dev" >&2
fi

. "$HERE/pjsip-source.sh"
pjsip_source "$CACHE/fuzz-build"
# config_site.h reads RTP latching from two variables the pjsua2 module defines; the fuzzers
# link PJSIP without that module, so they get their own definition (PJSIP's default rule).
cat > "$PJ/bridge_latching.c" <<'EOF'
unsigned bridge_rtp_nat_probation_cnt = 10;
unsigned bridge_rtcp_nat_probation_cnt = 3;
EOF
FLAGS="-g -O1 -fno-omit-frame-pointer -fsanitize=address,fuzzer-no-link"
step configure
export CC=clang CXX=clang++
pjsip_configure $FLAGS
step "make lib (-j$JOBS)"
(cd "$PJ" && make dep >&2 && make -j"$JOBS" lib >&2)
(cd "$PJ" && clang $FLAGS -c bridge_latching.c -o bridge_latching.o)
step "fuzz targets: $TARGETS"
mkdir -p "$OUT.tmp"
(cd "$PJ/tests/fuzz" && for t in $TARGETS; do
  make -s -f - "$t" PJBASE=../../ >&2 <<MAKE
PJBASE=../../
include \$(PJBASE)/build.mak
$t:
	\$(CC) \$(PJ_CFLAGS) -c $t.c
	\$(CXX) \$(PJ_CFLAGS) -o $t $t.o ../../bridge_latching.o \$(PJ_LDFLAGS) \$(PJ_LDLIBS) \$(LDFLAGS) -fsanitize=address,fuzzer
MAKE
  cp "$t" "$OUT.tmp/"
  if [ -f "seed/${t}_seed_corpus.zip" ]; then
    mkdir -p "$OUT.tmp/$t.seed" && (cd "$OUT.tmp/$t.seed" && python3 -m zipfile -e "$PJ/tests/fuzz/seed/${t}_seed_corpus.zip" . >&2)
  fi
done)
rm -rf "$OUT"; mv "$OUT.tmp" "$OUT"
[ -n "${KEEP_BUILD:-}" ] || rm -rf "$CACHE/fuzz-build"
step "ready"
echo "$OUT"
