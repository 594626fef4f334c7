"""Garbage to a live call's media ports: malformed RTP and RTCP, bad RFC 4733 events, random
bytes, from the caller's own address and from a stranger. The call keeps streaming to the bot,
in order and on time, ends normally, and the bridge stays up."""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from tests.botlib import TestBot
from tests.faults.faultlib import record, start_bridge, undisturbed
from tests.faults.rawsip import RawSip, status_of
from tests.faults.wire import Wire, rtp

pytestmark = [pytest.mark.timeout(120)]


def garbage(rng: random.Random, seq: int) -> list[bytes]:
    """One round of bad packets of every kind."""
    ssrc = 0x1111
    return [
        rng.randbytes(rng.randrange(1, 400)),                       # random bytes
        rtp(seq, seq * 160, ssrc)[: rng.randrange(1, 12)],          # shorter than an RTP header
        rtp(seq, seq * 160, ssrc, first=0x40),                      # version 1
        rtp(seq, seq * 160, ssrc, first=0x8F, payload=b"\0" * 8),   # 15 CSRCs, 8 bytes of them
        rtp(seq, seq * 160, ssrc, first=0x90, payload=b"\xbe\xde\xff\xff"),  # extension past the end
        rtp(seq, seq * 160, ssrc, first=0xA0, payload=b"\xff" * 10 + b"\xf0"),  # padding > packet
        rtp(seq, seq * 160, ssrc, pt=77),                           # a payload type never offered
        rtp(seq, seq * 160, ssrc, pt=101, payload=b""),             # telephone-event without a body
        rtp(seq, seq * 160, ssrc, pt=101, payload=b"\xff\x80"),     # ... cut short
        rtp(seq, seq * 160, ssrc, pt=101, payload=bytes([255, 0x80, 0xFF, 0xFF])),  # event 255, end
        rtp(seq, rng.randrange(1 << 32), ssrc, pt=101, payload=bytes([rng.randrange(16), 0, 0, 1]),
            marker=True),                                           # a digit at a random timestamp
        rtp(rng.randrange(1 << 16), rng.randrange(1 << 32), rng.randrange(1 << 32)),  # a new SSRC
    ]


def rtcp_garbage(rng: random.Random) -> list[bytes]:
    return [
        rng.randbytes(rng.randrange(1, 200)),
        struct.pack("!BBH", 0x80, 200, 0xFFFF) + b"\0" * 20,        # SR whose length runs past the end
        struct.pack("!BBH", 0x9F, 201, 1) + b"\0" * 4,              # RR claiming 31 reports
        struct.pack("!BBHI", 0x81, 203, 1, 0x1111),                 # BYE for the caller's SSRC
        struct.pack("!BBH", 0x81, 202, 0) ,                         # SDES of length 0
    ]


def test_garbage_to_a_live_calls_media_ports_does_not_disturb_its_stream(tmp_path: Path) -> None:
    rng = random.Random(4733)
    with TestBot() as bot:
        bridge = start_bridge(tmp_path, bot.url)
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stranger.bind(("127.0.0.2", 0))
        try:
            with RawSip(bridge.sip_port) as raw:
                dialog, answer = raw.invite()
                assert status_of(answer) == 200
                port = int(answer.split("m=audio ", 1)[1].split()[0])
                stop = threading.Event()

                def caller_audio() -> None:  # the caller's own stream, paced, all along
                    seq, start = 0, time.monotonic()
                    while not stop.is_set():
                        raw.rtp.sendto(rtp(seq, seq * 160, 0x1111), ("127.0.0.1", port))
                        seq += 1
                        time.sleep(max(0.0, start + seq * 0.02 - time.monotonic()))

                sender = threading.Thread(target=caller_audio, daemon=True)
                sender.start()
                sent = 0
                try:
                    time.sleep(1.0)
                    for round_ in range(150):  # 3 s of garbage, every 20 ms
                        for packet in garbage(rng, 10_000 + round_):
                            raw.rtp.sendto(packet, ("127.0.0.1", port))  # from the caller's address
                            stranger.sendto(packet, ("127.0.0.1", port))
                            sent += 2
                        for packet in rtcp_garbage(rng):
                            raw.rtp.sendto(packet, ("127.0.0.1", port + 1))
                            stranger.sendto(packet, ("127.0.0.1", port + 1))
                            sent += 2
                        time.sleep(0.02)
                    time.sleep(1.0)
                finally:
                    stop.set()
                    sender.join(2)
                bye = raw.in_dialog(dialog, "BYE")
            stream = bot.wait_closed()
            summary = bridge.wait_summaries()[0]
            with Wire(bridge.sip_port) as wire:
                options = wire.exchange(wire.request("OPTIONS"))
        finally:
            stranger.close()
            rc = bridge.stop()
    assert status_of(bye) == 200
    assert undisturbed(stream, seconds=4.5), stream.names[:5]
    assert summary["end_cause"] == "caller_hangup", summary
    assert options == 200 and rc == 0
    record("network", "garbage RTP/RTCP/RFC 4733 to a live call (caller's address and a stranger's)",
           injected=sent, bad_inputs=sent)
