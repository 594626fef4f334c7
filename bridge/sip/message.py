"""Pure helpers for the bits of SIP text the bridge reads itself (headers of an INVITE, URIs)."""

from __future__ import annotations

import re

# RFC 3261 section 7.3.3 compact forms.
_COMPACT = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
}

_URI_USER = re.compile(r"<?\s*(?:sips?|tel):(?:([^@;>?]+)@)?([^;>?]*)", re.IGNORECASE)


def parse_headers(message: str) -> list[tuple[str, str]]:
    """Header (name, value) pairs of a SIP message in order; folded lines are joined.

    Tolerant by design: lines without a colon are skipped, never raised on, because this runs on
    whatever a peer sends.
    """
    head = message.split("\r\n\r\n", 1)[0].split("\n\n", 1)[0]
    lines = head.replace("\r\n", "\n").split("\n")[1:]  # drop the request line
    headers: list[tuple[str, str]] = []
    for line in lines:
        if not line:
            continue
        if line[0] in " \t" and headers:
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name = name.strip()
        if not name:
            continue
        headers.append((_COMPACT.get(name.lower(), name) if len(name) == 1 else name, value.strip()))
    return headers


def uri_user(uri: str) -> str:
    """The user part of a SIP URI or name-addr (the phone number, usually); the URI if it has none."""
    match = _URI_USER.search(uri)
    if match is None:
        return uri.strip()
    user = match.group(1)
    if user:
        return user
    if match.group(0).lstrip("< ").lower().startswith("tel:"):
        return match.group(2)  # a tel: URI is all number
    return uri.strip().strip("<>")


def uri_host(uri: str) -> str:
    """The host[:port] part of a SIP URI."""
    match = _URI_USER.search(uri)
    return match.group(2) if match else ""


def printable(text: str) -> str:
    """`text` with any bytes that were not UTF-8 on the wire (lone surrogates, as the SIP stack
    hands them over) replaced by U+FFFD, so it can be logged, put in JSON and encoded anywhere."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text


def message_body(message: str) -> str:
    """What follows the header block of a SIP message."""
    for separator in ("\r\n\r\n", "\n\n"):
        _, found, body = message.partition(separator)
        if found:
            return body
    return ""
