"""Per-call WAV recordings: what the caller said and what the bot's audio actually played.

Tracks, both at the conference clock rate and clocked by the same 20 ms tick:
- caller: the PCM the media pump takes from the channel (`rx_take`), with silence put in for
  frames the ring lost when the loop stalled, so the two tracks stay aligned;
- bot: the frames `tx_audio` hands to PJSIP, silence included (what the caller heard).

The clock thread does one thing more for a recorded call, and nothing for others: it appends
the frame it played to a deque (a 320-byte copy per 20 ms at 8 kHz; silence is shared, not
copied). The loop pairs the tracks up about every 2 s and one writer thread, shared by every
call, appends them to `NAME.wav.part` (stereo: caller left, bot right; or one mixed channel);
at the end of the call the file is closed and renamed to `NAME.wav`. Memory per call stays at
a few seconds of audio however long the call. A `.part` left by a crash is repaired (its
header fixed) and renamed at the next start.

Retention: recordings older than `retention_days` and the oldest beyond `max_files` are
deleted at start, on reload and at most once a minute after a recording is saved, on a
worker thread of the loop's default executor (not the writer's); a long sweep logs its progress.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import re
import struct
import time
import wave
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np

from bridge.audio.channel import MediaChannel
from bridge.audio.pipe_channel import PipeChannel
from bridge.audio.playout import PlayoutBuffer
from bridge.config import RecordingSettings
from bridge.errors import EXIT_UNAVAILABLE, BridgeError
from bridge.logs import CallLog

log = logging.getLogger("bridge.recording")

__all__ = [
    "CallRecorder", "RecordingChannel", "RecordingError", "RecordingStore", "open_channel",
]

T = TypeVar("T")
FLUSH_SECONDS = 2.0
SWEEP_EVERY_S = 60.0
PART = ".part"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class RecordingError(BridgeError):
    """The recording directory cannot be used (not creatable or not writable)."""

    exit_code = EXIT_UNAVAILABLE


def open_channel(frame_bytes: int, playout: PlayoutBuffer, notify: Callable[[], None], *,
                 recorder: CallRecorder | None = None,
                 native: Callable[[], PipeChannel | None] | None = None) -> MediaChannel | PipeChannel:
    """A call's media channel: a recording one when it has a `recorder`, else the native pipe
    when the engine has one (`native`), else the Python channel."""
    if recorder is not None:
        return RecordingChannel(frame_bytes, playout, notify=notify, recorder=recorder)
    pipe = native() if native is not None else None
    if pipe is not None:
        return pipe
    return MediaChannel(frame_bytes, playout, notify=notify)


class RecordingChannel(MediaChannel):
    """A MediaChannel that also hands both directions to a CallRecorder."""

    def __init__(self, frame_bytes: int, playout: PlayoutBuffer, *, notify: Callable[[], None] | None,
                 recorder: CallRecorder) -> None:
        super().__init__(frame_bytes, playout, notify=notify)
        self._recorder = recorder
        self._tap = recorder.played

    def tx_audio(self) -> bytearray | None:
        # Clock thread (tx_frame goes through here too): the returned bytearray is reused next
        # tick, so it is copied; silence (None) is one shared bytes object.
        audio = super().tx_audio()
        self._tap.append(self._silence if audio is None else bytes(audio))
        return audio

    def rx_take(self, min_frames: int = 1) -> bytes:
        lost_before = self.rx_overrun_frames
        data = super().rx_take(min_frames)
        self._recorder.add_caller(data, self.rx_overrun_frames - lost_before)
        return data


def _fix_wav_header(path: Path) -> None:
    """Make a WAV whose writer died before closing it readable: set its RIFF and data sizes."""
    size = path.stat().st_size
    with path.open("r+b") as file:
        header = file.read(44)
        if len(header) < 44 or header[:4] != b"RIFF" or header[36:40] != b"data":
            raise ValueError("not a WAV file written by the bridge")
        block = struct.unpack_from("<H", header, 32)[0] or 1
        data = (size - 44) // block * block
        file.seek(4)
        file.write(struct.pack("<I", 36 + data))
        file.seek(40)
        file.write(struct.pack("<I", data))
        file.truncate(44 + data)


class _WavWriter:
    """One recording's file; used only on the writer thread."""

    def __init__(self, part: Path, channels: int, rate: int) -> None:
        self.part = part
        self.channels = channels
        self.rate = rate
        self._file: BinaryIO | None = None
        self._wav: wave.Wave_write | None = None
        self.frames = 0
        self.error: str | None = None

    def write(self, caller: bytes, bot: bytes) -> None:
        if self.error is not None:
            return
        try:
            if self._wav is None:
                self._file = self.part.open("wb")
                wav = wave.open(self._file, "wb")
                wav.setnchannels(self.channels)
                wav.setsampwidth(2)
                wav.setframerate(self.rate)
                self._wav = wav
            left = np.frombuffer(caller, dtype="<i2")
            right = np.frombuffer(bot, dtype="<i2")
            if self.channels == 2:
                out = np.empty(2 * len(left), dtype="<i2")
                out[0::2] = left
                out[1::2] = right
            else:
                out = np.clip(left.astype(np.int32) + right, -32768, 32767).astype("<i2")
            self._wav.writeframesraw(out.tobytes())
            self.frames += len(left)
        except (OSError, wave.Error) as exc:
            self._fail(exc)

    def close(self, final: Path) -> bool:
        try:
            if self._wav is None:
                self.write(b"", b"")  # an empty but valid file
            if self._wav is not None:
                self._wav.close()  # writes the final sizes into the header
            if self._file is not None:
                self._file.close()
            if self.error is not None:
                return False
            os.replace(self.part, final)
            return True
        except (OSError, wave.Error) as exc:
            self._fail(exc)
            if self._file is not None and not self._file.closed:
                with contextlib.suppress(OSError):
                    self._file.close()
            return False

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = str(getattr(exc, "strerror", None) or exc)


