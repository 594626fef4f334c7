#!/usr/bin/env bash
# Build a production pjsua2 Python wheel from the PJSIP 2.17 source in Debian's archive.
#
# Why: the pjsua2-python wheel on PyPI is compiled with PJSIP's defaults (4 calls per process,
# 64 socket handles), which caps the bridge at a demo. PJSIP's source ships inside Debian sid's
# `asterisk` source package as the DFSG-cleaned component tarball `orig-Xpjproject`.
#
# The finished wheel is cached in $CACHE/wheels keyed by PJSIP version, config and Python tag,
# so a second install takes seconds. The downloaded source tarball is cached as well, because
# sid moves on and serves only its current version.
#
# usage: scripts/build-pjsua2.sh PYTHON    (prints the wheel path on its last line)
set -euo pipefail
PY=${1:?usage: build-pjsua2.sh PYTHON}
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${SIP_WS_BRIDGE_CACHE:-$HOME/.cache/sip-ws-bridge}
JOBS=${JOBS:-$(nproc)}
step() { echo "=== $(date +%T) pjsua2: $*" >&2; }

CONFIG_SITE="$HERE/pjsua2_config_site.h"
PYTAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
# Bump BUILD_REV when the configure flags or build steps change: it invalidates cached wheels.
BUILD_REV=2
MEDIA_PIPE="$HERE/pjsua2_media_pipe.hpp"
SIP_GUARD="$HERE/pjsua2_sip_guard.hpp"
KEY=$( (cat "$CONFIG_SITE" "$MEDIA_PIPE" "$SIP_GUARD"; echo "$BUILD_REV") | sha256sum | cut -c1-12)
WHEELDIR="$CACHE/wheels/$PYTAG-$KEY"
if ls "$WHEELDIR"/pjsua2-*.whl >/dev/null 2>&1; then
  step "cached wheel found"
  ls "$WHEELDIR"/pjsua2-*.whl | head -1
  exit 0
fi

# 1. source: the asterisk source package from sid, fetched with a private apt configuration so the
#    system's sources and lists are untouched; the snapshot mirror may call sid's index expired.
SRC="$CACHE/src"
mkdir -p "$SRC" "$CACHE/apt/lists/partial" "$CACHE/apt/cache/archives/partial"
if ! ls "$SRC"/asterisk_*.orig-Xpjproject.tar.* >/dev/null 2>&1; then
  step "fetching the asterisk source package from Debian sid"
  echo 'deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main' > "$CACHE/apt/src.list"
  APTO=(-o "Dir::Etc::sourcelist=$CACHE/apt/src.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$CACHE/apt/lists"
        -o "Dir::Cache=$CACHE/apt/cache" -o Acquire::Check-Valid-Until=false -o Acquire::Check-Date=false)
  apt-get "${APTO[@]}" update >&2
  (cd "$SRC" && apt-get "${APTO[@]}" source --download-only asterisk >&2)
fi
TARBALL=$(ls "$SRC"/asterisk_*.orig-Xpjproject.tar.* | sort -V | tail -1)

# 2. unpack into a fresh build tree
BUILD="$CACHE/build"
rm -rf "$BUILD"; mkdir -p "$BUILD"
step "unpacking $(basename "$TARBALL")"
tar -xf "$TARBALL" -C "$BUILD"
PJ=$(ls -d "$BUILD"/*/ | head -1); PJ=${PJ%/}
VER=$(sed -n 's/^export PJ_VERSION_MAJOR *:= *//p' "$PJ/version.mak").$(sed -n 's/^export PJ_VERSION_MINOR *:= *//p' "$PJ/version.mak")
step "PJSIP version $VER"
case "$VER" in 2.1[6-9]*|2.[2-9]*|[3-9].*) ;; *) echo "pjsua2: need PJSIP >= 2.16, got $VER" >&2; exit 1;; esac

# 3. server-size limits
cp "$CONFIG_SITE" "$PJ/pjlib/include/pj/config_site.h"

# 3b. a fix to pjsua's incoming-call path: when media set-up fails after pjsua2 has already run
#     onIncomingCall (it does so from inside the media transport callback), the 4xx it sends ends
#     the call and clears call->inv, which the next line then dereferences (a segfault on, e.g.,
#     a DTLS-SRTP offer). The same guard PJSIP already has a few lines above.
sed -i 's/^            if (call->inv->dlg) {$/            if (call->inv \&\& call->inv->dlg) {/' \
  "$PJ/pjsip/src/pjsua-lib/pjsua_call.c"
[ "$(grep -c 'if (call->inv && call->inv->dlg) {' "$PJ/pjsip/src/pjsua-lib/pjsua_call.c")" -ge 3 ] \
  || { echo "pjsua2: the pjsua_call.c fix did not apply (PJSIP changed?)" >&2; exit 1; }
