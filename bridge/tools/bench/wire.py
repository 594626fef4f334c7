"""What the benchmark sees on the wire, read from dumpcap's classic pcap files of loopback.

Frame health is judged on the wire in both directions, so the figures are the bridge's alone:
- toward callers, the RTP the bridge sends (capture time and RTP sequence per source port);
- toward the bot, the `media` events the bridge writes to its WebSockets (capture time of the
  segment that completed each frame, and the event's `timestamp`, per bridge-side TCP port).

The load bot also times the media it receives, but its own event loop (one Python process reading
hundreds of streams) adds tens of milliseconds when a large batch of messages arrives at once;
measured on the wire, its scheduling is out of the figure.

Pure functions over bytes and lists: no capture is started here.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Hashable, Iterator, Mapping
from itertools import pairwise
from pathlib import Path
from typing import TypeVar

from bridge.audio.framing import FRAME_MS
from bridge.ws.fastpath import MESSAGE, FrameSplitter

StreamKey = TypeVar("StreamKey", bound=Hashable)

__all__ = ["LATE_MS", "media_pacing", "pacing", "pcap_ipv4", "read_pcap_rtp", "read_pcap_ws_media",
           "sample_modulus"]

# Later than its stream's typical lag by more than a frame: late (on the wire and in the load bot).
LATE_MS = float(FRAME_MS)
_TIMESTAMP = re.compile(r'"timestamp":"(\d+)"')
_MEDIA_PREFIX = '{"event":"media"'
_TCP_SYN = 0x02


def sample_modulus(calls: int, streams_wanted: int = 16) -> int:
    """An odd n such that about `streams_wanted` of `calls` streams have a TCP source port that is
    a multiple of n (1: every stream). Odd, because the kernel's ephemeral ports for connect() are
    even and often share more low bits than that."""
    n = max(1, calls // max(1, streams_wanted))
    return n if n % 2 else n + 1


def pcap_ipv4(path: Path) -> Iterator[tuple[float, bytes]]:
    """(capture time, IPv4 packet) for each IPv4 packet in a classic pcap file."""
    data = path.read_bytes()
    if len(data) < 24:
        return
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    nano = magic in (0xA1B23C4D, 0x4D3CB2A1)
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    offset = 24
    link_len = {1: 14, 113: 16, 276: 20}.get(linktype, 14)
    header = struct.Struct(endian + "IIII")
    while offset + 16 <= len(data):
        sec, frac, incl, _ = header.unpack_from(data, offset)
        packet = data[offset + 16 : offset + 16 + incl]
        offset += 16 + incl
        ip = packet[link_len:]
        if len(ip) >= 20 and ip[0] >> 4 == 4:
            yield sec + frac / (1e9 if nano else 1e6), ip


def read_pcap_rtp(path: Path) -> dict[tuple[int, int], list[tuple[float, int]]]:
    """(capture time, RTP sequence) per stream (UDP source port, SSRC), from a classic pcap of
    loopback. A port is reused by later calls when calls come and go (`--hold`): the SSRC tells
    one call's stream from the next one's."""
    streams: dict[tuple[int, int], list[tuple[float, int]]] = {}
    for t, ip in pcap_ipv4(path):
        if ip[9] != 17:
            continue
        udp = ip[(ip[0] & 0x0F) * 4 :]
        if len(udp) < 20 or udp[8] >> 6 != 2 or 200 <= udp[9] <= 204:
            continue  # not RTP version 2, or RTCP (payload types 200-204)
        src_port = struct.unpack(">H", udp[:2])[0]
        seq = struct.unpack(">H", udp[10:12])[0]
        ssrc = struct.unpack(">I", udp[16:20])[0]
        streams.setdefault((src_port, ssrc), []).append((t, seq))
    return streams


def pacing(streams: Mapping[StreamKey, list[tuple[float, int]]]) -> dict[str, float]:
    """Late (more than a frame behind the stream's own schedule) and missing 20 ms packets."""
    late = missing = total = 0
    for packets in streams.values():
        if len(packets) < 10:
            continue
        t0, last = packets[0]
        lags = []
        highest = 0  # packets since the first one, with the 16-bit sequence unwrapped
        seen = set()
        for t, seq in packets:
            # The sequence wraps every 65536 packets (21.8 minutes of 20 ms frames): count steps,
            # not absolute values. A step back (reordered, duplicated) is placed where it belongs.
            step = (seq - last) % 65536
            if step >= 32768:
                step -= 65536
            index = highest + step
            if step > 0:
                highest, last = index, seq
            seen.add(index)
            lags.append((t - t0) * 1000.0 - index * float(FRAME_MS))
        missing += highest + 1 - len(seen)
        late += _late(lags)
        total += len(lags)
    return _figures("packets", total, late, missing)


class _WsStream:
    """One bridge-to-bot TCP stream being put back together: its HTTP upgrade, then its frames
    (cut and unmasked by the bridge's own FrameSplitter, as a server reads a client)."""

    __slots__ = ("broken", "events", "handshake", "next_seq", "splitter")

    def __init__(self, next_seq: int) -> None:
        self.next_seq = next_seq
        self.handshake: bytearray | None = bytearray()  # None once the upgrade request is read
        self.splitter = FrameSplitter(None, masked=True)
        self.broken = False
        self.events: list[tuple[float, int]] = []

    def add(self, t: float, seq: int, payload: bytes) -> None:
        skip = (self.next_seq - seq) % (1 << 32)
        if skip >= 1 << 31:  # bytes missing from the capture: the frame boundaries are lost
            self.broken = True
            return
        if skip >= len(payload):
            return  # a retransmission of bytes already taken
        self.next_seq = (seq + len(payload)) % (1 << 32)
        data = payload[skip:]
        if self.handshake is not None:
            self.handshake += data
            end = self.handshake.find(b"\r\n\r\n")
            if end < 0:
                return
            data = bytes(self.handshake[end + 4 :])
            self.handshake = None
        for kind, message in self.splitter.feed(data):
            if kind == MESSAGE and isinstance(message, str) and message.startswith(_MEDIA_PREFIX):
                found = _TIMESTAMP.search(message)
                if found:
                    self.events.append((t, int(found.group(1))))


def read_pcap_ws_media(path: Path, port: int) -> dict[tuple[int, int], list[tuple[float, int]]]:
    """(capture time, media `timestamp` in ms) of each `media` event sent to TCP `port`, per
    connection (sending port, and which connection from that port: a later call may reuse it).
    A stream whose start was not captured, or with bytes missing, is left out."""
    streams: dict[int, _WsStream] = {}
    done: list[tuple[tuple[int, int], _WsStream]] = []
    opened: dict[int, int] = {}
    for t, ip in pcap_ipv4(path):
        if ip[9] != 6:
            continue
        ip_len = (ip[0] & 0x0F) * 4
        tcp = ip[ip_len:]
        if len(tcp) < 20 or struct.unpack(">H", tcp[2:4])[0] != port:
            continue
        src_port = struct.unpack(">H", tcp[:2])[0]
        seq = struct.unpack(">I", tcp[4:8])[0]
        total = struct.unpack(">H", ip[2:4])[0]
        payload = tcp[(tcp[12] >> 4) * 4 : total - ip_len]
        if tcp[13] & _TCP_SYN:
            previous = streams.get(src_port)
            if previous is not None:
                done.append(((src_port, opened[src_port]), previous))
            opened[src_port] = opened.get(src_port, 0) + 1
            streams[src_port] = _WsStream((seq + 1) % (1 << 32))
            continue
        stream = streams.get(src_port)
        if stream is not None and payload and not stream.broken:
            stream.add(t, seq, payload)
    done.extend(((src_port, opened[src_port]), stream) for src_port, stream in streams.items())
    return {key: s.events for key, s in done if not s.broken and s.events}


def media_pacing(streams: Mapping[StreamKey, list[tuple[float, int]]]) -> dict[str, float]:
    """Late media events (more than a frame behind their stream's own clock) and missing ones
    (a jump in `timestamp` of more than one chunk), toward the bot."""
    late = missing = total = 0
    for events in streams.values():
        if len(events) < 10:
            continue
        steps = sorted(b[1] - a[1] for a, b in pairwise(events))
        chunk = max(1, steps[len(steps) // 2])
        t0, ts0 = events[0]
        lags = [(t - t0) * 1000.0 - (ts - ts0) for t, ts in events]
        for (_, before), (_, after) in pairwise(events):
            if after - before > chunk * 1.5:
                missing += round((after - before) / chunk) - 1
        late += _late(lags)
        total += len(events)
    return _figures("events", total, late, missing)


def _figures(counted: str, total: int, late: int, missing: int) -> dict[str, float]:
    return {
        counted: total,
        "late": late,
        "missing": missing,
        "late_pct": round(100.0 * (late + missing) / total, 3) if total else 0.0,
    }


def _late(lags: list[float]) -> int:
    base = sorted(lags)[len(lags) // 2]
    return sum(1 for lag in lags if lag - base > LATE_MS)
