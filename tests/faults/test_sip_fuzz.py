"""A bounded mutation fuzzer against a running bridge: SIP messages over UDP and TCP (whole,
partial and slow), from an allowed and a disallowed source, checked for liveness every few
hundred inputs; file descriptors, RSS and free call slots must come back to their baseline.

CI sends SIPWSB_SIP_FUZZ inputs (default 2000); `-m slow` runs 10^5:
    SIPWSB_SIP_FUZZ=100000 .venv/bin/python -m pytest -m slow tests/faults/test_sip_fuzz.py
Every input is derived from a seeded random generator: a failure names its seed and index, and
the exact bytes are written next to the test's log (fuzz-last.bin) for a regression test.
"""

from __future__ import annotations

import os
import random
import socket
import time
import uuid
from pathlib import Path

import pytest

from tests.botlib import TestBot
from tests.bridgelib import BridgeProcess, run_test_caller
from tests.faults.faultlib import record, rss_mb, start_bridge
from tests.faults.wire import Wire, sdp

pytestmark = [pytest.mark.timeout(900)]

CI_INPUTS = int(os.environ.get("SIPWSB_SIP_FUZZ", "2000"))
LIVENESS_EVERY = 250


def seeds(port: int, rtp_port: int) -> list[bytes]:
    """Valid messages the mutations start from."""
    def req(method: str, body: bytes = b"", ctype: str | None = None,
            extra: list[str] | None = None) -> bytes:
        call_id = uuid.uuid4().hex
        lines = [f"{method} sip:bot@127.0.0.1:{port} SIP/2.0",
                 f"Via: SIP/2.0/UDP 127.0.0.1:5998;branch=z9hG4bK{call_id[:12]};rport",
                 f"From: <sip:fuzz@127.0.0.1:5998>;tag={call_id[:6]}", f"To: <sip:bot@127.0.0.1:{port}>",
                 f"Call-ID: fuzz-{call_id}", f"CSeq: 1 {method}", "Contact: <sip:fuzz@127.0.0.1:5998>",
                 "Max-Forwards: 70", *(extra or [])]
        if ctype:
            lines.append(f"Content-Type: {ctype}")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    many_lines = b"".join(b"m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n" % (rtp_port + 2 * i)
                          for i in range(300))
    multipart = (b"--x\r\nContent-Type: application/sdp\r\n\r\n" + sdp(rtp_port) +
                 b"\r\n--x\r\nContent-Type: multipart/mixed;boundary=y\r\n\r\n--y\r\n"
                 b"Content-Type: application/rs-metadata+xml\r\n\r\n<recording/>\r\n--y--\r\n--x--\r\n")
    return [
        req("INVITE", sdp(rtp_port), "application/sdp"),
        req("INVITE"),
        req("INVITE", sdp(rtp_port, extra="a=fmtp:101 0-1x5\r\na=rtpmap:101 telephone-event/0\r\n"),
            "application/sdp"),
        req("INVITE", sdp(rtp_port).split(b"m=audio")[0] + many_lines, "application/sdp"),
        req("INVITE", multipart, "multipart/mixed;boundary=x", ["Require: siprec"]),
        req("OPTIONS"),
        req("REGISTER", extra=["Expires: 60"]),
        req("BYE"),
        req("INFO", b"Signal=5\r\nDuration=160\r\n", "application/dtmf-relay"),
        req("NOTIFY", extra=["Event: refer"]),
    ]


def mutate(rng: random.Random, message: bytes) -> bytes:
    """One or a few mutations of the kinds the robustness issue lists."""
    data = bytearray(message)
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(11)
        head, _, body = bytes(data).partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        if kind == 0 and data:  # bit flips
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(len(data))
                data[i] ^= 1 << rng.randrange(8)
            continue
        if kind == 1 and len(lines) > 1:  # a header duplicated, many times
            line = lines[rng.randrange(1, len(lines))]
            lines[1:1] = [line] * rng.choice([2, 10, 200])
        elif kind == 2 and len(lines) > 1:  # an oversized header
            lines.insert(rng.randrange(1, len(lines)), b"X-Big: " + b"A" * rng.choice([1000, 4000, 20000]))
        elif kind == 3:  # truncated anywhere
            data = bytearray(bytes(data)[: rng.randrange(max(1, len(data)))])
            continue
        elif kind == 4:  # oversized body
            body = body + b"x" * rng.choice([100, 5000, 60000])
        elif kind == 5:  # wrong or several Content-Length
            lines = [ln for ln in lines if not ln.lower().startswith(b"content-length")]
            for _ in range(rng.randint(1, 3)):
                lines.append(b"Content-Length: %d" % rng.choice([0, 1, len(body) + 5, 99999, -1]))
        elif kind == 6 and data:  # NUL and bytes that are not UTF-8
            i = rng.randrange(len(data))
            data[i:i] = rng.choice([b"\x00", b"\xc3\x28", b"\xff\xfe", b"\xed\xa0\x80"])
            continue
        elif kind == 7:  # nested multipart with an odd boundary
            lines = [ln for ln in lines if not ln.lower().startswith(b"content-type")]
            boundary = rng.choice([b"", b"x", b"\"\"", b"a" * 80])
            lines.append(b"Content-Type: multipart/mixed;boundary=" + boundary)
            body = b"--" + boundary + b"\r\n" + body * rng.randint(1, 3) + b"\r\n--" + boundary + b"--"
        elif kind == 8:  # bad rtpmap / fmtp / telephone-event
            body += rng.choice([b"a=rtpmap:101 telephone-event/8000/9999\r\n", b"a=rtpmap:x\r\n",
                                b"a=fmtp:101 \xff\r\n", b"a=rtpmap:96 telephone-event/-1\r\n",
                                b"m=audio 0 RTP/AVP\r\n", b"c=IN IP4 999.1.1.1\r\n"])
        elif kind == 9 and len(lines) > 1:  # a header removed
            del lines[rng.randrange(1, len(lines))]
        elif kind == 10:  # the request line bent
            lines[0] = rng.choice([b"INVITE sip: SIP/2.0", b"INVITE tel:+1 SIP/2.0", b"FOO bar SIP/9.9",
                                   b"INVITE sip:bot@[::1 SIP/2.0", lines[0] + b" extra"])
        data = bytearray(b"\r\n".join(lines) + b"\r\n\r\n" + body)
    return bytes(data)


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _alive(bridge: BridgeProcess, where: str) -> None:
    assert bridge.proc is not None
    assert bridge.proc.poll() is None, f"bridge died {where}:\n{bridge.log_text()[-4000:]}"
    with Wire(bridge.sip_port) as wire:
        for _ in range(3):
            if wire.exchange(wire.request("OPTIONS"), timeout=3.0) == 200:
                return
    raise AssertionError(f"no answer to OPTIONS {where}")


