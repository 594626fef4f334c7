"""Digest authentication of inbound INVITEs (RFC 3261 section 22, RFC 2617 / 7616, MD5, qop=auth).

pjsua2 has no server-side challenge, so the bridge does it itself: an INVITE without valid
credentials is answered 401 with a `WWW-Authenticate` challenge; the caller repeats the INVITE
with an `Authorization` header, which is checked here.

Nonces are stateless: the issue time, 8 random bytes and an HMAC over both and the caller's
address, with a key made at start. A nonce is only good from the address it was given to, for
`nonce_ttl_s` (then the caller is re-challenged with `stale=true`), and each nonce count (`nc`)
is accepted once: a captured INVITE cannot be replayed. Every comparison of secrets is in
constant time. Nothing here raises on what a peer sends.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import struct
from collections import OrderedDict
from dataclasses import dataclass

_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s"]*)\s*(?:,|$)')
_MAX_HEADER = 4096
_MAX_REPLAY_ENTRIES = 10_000


def parse_digest(header: str) -> dict[str, str] | None:
    """The parameters of a `Digest ...` credentials header (lower-case names), or None."""
    if len(header) > _MAX_HEADER:
        return None
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        match = _PARAM_RE.match(rest, pos)
        if match is None or match.end() == pos:
            return None
        name, value = match.group(1).lower(), match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params.setdefault(name, value)
        pos = match.end()
    return params


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8", "surrogateescape"), usedforsecurity=False).hexdigest()


def digest_response(*, username: str, realm: str, password: str, method: str, uri: str, nonce: str,
                    nc: str, cnonce: str, qop: str = "auth") -> str:
    """The `response` a client computes (RFC 2617 3.2.2.1 with qop=auth, MD5)."""
    ha1 = _md5(f"{username}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    return _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


@dataclass(frozen=True, slots=True)
class AuthResult:
    ok: bool
    challenge: str | None = None  # a WWW-Authenticate value: answer 401 with it
    why: str = ""  # for the log when not ok


class DigestAuthenticator:
    """Checks `Authorization` headers against one username and password for one realm."""

    def __init__(self, username: str, password: str, realm: str = "sip-ws-bridge", *,
                 nonce_ttl_s: float = 300.0, key: bytes | None = None) -> None:
        self.username = username
        self._password = password
        self.realm = realm
        self.nonce_ttl_s = nonce_ttl_s
        self._key = key if key is not None else os.urandom(32)
        self._counts: OrderedDict[str, int] = OrderedDict()  # nonce -> highest nc seen

    def __repr__(self) -> str:
        return f"DigestAuthenticator(username={self.username!r}, realm={self.realm!r}, password='***')"

    # ---- nonces ----------------------------------------------------------------------------

    def _mac(self, body: bytes, source: str) -> bytes:
        return hmac.new(self._key, body + source.encode(), hashlib.sha256).digest()[:16]

    def make_nonce(self, source: str, now: float) -> str:
        body = struct.pack(">d", now) + os.urandom(8)
        return base64.urlsafe_b64encode(body + self._mac(body, source)).decode().rstrip("=")

    def _nonce_age(self, nonce: str, source: str, now: float) -> float | None:
        """Seconds since `nonce` was issued to `source`; None if it is not one of ours for it."""
        if len(nonce) > 64:
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except ValueError:
            return None
        if len(raw) != 32:
            return None
        body, mac = raw[:16], raw[16:]
        if not hmac.compare_digest(mac, self._mac(body, source)):
            return None
        issued: float = struct.unpack(">d", body[:8])[0]
        return now - issued

    def challenge(self, source: str, now: float, *, stale: bool = False) -> str:
        text = (f'Digest realm="{self.realm}", nonce="{self.make_nonce(source, now)}", '
                'algorithm=MD5, qop="auth"')
        return text + ", stale=true" if stale else text

    # ---- checking ----------------------------------------------------------------------------

    def check(self, method: str, authorizations: list[str], source: str, now: float) -> AuthResult:
        """Whether one of `authorizations` (Authorization header values) proves the password.

        The digest `uri` is not compared with the Request-URI (a proxy may have rewritten the
        latter); replays are stopped by the nonce's address binding, its lifetime and `nc`.
        """
        mine = []
        for header in authorizations:
            params = parse_digest(header)
            if params is not None and params.get("realm") == self.realm:
                mine.append(params)
        if not mine:
            return AuthResult(False, self.challenge(source, now), "no credentials")
        params = mine[0]
        nonce = params.get("nonce", "")
        age = self._nonce_age(nonce, source, now)
        if age is None or age < -5:
            # Not our nonce for this address (forged, from before a restart, or from elsewhere).
            return AuthResult(False, self.challenge(source, now), "unknown nonce")
        if age > self.nonce_ttl_s:
            return AuthResult(False, self.challenge(source, now, stale=True), "nonce expired")
        if params.get("algorithm", "MD5").upper() != "MD5" or params.get("qop", "").lower() != "auth":
            return AuthResult(False, None, "digest without qop=auth and MD5 is not accepted")
        username = params.get("username", "")
        nc_text, cnonce, uri = params.get("nc", ""), params.get("cnonce", ""), params.get("uri", "")
        if not re.fullmatch(r"[0-9a-fA-F]{8}", nc_text) or not cnonce or not uri:
            return AuthResult(False, None, "incomplete digest credentials")
        expected = digest_response(username=username, realm=self.realm, password=self._password,
                                   method=method, uri=uri, nonce=nonce, nc=nc_text, cnonce=cnonce)
        user_ok = hmac.compare_digest(username.encode("utf-8", "surrogateescape"), self.username.encode())
        response_ok = hmac.compare_digest(params.get("response", "").lower().encode(), expected.encode())
        if not (user_ok and response_ok):
            return AuthResult(False, None, f"wrong digest credentials (user {_shown(username)})")
        nc = int(nc_text, 16)
        if nc <= self._counts.get(nonce, 0):
            return AuthResult(False, None, "replayed digest credentials (nonce count reused)")
        self._counts[nonce] = nc
        self._counts.move_to_end(nonce)
        while len(self._counts) > _MAX_REPLAY_ENTRIES:
            self._counts.popitem(last=False)
        return AuthResult(True)


def _shown(text: str) -> str:
    """A peer-chosen string, safe for one log line."""
    clean = "".join(c if c.isprintable() else "?" for c in text[:40])
    return repr(clean + ("..." if len(text) > 40 else ""))