class CallRecorder:
    """One call's recording. `played` is appended to by the clock thread; the rest runs on the loop."""

    def __init__(self, store: RecordingStore, settings: RecordingSettings, path: Path, rate: int,
                 frame_bytes: int, logger: CallLog | logging.Logger) -> None:
        self.played: deque[bytes | bytearray] = deque()
        self._store = store
        self._settings = settings
        self._final = path
        self._frame_bytes = frame_bytes
        self._flush_bytes = int(FLUSH_SECONDS * rate) * 2
        self._caller = bytearray()
        self._bot = bytearray()
        channels = 2 if settings.layout == "stereo" else 1
        self._writer = _WavWriter(path.with_name(path.name + PART), channels, rate)
        self._log = logger
        self.rate = rate
        self.path = ""  # set once saved
        self.seconds = 0.0
        self.finished = False

    def add_caller(self, pcm: bytes, lost_frames: int = 0) -> None:
        """Caller audio the pump took (loop thread); `lost_frames` were lost before it."""
        if self.finished:
            return
        if lost_frames > 0:
            self._caller += bytes(lost_frames * self._frame_bytes)
        self._caller += pcm
        if len(self._caller) >= self._flush_bytes:
            self._flush(final=False)

    def _flush(self, *, final: bool) -> None:
        played = self.played
        for _ in range(len(played)):
            self._bot += played.popleft()
        if final:
            n = max(len(self._caller), len(self._bot))
            self._caller += bytes(n - len(self._caller))
            self._bot += bytes(n - len(self._bot))
        else:
            n = min(len(self._caller), len(self._bot))
            # The clock drives both tracks, so they differ by a frame or two; never let one run
            # away from the other (e.g. a pump stalled for longer than the ring holds).
            limit = 2 * self._flush_bytes
            if len(self._caller) - len(self._bot) > limit:
                self._bot += bytes(len(self._caller) - len(self._bot))
                n = len(self._caller)
            elif len(self._bot) - len(self._caller) > limit:
                self._caller += bytes(len(self._bot) - len(self._caller))
                n = len(self._bot)
        n -= n % 2
        if n == 0:
            return
        caller, bot = bytes(self._caller[:n]), bytes(self._bot[:n])
        del self._caller[:n]
        del self._bot[:n]
        self._store.submit(self._writer.write, caller, bot)

    async def finish(self) -> str:
        """Write what is left, close and rename the file; returns its path ("" if it failed)."""
        if self.finished:
            return self.path
        self.finished = True
        self._flush(final=True)
        done = self._store.submit(self._writer.close, self._final)
        try:
            saved = await asyncio.wrap_future(done)
        except RuntimeError as exc:  # the writer was shut down before the call ended
            self._writer._fail(exc)
            saved = False
        self.seconds = self._writer.frames / self.rate
        if saved:
            self.path = str(self._final)
            self._log.info("recording saved: %s (%.1f s, %s)", self.path, self.seconds, self._settings.layout)
            self._store.saved(self._settings)
        else:
            self._log.error("recording failed: %s: %s; the call itself was not affected",
                            self._writer.part, self._writer.error)
            self._store.failed += 1
        return self.path


