#!/usr/bin/env bash
# Build Asterisk 22 (chan_pjsip) from Debian sid's `asterisk` source package, for the interop tests.
#
# Asterisk is a test peer only (tests/peers/, tests/peerlib.py): the bridge registers to it, it dials
# the bridge, sends DTMF and records what it hears. Debian 12 has no asterisk package, so we build the
# sid source package with upstream's ./configure and the DFSG pjproject component (no GitHub, nothing
# downloaded during the build). About 3 min on 2 cores; the result is cached:
#
#   $CACHE/src/asterisk_*            the sid source package (shared with native/build-pjsua2.sh)
#   $CACHE/asterisk/install/         the install prefix (sbin/asterisk, lib/, modules); not relocatable
#   $CACHE/asterisk/build.log        full build output
#
# CACHE=${SIP_WS_BRIDGE_CACHE:-$HOME/.cache/sip-ws-bridge}. Idempotent: if install/sbin/asterisk exists
# and `asterisk -V` runs, it exits 0 at once. Installs its own apt build dependencies (needs root or sudo).
#
# usage: scripts/build-asterisk.sh        env: JOBS (default nproc), KEEP_BUILD=1 keeps the 850 MB build tree
set -euo pipefail
CACHE=${SIP_WS_BRIDGE_CACHE:-$HOME/.cache/sip-ws-bridge}
BASE="$CACHE/asterisk"
PREFIX="$BASE/install"
SRC="$CACHE/src"
LOG="$BASE/build.log"
JOBS=${JOBS:-$(nproc)}
T0=$(date +%s)
step() { echo "=== $(date +%T) asterisk: $*"; }

ast_ok() { [ -x "$PREFIX/sbin/asterisk" ] && "$PREFIX/sbin/asterisk" -V >/dev/null 2>&1; }
if ast_ok; then
  step "cached build: $("$PREFIX/sbin/asterisk" -V) in $PREFIX"
  exit 0
fi

mkdir -p "$BASE"
# one build at a time (CI and a developer may share the cache)
exec 9>"$BASE/.lock"
flock 9
if ast_ok; then step "built by a concurrent run: $("$PREFIX/sbin/asterisk" -V)"; exit 0; fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
: >"$LOG"
echo "build-asterisk.sh started $(date -u +%FT%TZ)" >>"$LOG"
trap 'echo "asterisk: build FAILED (line $LINENO); last lines of $LOG:" >&2; tail -25 "$LOG" >&2' ERR

# 0. apt dependencies (only the missing ones; asterisk-core-sounds-en-wav gives Playback() prompts)
DEPS=(build-essential pkg-config bzip2 xz-utils patch wget
      libedit-dev uuid-dev libjansson-dev libxml2-dev libsqlite3-dev libssl-dev
      asterisk-core-sounds-en-wav)
