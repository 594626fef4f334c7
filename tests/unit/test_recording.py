"""Recording: the channel taps both directions on the same ticks, the writer streams a WAV whose
channels line up sample for sample, crashes leave repairable files, retention deletes the oldest."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from bridge.audio.playout import PlayoutBuffer
from bridge.call.recording import (
    PART,
    RecordingChannel,
    RecordingError,
    RecordingStore,
    _WavWriter,
)
from bridge.config import RecordingSettings

FRAME = 320  # 20 ms at 8 kHz
log = logging.getLogger("test")


def frame_of(value: int) -> bytes:
    return np.full(FRAME // 2, value, dtype="<i2").tobytes()


def read(path: str | Path) -> tuple[int, np.ndarray]:
    with wave.open(str(path)) as wav:
        channels = wav.getnchannels()
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return channels, data.reshape(-1, channels)


def record_call(tmp_path: Path, layout: str, ticks: int, *, take_every: int = 5, stall: range = range(0),
                bot_audio: bytes = b"") -> tuple[str, RecordingStore]:
    """Drive a RecordingChannel as the clock thread and the pump do: one caller frame in and one
    frame out per tick; the pump takes caller audio every `take_every` ticks, except in `stall`."""
    store = RecordingStore()
    settings = RecordingSettings(enabled=True, dir=str(tmp_path), layout=layout)  # type: ignore[arg-type]

    async def main() -> str:
        recorder = store.new_recorder(settings, "a@b.c", "sid", time.time(), 8000, FRAME, log)
        channel = RecordingChannel(FRAME, PlayoutBuffer(FRAME, 0, FRAME * 1000), notify=None,
                                   recorder=recorder)
        channel.write_audio(bot_audio)
        for tick in range(ticks):
            channel.rx_slot()[:] = frame_of(tick + 1)
            channel.rx_commit()
            channel.tx_audio()  # what the engine calls each tick
            if tick % take_every == take_every - 1 and tick not in stall:
                channel.rx_take()
        channel.rx_take()
        return await recorder.finish()

    path = asyncio.run(main())
    store.shutdown()
    return path, store


def test_stereo_tracks_line_up_frame_for_frame(tmp_path: Path) -> None:
    bot = b"".join(frame_of(-(i + 1)) for i in range(150))
    path, store = record_call(tmp_path, "stereo", 300, bot_audio=bot)  # 6 s: several flushes
    assert path.endswith(".wav") and "a_b.c_sid" in path and store.saved_count == 1
    channels, samples = read(path)
    assert channels == 2 and len(samples) == 300 * FRAME // 2
    frames = samples.reshape(300, FRAME // 2, 2)
    for tick in range(300):
        assert set(frames[tick, :, 0]) == {tick + 1}  # the caller's frame of this tick
        assert set(frames[tick, :, 1]) == {-(tick + 1) if tick < 150 else 0}  # the bot's, then silence
    assert not list(tmp_path.glob("*" + PART))


def test_frames_lost_in_a_stall_become_silence_and_keep_alignment(tmp_path: Path) -> None:
    # The pump stalls for 100 ticks: the 64-frame ring loses the oldest caller frames.
    path, _ = record_call(tmp_path, "stereo", 200, take_every=5, stall=range(20, 120))
    _, samples = read(path)
    frames = samples.reshape(-1, FRAME // 2, 2)
    assert len(frames) == 200
    left = [int(frames[i, 0, 0]) for i in range(200)]
    lost = [i for i, v in enumerate(left) if v == 0]
    assert lost and all(left[i] == i + 1 for i in range(200) if i not in lost)  # the rest in place


def test_mixed_layout_sums_with_clipping(tmp_path: Path) -> None:
    bot = np.full(FRAME // 2 * 10, 30000, dtype="<i2").tobytes()
    path, _ = record_call(tmp_path, "mixed", 10, bot_audio=bot)
    channels, samples = read(path)
    assert channels == 1 and len(samples) == 10 * FRAME // 2
    assert samples[:, 0].tolist() == [min(32767, 30000 + t // (FRAME // 2) + 1) for t in range(len(samples))]


def test_a_crashed_recording_is_repaired_at_start(tmp_path: Path) -> None:
    part = tmp_path / ("20250101-000000_x_y.wav" + PART)
    writer = _WavWriter(part, 2, 8000)
    writer.write(frame_of(5) * 10, frame_of(6) * 10)  # never closed: header says 0 frames
    assert writer._file is not None
    writer._file.flush()
    settings = RecordingSettings(enabled=True, dir=str(tmp_path))
    store = RecordingStore()
    asyncio.run(store.prepare(settings, recover=True))
    store.shutdown()
    channels, samples = read(tmp_path / "20250101-000000_x_y.wav")
    assert channels == 2 and len(samples) == 10 * FRAME // 2
    assert set(samples[:, 0]) == {5} and set(samples[:, 1]) == {6}


def test_retention_by_age_and_count_with_progress(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    now = time.time()
    for i in range(1200):
        path = tmp_path / f"{i:05d}.wav"
        path.write_bytes(b"")
        age_days = 40 if i < 100 else 1
        os.utime(path, (now - age_days * 86400 - i, now - age_days * 86400 - i))
    (tmp_path / "notes.txt").write_text("not a recording")
    store = RecordingStore()
    with caplog.at_level(logging.INFO, logger="bridge.recording"):
        deleted = store.sweep(RecordingSettings(enabled=True, dir=str(tmp_path), retention_days=30,
                                                max_files=50))
    left = sorted(p.name for p in tmp_path.glob("*.wav"))
    assert deleted == 1150 and len(left) == 50
    assert left == [f"{i:05d}.wav" for i in range(100, 150)]  # the newest (smallest age offset)
    assert (tmp_path / "notes.txt").exists()
    messages = [r.getMessage() for r in caplog.records]
    assert any("1000 of 1150 deleted" in m for m in messages)
    assert any("deleted 1150 recording(s)" in m and "100 older than 30 days" in m for m in messages)


def test_an_unusable_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    settings = RecordingSettings(enabled=True, dir=str(blocker / "recordings"))
    with pytest.raises(RecordingError) as info:
        asyncio.run(RecordingStore().prepare(settings, recover=False))
    assert "cannot write recordings to" in str(info.value) and "recording.dir" in str(info.value)
    assert info.value.exit_code == 69


def test_a_write_error_fails_the_recording_not_the_call(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "gone"
    directory.mkdir()
    store = RecordingStore()
    settings = RecordingSettings(enabled=True, dir=str(directory))

    async def main() -> str:
        recorder = store.new_recorder(settings, "c", "s", time.time(), 8000, FRAME, log)
        directory.rmdir()  # the disk went away under it
        recorder.add_caller(frame_of(1) * 200)
        return await recorder.finish()

    with caplog.at_level(logging.ERROR):
        assert asyncio.run(main()) == ""
    store.shutdown()
    assert store.failed == 1
    assert any("recording failed" in r.getMessage() for r in caplog.records)
