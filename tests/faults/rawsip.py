"""A hand-written SIP user agent over UDP on 127.0.0.1, for messages no real UA would send.

It builds requests from plain text, so tests can send exactly what an attacker or a broken peer
would (Replaces, REFER to anywhere, junk) and read the bridge's exact answer.
"""

from __future__ import annotations

import itertools
import re
import socket
import time
import uuid
from dataclasses import dataclass, field

_branches = itertools.count(1)


def sdp(rtp_port: int, codec: str = "0 PCMU/8000", direction: str = "sendrecv", ip: str = "127.0.0.1") -> str:
    pt, name = codec.split(" ", 1)
    return (
        f"v=0\r\no=raw 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
        f"m=audio {rtp_port} RTP/AVP {pt} 101\r\na=rtpmap:{pt} {name}\r\n"
        f"a=rtpmap:101 telephone-event/8000\r\na={direction}\r\n"
    )


def status_of(message: str) -> int:
    match = re.match(r"SIP/2\.0 (\d{3})", message)
    return int(match.group(1)) if match else 0


def header(message: str, name: str) -> str | None:
    for line in message.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


@dataclass
class Dialog:
    call_id: str
    from_tag: str
    to_tag: str = ""
    remote_target: str = ""
    cseq: int = 1
    to_header: str = ""
    invite_branch: str = ""
    responses: list[str] = field(default_factory=list)


