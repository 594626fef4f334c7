"""The benchmark's on-the-wire check toward the bot: media events put back together from a pcap of
the bridge's WebSocket streams (masked client frames, split and merged TCP segments)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from bridge.tools.bench.wire import media_pacing, pacing, read_pcap_rtp, read_pcap_ws_media, sample_modulus
from bridge.ws.frames import masked_text_frame

BOT_PORT = 8766


def media_frame(ts: int, seq: int) -> bytes:
    text = json.dumps({"event": "media", "sequence_number": str(seq), "stream_sid": "MZ1",
                       "media": {"chunk": str(seq), "timestamp": str(ts), "payload": "AAAA" * 54}},
                      separators=(",", ":"))
    return masked_text_frame(text.encode(), bytes((seq % 256, 7, 9, 11)))


def mark_frame() -> bytes:
    return masked_text_frame(b'{"event":"mark","stream_sid":"MZ1","mark":{"name":"m1"}}', b"\x01\x02\x03\x04")


def tcp_packet(src: int, seq: int, payload: bytes, *, syn: bool = False) -> bytes:
    tcp = struct.pack(">HHIIBBHHH", src, BOT_PORT, seq, 0, 5 << 4, 0x02 if syn else 0x18, 65535, 0, 0)
    total = 20 + len(tcp) + len(payload)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, 6, 0, b"\x7f\0\0\1", b"\x7f\0\0\1")
    return b"\0" * 12 + b"\x08\x00" + ip + tcp + payload  # Ethernet header, as dumpcap writes lo


def write_pcap(path: Path, packets: list[tuple[float, bytes]]) -> None:
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
    for t, packet in packets:
        out += struct.pack("<IIII", int(t), round((t % 1) * 1e6), len(packet), len(packet)) + packet
    path.write_bytes(bytes(out))


class Stream:
    """One bridge-side TCP stream being written into the capture."""

    def __init__(self, src: int, start: float, packets: list[tuple[float, bytes]]) -> None:
        self.src = src
        self.seq = 1000
        self.packets = packets
        packets.append((start, tcp_packet(src, self.seq, b"", syn=True)))
        self.seq += 1
        self.send(start, b"GET /bench HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")

    def send(self, t: float, data: bytes) -> None:
        self.packets.append((t, tcp_packet(self.src, self.seq, data)))
        self.seq += len(data)


def test_media_events_are_read_back_across_split_merged_and_repeated_segments(tmp_path: Path) -> None:
    packets: list[tuple[float, bytes]] = []
    steady = Stream(40000, 100.0, packets)
    for i in range(50):
        steady.send(100.1 + i * 0.020, media_frame(i * 20, i))
    messy = Stream(40002, 100.0, packets)
    t = 100.1
    frames = [media_frame(i * 20, i) for i in range(50)]
    messy.send(t, frames[0] + mark_frame())  # two frames in one segment
    half = len(frames[1]) // 2
    messy.send(t + 0.020, frames[1][:half])  # a frame split over two segments
    messy.send(t + 0.021, frames[1][half:])
    resent = tcp_packet(40002, messy.seq - len(frames[1]) + half, frames[1][half:])
    packets.append((t + 0.022, resent))  # a retransmission of the second half
    for i in range(2, 50):
        messy.send(t + i * 0.020 + (0.045 if i == 30 else 0.0), frames[i])  # event 30 is 45 ms late
    write_pcap(tmp_path / "ws.pcap", packets)

    streams = read_pcap_ws_media(tmp_path / "ws.pcap", BOT_PORT)

    assert [ts for _, ts in streams[40000, 1]] == [i * 20 for i in range(50)]
    assert [ts for _, ts in streams[40002, 1]] == [i * 20 for i in range(50)]
    assert streams[40002, 1][1][0] == pytest.approx(100.121)  # completed by its second half
    assert media_pacing(streams) == {"events": 100, "late": 1, "missing": 0, "late_pct": 1.0}


def test_missing_events_count_and_a_stream_with_bytes_missing_is_left_out(tmp_path: Path) -> None:
    packets: list[tuple[float, bytes]] = []
    gappy = Stream(40000, 100.0, packets)
    for i in range(50):
        if i not in (10, 11):  # the bridge skipped two chunks of audio
            gappy.send(100.1 + i * 0.020, media_frame(i * 20, i))
    torn = Stream(40002, 100.0, packets)
    for i in range(50):
        frame = media_frame(i * 20, i)
        if i == 25:
            torn.seq += len(frame)  # these bytes never made it into the capture
            continue
        torn.send(100.1 + i * 0.020, frame)
    write_pcap(tmp_path / "ws.pcap", packets)

    streams = read_pcap_ws_media(tmp_path / "ws.pcap", BOT_PORT)

    assert list(streams) == [(40000, 1)]
    assert media_pacing(streams) == {"events": 48, "late": 0, "missing": 2, "late_pct": 4.167}


def test_a_port_reused_by_a_later_connection_is_a_new_stream(tmp_path: Path) -> None:
    packets: list[tuple[float, bytes]] = []
    first = Stream(40000, 100.0, packets)
    for i in range(20):
        first.send(100.1 + i * 0.020, media_frame(i * 20, i))
    second = Stream(40000, 200.0, packets)  # the next call's connection, from the same port
    for i in range(20):
        second.send(200.1 + i * 0.020, media_frame(i * 20, i))
    write_pcap(tmp_path / "ws.pcap", packets)

    streams = read_pcap_ws_media(tmp_path / "ws.pcap", BOT_PORT)

    assert sorted(streams) == [(40000, 1), (40000, 2)]
    assert media_pacing(streams) == {"events": 40, "late": 0, "missing": 0, "late_pct": 0.0}


def test_the_sample_takes_about_the_wanted_number_of_streams() -> None:
    assert sample_modulus(10) == 1
    assert sample_modulus(250) % 2 == 1
    ports = range(40000, 40000 + 2 * 250, 2)  # connect() hands out even ports
    taken = [p for p in ports if p % sample_modulus(250) == 0]
    assert 10 <= len(taken) <= 24


def rtp_packet(src: int, seq: int, ssrc: int) -> bytes:
    rtp = struct.pack(">BBHII", 0x80, 0, seq, seq * 160, ssrc) + bytes(160)
    udp = struct.pack(">HHHH", src, 40000, 8 + len(rtp), 0) + rtp
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, b"\x7f\0\0\1", b"\x7f\0\0\1")
    return b"\0" * 12 + b"\x08\x00" + ip + udp


def test_a_port_reused_by_the_next_call_is_a_new_rtp_stream(tmp_path: Path) -> None:
    # Call A sends from port 20000 for 2 s; 5 s later call B gets the same port, with its own SSRC
    # and sequence. As one stream, B would be 5 s late.
    packets = [(100.0 + i * 0.020, rtp_packet(20000, 1000 + i, 0xAAAA)) for i in range(100)]
    packets += [(107.0 + i * 0.020, rtp_packet(20000, 50 + i, 0xBBBB)) for i in range(100)]
    write_pcap(tmp_path / "rtp.pcap", packets)

    streams = read_pcap_rtp(tmp_path / "rtp.pcap")

    assert sorted(streams) == [(20000, 0xAAAA), (20000, 0xBBBB)]
    assert pacing(streams) == {"packets": 200, "late": 0, "missing": 0, "late_pct": 0.0}