class RecordingStore:
    """Where recordings go, the one writer thread they share, and retention."""

    def __init__(self) -> None:
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._last_sweep: dict[str, float] = {}
        self._sweep: asyncio.Future[int] | None = None
        self.saved_count = 0
        self.failed = 0
        self.deleted = 0

    def submit(self, fn: Callable[..., T], *args: object) -> concurrent.futures.Future[T]:
        """Run `fn` on the writer thread; calls run in the order submitted."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="recording")
        return self._executor.submit(fn, *args)

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def prepare(self, settings: RecordingSettings, *, recover: bool) -> None:
        """Create and check the directory (RecordingError if unusable), repair `.part` files
        left by a crash when `recover`, and apply retention."""
        if settings.dir is None:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._check_dir, settings.dir)
        if recover:
            await loop.run_in_executor(None, self._recover, Path(settings.dir))
        self._last_sweep[settings.dir] = time.monotonic()
        self._start_sweep(settings)

    def _start_sweep(self, settings: RecordingSettings) -> None:
        """Retention in the background, off the writer thread (a long sweep never delays writes)."""
        if self._sweep is not None and not self._sweep.done():
            return
        self._sweep = asyncio.get_running_loop().run_in_executor(None, self.sweep, settings)

    @staticmethod
    def _check_dir(directory: str) -> None:
        path = Path(directory)
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise RecordingError(
                f"cannot write recordings to {directory}: {exc.strerror or exc}; make it writable for "
                f"the bridge's user (under systemd use ${{STATE_DIRECTORY}}) or change recording.dir"
            ) from None

    @staticmethod
    def _recover(directory: Path) -> None:
        for part in directory.glob(f"*.wav{PART}"):
            final = part.with_name(part.name[: -len(PART)])
            try:
                _fix_wav_header(part)
                os.replace(part, final)
            except (OSError, ValueError) as exc:
                log.warning("cannot repair the unfinished recording %s: %s", part, exc)
                continue
            log.warning("repaired %s, left unfinished when the bridge stopped during its call", final)

    def new_recorder(self, settings: RecordingSettings, call_sid: str, stream_sid: str, started: float,
                     rate: int, frame_bytes: int, logger: CallLog | logging.Logger) -> CallRecorder:
        assert settings.dir is not None
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(started))
        name = f"{stamp}_{_SAFE.sub('_', call_sid)[:80]}_{stream_sid}.wav"
        return CallRecorder(self, settings, Path(settings.dir) / name, rate, frame_bytes, logger)

    def saved(self, settings: RecordingSettings) -> None:
        self.saved_count += 1
        directory = settings.dir or ""
        now = time.monotonic()
        if now - self._last_sweep.get(directory, 0.0) < SWEEP_EVERY_S:
            return
        if not settings.retention_days and not settings.max_files:
            return
        self._last_sweep[directory] = now
        self._start_sweep(settings)

    def sweep(self, settings: RecordingSettings) -> int:
        """Delete recordings past retention (writer thread). Returns how many were deleted."""
        if settings.dir is None or (not settings.retention_days and not settings.max_files):
            return 0
        started = time.monotonic()
        files: list[tuple[float, str]] = []
        try:
            with os.scandir(settings.dir) as entries:
                for entry in entries:
                    if entry.name.endswith(".wav") and entry.is_file(follow_symlinks=False):
                        files.append((entry.stat(follow_symlinks=False).st_mtime, entry.path))
        except OSError as exc:
            log.warning("retention: cannot list %s: %s", settings.dir, exc.strerror or exc)
            return 0
        files.sort()
        doomed: list[str] = []
        if settings.retention_days:
            cutoff = time.time() - settings.retention_days * 86400
            doomed = [path for mtime, path in files if mtime < cutoff]
        old = len(doomed)
        if settings.max_files and len(files) - len(doomed) > settings.max_files:
            doomed = [path for _, path in files[: len(files) - settings.max_files]]
        if not doomed:
            return 0
        if len(doomed) >= 1000:
            log.info("retention: deleting %d recording(s) from %s", len(doomed), settings.dir)
        deleted = 0
        for i, path in enumerate(doomed, 1):
            try:
                os.unlink(path)
                deleted += 1
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("retention: cannot delete %s: %s", path, exc.strerror or exc)
            if i % 1000 == 0:
                log.info("retention: %d of %d deleted (%.0f%%)", i, len(doomed), 100 * i / len(doomed))
        self.deleted += deleted
        log.info("retention: deleted %d recording(s) from %s (%d older than %d days, %d over max_files %d) "
                 "in %.1f s", deleted, settings.dir, old, settings.retention_days, len(doomed) - old,
                 settings.max_files, time.monotonic() - started)
        return deleted