class RawSip:
    def __init__(self, bridge_port: int, bridge_host: str = "127.0.0.1", local_ip: str = "127.0.0.1") -> None:
        self.bridge = (bridge_host, bridge_port)
        self.ip = local_ip
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((local_ip, 0))
        self.port = self.sock.getsockname()[1]
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # where the bridge's RTP goes
        self.rtp.bind((local_ip, 0))
        self.rtp_port = self.rtp.getsockname()[1]
        self.received: list[str] = []

    def close(self) -> None:
        self.sock.close()
        self.rtp.close()

    def __enter__(self) -> RawSip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- raw ---------------------------------------------------------------------------

    def send(self, data: str | bytes) -> None:
        self.sock.sendto(data.encode() if isinstance(data, str) else data, self.bridge)

    def recv(self, timeout: float) -> str | None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data, _ = self.sock.recvfrom(65535)
        except (TimeoutError, OSError):
            return None
        text = data.decode("utf-8", "replace")
        self.received.append(text)
        return text

    # ---- requests ------------------------------------------------------------------------

    def request(
        self,
        method: str,
        dialog: Dialog,
        *,
        uri: str | None = None,
        body: str = "",
        extra: dict[str, str] | None = None,
        content_type: str = "application/sdp",
        branch: str | None = None,
    ) -> str:
        uri = uri or dialog.remote_target or f"sip:bot@{self.bridge[0]}:{self.bridge[1]}"
        to = dialog.to_header or f"<sip:bot@{self.bridge[0]}:{self.bridge[1]}>"
        cseq_method = "INVITE" if method == "ACK" else method
        branch = branch or f"z9hG4bK-raw-{next(_branches)}-{uuid.uuid4().hex[:8]}"
        if method == "INVITE":
            dialog.invite_branch = branch
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.ip}:{self.port};branch={branch};rport",
            f"From: <sip:raw@{self.ip}:{self.port}>;tag={dialog.from_tag}",
            f"To: {to}",
            f"Call-ID: {dialog.call_id}",
            f"CSeq: {dialog.cseq} {cseq_method}",
            f"Contact: <sip:raw@{self.ip}:{self.port}>",
            "Max-Forwards: 70",
        ]
        lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
        if body:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body.encode())}")
        text = "\r\n".join(lines) + "\r\n\r\n" + body
        self.send(text)
        return text

    def final(self, dialog: Dialog, method: str, timeout: float = 10.0) -> str:
        """The final response to the last `method` request of `dialog` (provisionals skipped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.recv(deadline - time.monotonic())
            if message is None:
                break
            if header(message, "Call-ID") != dialog.call_id:
                continue
            if not message.startswith("SIP/2.0"):
                self._answer_request(message)
                continue
            cseq = header(message, "CSeq") or ""
            if not cseq.endswith(method) or status_of(message) < 200:
                continue
            dialog.responses.append(message)
            return message
        raise TimeoutError(f"no final answer to {method} within {timeout} s; got {self.received[-3:]}")

    def _answer_request(self, request: str) -> None:
        """200 to in-dialog requests from the bridge (BYE, NOTIFY), so it is not left waiting."""
        self.reply(request, 200, "OK")

    def reply(self, request: str, code: int, reason: str) -> None:
        head = request.split("\r\n\r\n", 1)[0].split("\r\n")
        names = ("via", "from", "to", "call-id", "cseq")
        keep = [ln for ln in head[1:] if ln.split(":", 1)[0].strip().lower() in names]
        self.send(f"SIP/2.0 {code} {reason}\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n")

    def wait_request(self, method: str, timeout: float = 10.0) -> str:
        """The next request `method` from the bridge (other requests are answered 200)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.recv(deadline - time.monotonic())
            if message is None:
                break
            if message.startswith(f"{method} "):
                return message
            if not message.startswith("SIP/2.0"):
                self._answer_request(message)
        raise TimeoutError(f"no {method} within {timeout} s")

    def invite(
        self, *, extra: dict[str, str] | None = None, body: str | None = None, timeout: float = 15.0
    ) -> tuple[Dialog, str]:
        dialog = Dialog(call_id=f"raw-{uuid.uuid4().hex}", from_tag=uuid.uuid4().hex[:10])
        self.request(
            "INVITE", dialog, body=sdp(self.rtp_port, ip=self.ip) if body is None else body, extra=extra
        )
        answer = self.final(dialog, "INVITE", timeout)
        to = header(answer, "To") or ""
        dialog.to_header = to
        match = re.search(r";tag=([^;>\s]+)", to)
        dialog.to_tag = match.group(1) if match else ""
        contact = header(answer, "Contact") or ""
        match = re.search(r"<([^>]+)>", contact)
        if status_of(answer) < 300 and match:
            dialog.remote_target = match.group(1)
            self.request("ACK", dialog, uri=dialog.remote_target)
        else:  # the ACK of a failed INVITE belongs to its transaction: same branch, same URI
            self.request("ACK", dialog, branch=dialog.invite_branch)
        return dialog, answer

    def in_dialog(
        self,
        dialog: Dialog,
        method: str,
        *,
        extra: dict[str, str] | None = None,
        body: str = "",
        timeout: float = 10.0,
        content_type: str = "application/sdp",
    ) -> str:
        dialog.cseq += 1
        self.request(method, dialog, body=body, extra=extra, content_type=content_type)
        return self.final(dialog, method, timeout)

    def invite_burst(self, count: int, timeout: float = 15.0) -> dict[str, str]:
        """`count` INVITEs in new dialogs as fast as possible: Call-ID -> final response."""
        dialogs: dict[str, Dialog] = {}
        for i in range(count):
            dialog = Dialog(call_id=f"burst-{uuid.uuid4().hex}", from_tag=uuid.uuid4().hex[:10])
            dialogs[dialog.call_id] = dialog
            self.request("INVITE", dialog, body=sdp(self.rtp_port, ip=self.ip))
            if i % 25 == 24:
                time.sleep(0.02)  # ~1000/s: fast, but within what a socket buffer holds
        finals: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while len(finals) < count and time.monotonic() < deadline:
            message = self.recv(deadline - time.monotonic())
            if message is None:
                break
            call_id = header(message, "Call-ID") or ""
            dialog = dialogs.get(call_id)
            if dialog is None or not message.startswith("SIP/2.0") or status_of(message) < 200:
                continue
            if call_id not in finals:
                finals[call_id] = message
                dialog.to_header = header(message, "To") or ""
                self.request("ACK", dialog, branch=dialog.invite_branch)
        return finals
