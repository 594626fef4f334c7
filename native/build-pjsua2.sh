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
# usage: native/build-pjsua2.sh PYTHON    (prints the wheel path on its last line)
set -euo pipefail
PY=${1:?usage: build-pjsua2.sh PYTHON}
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${SIP_WS_BRIDGE_CACHE:-$HOME/.cache/sip-ws-bridge}
JOBS=${JOBS:-$(nproc)}
step() { echo "=== $(date +%T) pjsua2: $*" >&2; }

CONFIG_SITE="$HERE/config_site.h"
PYTAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
# Bump BUILD_REV when the configure flags or build steps change: it invalidates cached wheels.
BUILD_REV=2
# The bridge's C++ (every native/*.hpp), in the order SWIG must read it: a class before the
# classes that take it as an argument. A header not listed here fails the build (below).
HEADERS="media_template.hpp media_wakeup.hpp media_sender.hpp media_pipe.hpp media_pipe_send.hpp media_port.hpp
         sip_guard.hpp"
for h in "$HERE"/*.hpp; do
  case " $(echo $HEADERS) " in *" $(basename "$h") "*) ;; *) echo "pjsua2: $h is not in HEADERS" >&2; exit 1;; esac
done
KEY=$( (cat "$CONFIG_SITE" "$HERE"/*.hpp "$HERE/pjsip-source.sh"; echo "$BUILD_REV") | sha256sum | cut -c1-12)
WHEELDIR="$CACHE/wheels/$PYTAG-$KEY"
if ls "$WHEELDIR"/pjsua2-*.whl >/dev/null 2>&1; then
  step "cached wheel found"
  ls "$WHEELDIR"/pjsua2-*.whl | head -1
  exit 0
fi

# 1-3. the source, unpacked into a fresh build tree with config_site.h and the project's fixes
#      (native/pjsip-source.sh)
. "$HERE/pjsip-source.sh"
pjsip_source "$CACHE/build"
BUILD="$CACHE/build"

# 4. configure (native/pjsip-source.sh) and build the libraries
step configure
pjsip_configure -fPIC -O2
step "make lib (-j$JOBS)"
(cd "$PJ" && make dep >&2 && make -j"$JOBS" lib >&2)

# 5. the bridge's native media hand-off (MediaWakeup, MediaPipe, PipeMediaPort, MediaSender, the
#    dialect's SendTemplate) and SIP guard join the SWIG module; the pipe's loop-side methods
#    keep the GIL (nothread): they are short, take only the pipe's own locks, and some use the
#    Python C API.
INCLUDES=""
SWIG_INCLUDES=""
for h in $HEADERS; do
  cp "$HERE/$h" "$PJ/pjsip/include/pjsua2/$h"
  INCLUDES="$INCLUDES\n#include \"pjsua2/$h\""
  SWIG_INCLUDES="$SWIG_INCLUDES%include \"pjsua2/$h\"\n"
done
SWIGI="$PJ/pjsip-apps/src/swig/pjsua2.i"
NOTHREAD=""
for m in take getFd close rxReady rxTake write mark clear watchMark watchProbe probeTime pullTime rxChunkTime rxWritten rxRead \
         rxOverruns written played clearedBytes droppedBytes oddBytes underruns framesAudio framesSilence \
         bufferedBytes isPlaying pushFrame pullFrame getId getFrameBytes senderAttach senderWriteRaw \
         senderWriteEvent senderDetach senderStatus senderLatencies senderPoll watchNextRead nextReadTime; do
  case $m in take|getFd) cls=MediaWakeup;; *) cls=MediaPipe;; esac
  NOTHREAD="$NOTHREAD%feature(\"nothread\") pj::$cls::$m;\n"
done
sed -i "s|^#include \"pjsua2.hpp\"\$|#include \"pjsua2.hpp\"$INCLUDES|" "$SWIGI"
sed -i "s|^%include \"pjsua2/media.hpp\"\$|%include \"pjsua2/media.hpp\"\n$NOTHREAD$SWIG_INCLUDES|" "$SWIGI"
grep -q '^%include "pjsua2/media_pipe.hpp"$' "$SWIGI" || { echo "pjsua2: could not add media_pipe.hpp to pjsua2.i" >&2; exit 1; }
grep -q '^#include "pjsua2/media_pipe.hpp"$' "$SWIGI" || { echo "pjsua2: could not include media_pipe.hpp in pjsua2.i" >&2; exit 1; }

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