def run_fuzz(tmp_path: Path, inputs: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    with TestBot() as bot:
        bridge = start_bridge(tmp_path, bot.url, {"sip": {"allow_from": ["127.0.0.1"], "max_calls": 20,
                                                          "rate_limit": {"invites_per_second": 1000,
                                                                         "burst": 1000}},
                                                  "bot": {"connect_timeout": 2}})
        assert bridge.proc is not None
        pid = bridge.proc.pid
        try:
            assert run_test_caller(bridge.uri, tmp_path, hold=0.3)["answered"]  # warm-up
            time.sleep(1.0)
            fds0, rss0 = _open_fds(pid), rss_mb(pid)
            rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rtp.bind(("127.0.0.1", 0))
            corpus = seeds(bridge.sip_port, rtp.getsockname()[1])
            last = tmp_path / "fuzz-last.bin"
            for i in range(inputs):
                source = "127.0.0.1" if i % 3 else "127.0.0.3"  # a third from outside allow_from
                transport = "TCP" if i % 5 == 4 else "UDP"
                packet = mutate(rng, rng.choice(corpus))
                last.write_bytes(packet)
                if transport == "UDP":
                    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                        sock.bind((source, 0))
                        wire = Wire(bridge.sip_port, "UDP", sock)
                        if len(packet) <= 65000:
                            sock.sendto(packet, ("127.0.0.1", bridge.sip_port))
                        wire.end_calls(wire.answers(0.02 if i % 10 else 0.3))
                else:
                    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                        sock.bind((source, 0))
                        sock.settimeout(2)
                        try:
                            sock.connect(("127.0.0.1", bridge.sip_port))
                            if i % 2:  # partial and slow
                                for k in range(0, len(packet), 700):
                                    sock.sendall(packet[k:k + 700])
                                    time.sleep(0.002)
                            else:
                                sock.sendall(packet)
                            wire = Wire(bridge.sip_port, "TCP", sock)
                            wire.end_calls(wire.answers(0.1))
                        except OSError:
                            pass  # the bridge closed a connection it could not frame: allowed
                if i % LIVENESS_EVERY == LIVENESS_EVERY - 1:
                    _alive(bridge, f"after input {i} (seed {seed}; bytes in {last})")
            rtp.close()
            _alive(bridge, "after the run")
            # Calls set up along the way end (BYE sent; a 2xx never ACKed ends at Timer H).
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                if _open_fds(pid) <= fds0 + 2 and run_test_caller(bridge.uri, tmp_path, hold=0.2)["answered"]:
                    break
                time.sleep(2)
            fds1, rss1 = _open_fds(pid), rss_mb(pid)
            answered = run_test_caller(bridge.uri, tmp_path, hold=0.3)["answered"]
        finally:
            rc = bridge.stop()
    assert rc == 0, f"exit status {rc}:\n{bridge.log_text()[-3000:]}"
    assert answered
    assert fds1 <= fds0 + 2, f"descriptors {fds0} -> {fds1}"
    assert rss1 - rss0 < 30, f"RSS {rss0:.1f} -> {rss1:.1f} MB"
    return {"fds0": fds0, "fds1": fds1, "rss0": rss0, "rss1": rss1}


def test_mutated_sip_never_stops_the_bridge_and_leaves_nothing_behind(tmp_path: Path) -> None:
    figures = run_fuzz(tmp_path, CI_INPUTS, seed=20261207)
    record("fuzz", f"{CI_INPUTS} mutated SIP messages (UDP/TCP, allowed/not)", injected=CI_INPUTS,
           bad_inputs=CI_INPUTS,
           baseline=f"ok (fds {figures['fds0']:.0f}->{figures['fds1']:.0f}, "
                    f"RSS {figures['rss1'] - figures['rss0']:+.0f} MB)")


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_mutated_sip_long_run(tmp_path: Path) -> None:
    run_fuzz(tmp_path, int(os.environ.get("SIPWSB_SIP_FUZZ_SLOW", "100000")), seed=7)
