"""Micro-benchmark of the AgentStream codec's per-message hot paths.

Run: .venv/bin/python benchmarks/bench_codec.py [--number N]

Prints microseconds per call (best of several repeats, so scheduler noise is excluded) for the
outbound `media` encoding at 100 ms (1600 B) and 20 ms (320 B) of 8 kHz PCM, and for decoding a bot
`media` message carrying 3200 B of PCM. json.dumps/json.loads baselines are shown for scale.
"""

from __future__ import annotations

import argparse
import base64
import json
import timeit
from collections.abc import Callable

from bridge.bot.agentstream.codec import MediaEncoder, decode_bot_message, encode_media
from bridge.bot.agentstream.events import BotMedia, StartInfo
from bridge.bot.agentstream.session import StreamSession

SID = "MZ18ad3ab5a668481ce02b83e7395059f0"


def best_us(fn: Callable[[], object], number: int, repeat: int = 7) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def json_dumps_media(seq: int, sid: str, chunk: int, ts: int, pcm: bytes) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequence_number": str(seq),
            "stream_sid": sid,
            "media": {"chunk": str(chunk), "timestamp": str(ts), "payload": base64.b64encode(pcm).decode()},
        },
        separators=(",", ":"),
    )


def started_session() -> StreamSession:
    session = StreamSession(StartInfo(SID, "call", "acct", "a", "b"))
    session.connected()
    session.start()
    return session


def bench_encode(size: int, n: int) -> list[tuple[str, float]]:
    pcm = bytes(i * 7 & 0xFF for i in range(size))
    assert encode_media(2, SID, 1, 100, pcm) == json_dumps_media(2, SID, 1, 100, pcm)
    encoder = MediaEncoder(SID)
    session = started_session()
    return [
        (f"encode_media ({size} B PCM)", best_us(lambda: encode_media(12345, SID, 1234, 123400, pcm), n)),
        (f"MediaEncoder ({size} B PCM)", best_us(lambda: encoder(12345, 1234, 123400, pcm), n)),
        (f"StreamSession.media ({size} B PCM)", best_us(lambda: session.media(pcm), n)),
        (f"  baseline json.dumps ({size} B PCM)", best_us(lambda: json_dumps_media(1, SID, 1, 1, pcm), n)),
    ]


def bench_decode(size: int, n: int) -> list[tuple[str, float]]:
    pcm = bytes(i * 7 & 0xFF for i in range(size))
    payload = base64.b64encode(pcm).decode()
    frame = json.dumps({"event": "media", "stream_sid": SID, "media": {"payload": payload}})
    assert decode_bot_message(frame) == BotMedia(pcm, SID)
    session = started_session()
    return [
        (f"decode_bot_message (media {size} B PCM)", best_us(lambda: decode_bot_message(frame), n)),
        (f"StreamSession.receive (media {size} B PCM)", best_us(lambda: session.receive(frame), n)),
        (
            "  baseline json.loads + b64decode",
            best_us(lambda: base64.b64decode(json.loads(frame)["media"]["payload"]), n),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20_000, help="calls per repeat")
    n = parser.parse_args().number

    rows: list[tuple[str, float]] = []
    for size in (1600, 320):
        rows += bench_encode(size, n)
    rows += bench_decode(3200, n)

    width = max(len(name) for name, _ in rows)
    for name, us in rows:
        print(f"{name:<{width}}  {us:7.2f} µs")


if __name__ == "__main__":
    main()