MISSING=()
for p in "${DEPS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || MISSING+=("$p")
done
if [ ${#MISSING[@]} -gt 0 ]; then
  step "apt-get install ${MISSING[*]}"
  $SUDO apt-get update >>"$LOG" 2>&1
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${MISSING[@]}" >>"$LOG" 2>&1
fi

# 1. source: sid's source package, fetched (download only) with a private apt configuration, exactly as
#    native/build-pjsua2.sh does; reused when every file the .dsc lists is already in $SRC.
have_source() {
  local dsc
  dsc=$(ls -1 "$SRC"/asterisk_*.dsc 2>/dev/null | sort -V | tail -1) || return 1
  [ -n "$dsc" ] || return 1
  local f n=0
  for f in $(sed -n '/^Files:/,/^[^ ]/{/^ /p}' "$dsc" | awk '{print $3}'); do
    [ -f "$SRC/$f" ] || return 1
    n=$((n + 1))
  done
  [ "$n" -gt 0 ]
}
mkdir -p "$SRC" "$CACHE/apt/lists/partial" "$CACHE/apt/cache/archives/partial"
if have_source; then
  step "source package cached: $(basename "$(ls -1 "$SRC"/asterisk_*.dsc | sort -V | tail -1)")"
else
  step "fetching the asterisk source package from Debian sid"
  echo 'deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main' > "$CACHE/apt/src.list"
  APTO=(-o "Dir::Etc::sourcelist=$CACHE/apt/src.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$CACHE/apt/lists"
        -o "Dir::Cache=$CACHE/apt/cache" -o Acquire::Check-Valid-Until=false -o Acquire::Check-Date=false)
  apt-get "${APTO[@]}" update >>"$LOG" 2>&1
  (cd "$SRC" && apt-get "${APTO[@]}" source --download-only asterisk >>"$LOG" 2>&1)
  have_source || { echo "asterisk: source download incomplete, see $LOG" >&2; exit 1; }
fi
DSC=$(ls -1 "$SRC"/asterisk_*.dsc | sort -V | tail -1)

# 2. unpack with Debian's patches into a fresh build tree (the 2014 patch is needed: the DFSG pjproject
#    lacks bdimad_dev.c); the component tarballs become Xpjproject/, Xopus/, ...
BUILD="$BASE/build"
rm -rf "$BUILD" "$PREFIX"; mkdir -p "$BUILD" "$BASE/externals"
step "unpacking $(basename "$DSC")"
(cd "$BUILD" && dpkg-source -x "$DSC" tree >>"$LOG" 2>&1)
cd "$BUILD/tree"

# 3. the DFSG pjproject component -> the tarball third-party/pjproject expects, in the externals cache,
#    with our md5 replacing upstream's (as debian/rules does). Must be in place before ./configure.
PJVER=$(sed -n 's/^PJPROJECT_VERSION=//p' third-party/versions.mak)
step "pjproject $PJVER tarball"
TARBALL="$BASE/externals/pjproject-$PJVER.tar.bz2"
[ -f "$TARBALL" ] || tar -c --transform "s,^Xpjproject,pjproject-$PJVER," Xpjproject | bzip2 -1 > "$TARBALL"
( cd "$BASE/externals" && md5sum "pjproject-$PJVER.tar.bz2" ) > "third-party/pjproject/pjproject-$PJVER.tar.bz2.md5"

# 4. configure: system jansson/libxml2/sqlite/uuid/libedit/openssl; bundled pjproject from the cache
step configure
./configure --prefix="$PREFIX" --with-pjproject-bundled --with-externals-cache="$BASE/externals" \
  --without-jansson-bundled >>"$LOG" 2>&1

# 5. menuselect: no downloads, no -march=native (the cache must not be CPU-specific), no test modules
step menuselect
make menuselect.makeopts >>"$LOG" 2>&1
menuselect/menuselect --disable BUILD_NATIVE --disable TEST_FRAMEWORK \
  --disable-category MENUSELECT_CORE_SOUNDS --disable-category MENUSELECT_MOH \
  --disable-category MENUSELECT_EXTRA_SOUNDS menuselect.makeopts >>"$LOG" 2>&1

# 6. build + install. No 'make config'/'make samples' (they write to /etc); LDCONFIG=: keeps $PREFIX/lib
#    out of the system's ld.so.cache (the binaries carry RUNPATH=$PREFIX/lib).
step "make -j$JOBS (about 2.5 min on 2 cores)"
make -j"$JOBS" >>"$LOG" 2>&1
step "make install"
make install LDCONFIG=: >>"$LOG" 2>&1

# sounds: bookworm's asterisk-core-sounds-en-wav installs en_US_f_Allison without the 'en' link
SOUNDS="$PREFIX/var/lib/asterisk/sounds"
mkdir -p "$SOUNDS"
if [ -d /usr/share/asterisk/sounds/en_US_f_Allison ]; then
  ln -sfn /usr/share/asterisk/sounds/en_US_f_Allison "$SOUNDS/en"
fi

cd "$BASE"
[ "${KEEP_BUILD:-0}" = 1 ] || rm -rf "$BUILD"
ast_ok || { echo "asterisk: installed binary does not run, see $LOG" >&2; exit 1; }
step "done in $(( $(date +%s) - T0 )) s: $("$PREFIX/sbin/asterisk" -V) in $PREFIX"
