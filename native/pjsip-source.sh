# Sourced by native/build-pjsua2.sh and native/build-fuzzers.sh: the PJSIP source both build, made
# ready the same way. Defines pjsip_source BUILD_DIR, which sets PJ to the unpacked, configured-for-
# the-bridge source tree (config_site.h in place, the project's fixes applied).
# Expects: CACHE (where the source tarball is kept), CONFIG_SITE, and a step() function.
# pjsip_configure CFLAGS... then configures $PJ as the bridge needs it.

pjsip_source() {
  local BUILD=$1
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
  # 3d. and to its report of dropped data: a request PJSIP cannot parse (an unbracketed IPv6
  #     Request-URI, a bad display name, RFC 4475 `badinv01`, `quotbal`, RFC 5118 `ipv6-bad`) or
  #     that lacks a required header is dropped, and the drop callback is told only the transport,
  #     not who sent it, so it could not answer. The report gains the packet's rx_data (source
  #     address, transport), set where the receiving function has it and NULL elsewhere, so the
  #     bridge's SIP guard can answer 400 (native/sip_guard.hpp, sip_guard_dropped).
  sed -i 's/^} pjsip_tp_dropped_data;$/    \/** The received packet (source address, transport), where known; else NULL. *\/\n    pjsip_rx_data   *rdata;\n\n&/' \
    "$PJ/pjsip/include/pjsip/sip_transport.h"
  sed -i 's/^\( *\)dd\.tp = tr;$/&\n\1dd.rdata = rdata;/' "$PJ/pjsip/src/pjsip/sip_transport.c"
  grep -q '^    pjsip_rx_data   \*rdata;$' "$PJ/pjsip/include/pjsip/sip_transport.h" \
    && [ "$(grep -c '^ *dd\.rdata = rdata;$' "$PJ/pjsip/src/pjsip/sip_transport.c")" -ge 5 ] \
    || { echo "pjsua2: the sip_transport dropped-data fix did not apply (PJSIP changed?)" >&2; exit 1; }


}

# Configure $PJ for a headless server with Debian's libraries (the DFSG tarball lacks the bundled
# gsm, speex, srtp, ilbc, g7221, resample and BDSound; the makefile still lists bdimad_dev.c).
# Arguments: the C and C++ flags. Extra variables (CC, CXX) come from the environment.
pjsip_configure() {
  local flags="$*"
  touch "$PJ/pjmedia/src/pjmedia-audiodev/bdimad_dev.c"
  (cd "$PJ" && ./configure --disable-video --disable-sound --enable-epoll \
    --disable-ilbc-codec --disable-g7221-codec --enable-speex-resample --with-external-speex \
    --with-external-gsm --with-external-srtp --disable-opencore-amr --disable-libyuv --disable-libwebrtc \
    --disable-libwebrtc-aec3 --disable-bcg729 --disable-silk --disable-v4l2 --disable-sdl \
    --disable-ffmpeg --disable-openh264 CFLAGS="$flags" CXXFLAGS="$flags" >&2)
}
