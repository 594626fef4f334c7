"""Exact SIP requests as bytes, sent over UDP or TCP from 127.0.0.1, and the answers read back.

RawSip (rawsip.py) plays a well-formed user agent; this builds the packets a strict peer or an
attacker sends (framing errors, odd schemes, bodies that are not UTF-8) byte for byte.
"""

from __future__ import annotations

import re
import socket
import struct
import time
import uuid

from tests.faults.rawsip import header
from tests.faults.rawsip import status_of as status

__all__ = ["Wire", "header", "request", "rtp", "sdp", "status"]


def request(method: str, port: int, *, transport: str = "UDP", uri: str | None = None,
            headers: list[str] | None = None, body: bytes = b"", content_type: str | None = None,
            content_length: int | None = None, no_length: bool = False, cseq_method: str | None = None,
            to_tag: str = "", local_port: int = 5999) -> bytes:
    """One request; Content-Length is the body's unless given. `headers` go after the usual ones."""
    call_id = f"wire-{uuid.uuid4().hex}"
    lines = [
        f"{method} {uri or f'sip:bot@127.0.0.1:{port}'} SIP/2.0",
        f"Via: SIP/2.0/{transport} 127.0.0.1:{local_port};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport",
        f"From: <sip:wire@127.0.0.1:{local_port}>;tag={uuid.uuid4().hex[:8]}",
        f"To: <sip:bot@127.0.0.1:{port}>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: 1 {cseq_method or method}",
        f"Contact: <sip:wire@127.0.0.1:{local_port}>",
        "Max-Forwards: 70",
        *(headers or []),
    ]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    if not no_length:
        lines.append(f"Content-Length: {len(body) if content_length is None else content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def sdp(port: int = 40000, *, profile: str = "RTP/AVP", ip: str = "IP4 127.0.0.1", extra: str = "") -> bytes:
    return (
        f"v=0\r\no=wire 1 1 IN {ip}\r\ns=-\r\nc=IN {ip}\r\nt=0 0\r\n"
        f"m=audio {port} {profile} 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
        f"a=rtpmap:101 telephone-event/8000\r\n{extra}a=sendrecv\r\n"
    ).encode()


def rtp(seq: int, ts: int, ssrc: int, pt: int = 0, payload: bytes = b"\xff" * 160, first: int = 0x80,
        marker: bool = False) -> bytes:
    """One RTP packet (version 2 unless `first` says otherwise), PCMU silence by default."""
    return struct.pack("!BBHII", first, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF,
                       ssrc) + payload


class Wire:
    """A socket to the bridge's SIP port: UDP (bound to 127.0.0.1) or a TCP connection."""

    def __init__(self, port: int, transport: str = "UDP", sock: socket.socket | None = None) -> None:
        """A new socket from 127.0.0.1, or `sock` (bound, and connected for TCP) as it is."""
        self.port = port
        self.transport = transport
        if sock is not None:
            self.sock = sock
        elif transport == "UDP":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(("127.0.0.1", 0))
        else:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.local_port = self.sock.getsockname()[1]
        self._buffer = b""

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def request(self, method: str, **kwargs: object) -> bytes:
        return request(method, self.port, transport=self.transport, local_port=self.local_port,
                       **kwargs)  # type: ignore[arg-type]

    def send(self, data: bytes) -> None:
        if self.transport == "UDP":
            self.sock.sendto(data, ("127.0.0.1", self.port))
        else:
            self.sock.sendall(data)

    def answers(self, timeout: float = 3.0, *, until_final: bool = True) -> list[str]:
        """Responses (and requests) read within `timeout`; stops at the first final response."""
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if self.transport == "UDP":
                    data, _ = self.sock.recvfrom(65535)
                else:
                    data = self.sock.recv(65535)
                    if not data:
                        out.append("<closed>")
                        break
            except (TimeoutError, OSError):
                break
            for message in self._split(data):
                out.append(message)
            if until_final and any(status(m) >= 200 for m in out):
                break
        return out

    def _split(self, data: bytes) -> list[str]:
        if self.transport == "UDP":
            return [data.decode("utf-8", "replace")]
        self._buffer += data
        messages = []
        while b"\r\n\r\n" in self._buffer:
            head, _, rest = self._buffer.partition(b"\r\n\r\n")
            match = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
            length = int(match.group(1)) if match else 0
            if len(rest) < length:
                break
            messages.append((head + b"\r\n\r\n" + rest[:length]).decode("utf-8", "replace"))
            self._buffer = rest[length:]
        return messages

    def end_calls(self, answers: list[str]) -> None:
        """ACK and BYE every call a 2xx in `answers` set up, so none waits for Timer H."""
        for answer in answers:
            if not (200 <= status(answer) < 300 and "INVITE" in (header(answer, "CSeq") or "")):
                continue
            contact = re.search(r"<([^>]+)>", header(answer, "Contact") or "")
            target = contact.group(1) if contact else f"sip:bot@127.0.0.1:{self.port}"
            cseq = (header(answer, "CSeq") or "1").split()[0]
            for method, number in (("ACK", cseq), ("BYE", str(int(cseq) + 1 if cseq.isdigit() else 2))):
                lines = [f"{method} {target} SIP/2.0",
                         f"Via: SIP/2.0/{self.transport} 127.0.0.1:{self.local_port};"
                         f"branch=z9hG4bK{uuid.uuid4().hex[:12]}",
                         f"From: {header(answer, 'From')}", f"To: {header(answer, 'To')}",
                         f"Call-ID: {header(answer, 'Call-ID')}", f"CSeq: {number} {method}",
                         "Max-Forwards: 70", "Content-Length: 0"]
                self.send(("\r\n".join(lines) + "\r\n\r\n").encode())

    def exchange(self, data: bytes, timeout: float = 3.0) -> int:
        """Send, and return the final status (0: none within `timeout`)."""
        self.send(data)
        finals = [status(m) for m in self.answers(timeout) if status(m) >= 200]
        return finals[0] if finals else 0