# 3c. and to its parser: a URI of a scheme it does not know ("nobodyKnowsThisScheme:x", RFC 4475)
#     is read with whitespace skipping off and leaves the space before "SIP/2.0" unread, so the
#     whole request is dropped unanswered; it must get 416 (Unsupported URI Scheme).
#     The sip: URI parser a few lines above ends the same way and skips it.
sed -i '/pjsip_OTHER_URI_CONTENT, &uri->content);$/{n;s/^    scanner->skip_ws = skip_ws;$/&\n    pj_scan_skip_whitespace(scanner);/}' \
  "$PJ/pjsip/src/pjsip/sip_parser.c"
grep -A2 'pjsip_OTHER_URI_CONTENT, &uri->content);$' "$PJ/pjsip/src/pjsip/sip_parser.c" \
  | grep -q '^    pj_scan_skip_whitespace(scanner);$' \
  || { echo "pjsua2: the sip_parser.c fix did not apply (PJSIP changed?)" >&2; exit 1; }

# 4. configure for a headless server with Debian's libraries (the DFSG tarball lacks the bundled
#    gsm, speex, srtp, ilbc, g7221, resample and BDSound; the makefile still lists bdimad_dev.c)
step configure
touch "$PJ/pjmedia/src/pjmedia-audiodev/bdimad_dev.c"
(cd "$PJ" && ./configure --disable-video --disable-sound --enable-epoll \
  --disable-ilbc-codec --disable-g7221-codec --enable-speex-resample --with-external-speex \
  --with-external-gsm --with-external-srtp --disable-opencore-amr --disable-libyuv --disable-libwebrtc \
  --disable-libwebrtc-aec3 --disable-bcg729 --disable-silk --disable-v4l2 --disable-sdl \
  --disable-ffmpeg --disable-openh264 CFLAGS="-fPIC -O2" CXXFLAGS="-fPIC -O2" >&2)
step "make lib (-j$JOBS)"
(cd "$PJ" && make dep >&2 && make -j"$JOBS" lib >&2)

# 5. the bridge's native media hand-off (MediaWakeup, MediaPipe, PipeMediaPort, MediaSender) joins the SWIG
#    module; its loop-side methods keep the GIL (nothread): they are short, take only the pipe's
#    own lock, and some use the Python C API.
cp "$MEDIA_PIPE" "$PJ/pjsip/include/pjsua2/media_pipe.hpp"
cp "$SIP_GUARD" "$PJ/pjsip/include/pjsua2/sip_guard.hpp"
SWIGI="$PJ/pjsip-apps/src/swig/pjsua2.i"
NOTHREAD=""
for m in take getFd close rxReady rxTake write mark clear watchMark watchProbe probeTime pullTime rxChunkTime rxWritten rxRead \
         rxOverruns written played clearedBytes droppedBytes oddBytes underruns framesAudio framesSilence \
         bufferedBytes isPlaying pushFrame pullFrame getId getFrameBytes senderAttach senderWriteRaw \
         senderWriteEvent senderDetach senderStatus senderLatencies senderPoll watchNextRead nextReadTime; do
  case $m in take|getFd) cls=MediaWakeup;; *) cls=MediaPipe;; esac
  NOTHREAD="$NOTHREAD%feature(\"nothread\") pj::$cls::$m;\n"
done
sed -i 's|^#include "pjsua2.hpp"$|#include "pjsua2.hpp"\n#include "pjsua2/media_pipe.hpp"\n#include "pjsua2/sip_guard.hpp"|' "$SWIGI"
sed -i "s|^%include \"pjsua2/media.hpp\"\$|%include \"pjsua2/media.hpp\"\n$NOTHREAD%include \"pjsua2/media_pipe.hpp\"\n%include \"pjsua2/sip_guard.hpp\"|" "$SWIGI"
grep -q 'media_pipe.hpp"$' "$SWIGI" || { echo "pjsua2: could not add media_pipe.hpp to pjsua2.i" >&2; exit 1; }

# 6. SWIG bindings, packed as a wheel by a throwaway venv of the same Python (setuptools + wheel)
step "swig python bindings"
BENV="$CACHE/buildenv-$PYTAG"
[ -x "$BENV/bin/python" ] || "$PY" -m venv "$BENV" >&2
"$BENV/bin/python" -m pip install -q "setuptools>=61" wheel >&2
(cd "$PJ/pjsip-apps/src/swig/python" && make PYTHON_EXE="$BENV/bin/python" >&2)
mkdir -p "$WHEELDIR.tmp"
(cd "$PJ/pjsip-apps/src/swig/python" && "$BENV/bin/python" -m pip wheel --no-deps --no-build-isolation -w "$WHEELDIR.tmp" . >&2)
rm -rf "$WHEELDIR"; mv "$WHEELDIR.tmp" "$WHEELDIR"
[ -n "${KEEP_BUILD:-}" ] || rm -rf "$BUILD"
step "wheel ready"
ls "$WHEELDIR"/pjsua2-*.whl | head -1
