"""The conference ports the engine attaches to calls and taps, and the GIL pin their clock thread
needs. Runs on PJSIP's conference clock thread: only moves bytes."""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any

import pjsua2 as pj

from bridge.audio.channel import MediaChannel
from bridge.audio.ticks import TickCounter

# SWIG's director wraps every callback in PyGILState_Ensure()/Release(); on a thread Python did
# not create, that creates and destroys a thread state each time (~11 us, about half the
# bridge's CPU per call). Holding one extra Ensure() for the life of PJSIP's clock thread keeps
# its thread state alive, so each callback only takes and drops the GIL. This relies on
# CPython's documented PyGILState semantics (a nested Ensure only bumps a counter); it lives
# here only, and tests/unit/test_gil_pin.py checks it. SIP_WS_BRIDGE_NO_GIL_PIN=1 turns it off.
PIN_GIL = os.environ.get("SIP_WS_BRIDGE_NO_GIL_PIN", "") != "1"
# Calls' media through the native MediaPipe (our pjsua2 build) unless turned off, e.g. to compare
# with the Python port in a benchmark. Recorded calls and taps always use the Python port.
NATIVE_MEDIA = hasattr(pj, "MediaPipe") and os.environ.get("SIP_WS_BRIDGE_PY_MEDIA", "") != "1"
# Caller audio written to bots' sockets by the pipes' sender thread unless turned off (the same
# kind of comparison: SIP_WS_BRIDGE_PY_SEND=1 sends it from the event loop).
NATIVE_SEND = (NATIVE_MEDIA and hasattr(pj, "MediaSender")
               and os.environ.get("SIP_WS_BRIDGE_PY_SEND", "") != "1")
# Caller frames a pipe holds before the oldest are overwritten (1.28 s), as for MediaChannel.
PIPE_RING_FRAMES = 64
UNDERRUN_GAP_FRAMES = 10
_pinned_threads: set[int] = set()


def pin_thread_state() -> None:
    ident = threading.get_ident()
    if ident not in _pinned_threads:
        ctypes.pythonapi.PyGILState_Ensure()  # never released: the thread state stays
        _pinned_threads.add(ident)


# _FREEING: when the last reference to a port goes, Python clears the object's attributes first and
# then runs the C++ destructor, which takes the port out of the conference; SWIG releases the GIL
# around that destructor, so the clock thread can call the port in between and find no attributes.
# An AttributeError raised back into the director then ended in a segfault (seen at the end of a
# demo and under SIPREC fuzzing), and a call that came in while the director part of the C++
# object was being destroyed could touch a freed object (a rarer segfault, also at a demo's end).
# So ports are taken out of the conference's rounds before they are freed (`quiesce`, which
# takes the conference's lock), and each callback still returns quietly if it finds no attributes.


def quiesce(port: Any) -> None:
    """Stop the conference calling `port` before its last reference goes (sip thread)."""
    if hasattr(pj, "ConfPort"):
        try:
            pj.ConfPort.disable(port.getPortId())
        except pj.Error:
            pass  # not in the conference (never created, or already removed)


class MediaPort(pj.AudioMediaPort):  # type: ignore[misc]
    """Runs on the conference clock thread, once per 20 ms per direction: only moves bytes."""

    def __init__(self, channel: MediaChannel) -> None:
        super().__init__()
        self._channel = channel
        self._frame_bytes = channel.frame_bytes
        self._pin_pending = PIN_GIL

    def onFrameReceived(self, frame: Any) -> None:
        try:
            channel = self._channel
        except AttributeError:
            return  # being freed (see _FREEING)
        if self._pin_pending:
            self._pin_pending = False
            pin_thread_state()
        if channel.closed:
            return
        if frame.size == self._frame_bytes:
            frame.buf.copy_to_bytearray(channel.rx_slot())
            channel.rx_commit()
        else:
            # size 0 is the conference's heartbeat: no audio from the caller this tick.
            channel.rx_commit_silence()

    def onFrameRequested(self, frame: Any) -> None:
        try:
            channel = self._channel
        except AttributeError:
            return  # being freed (see _FREEING)
        audio = channel.tx_audio()
        if audio is not None:
            frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO
            frame.buf.assign_from_bytes(audio)
        # else: an untouched (NONE) frame, which the stream encodes as silence: RTP never pauses.


class TickPort(pj.AudioMediaPort):  # type: ignore[misc]
    """Counts conference ticks for taps: the conference reads it (it transmits to slot 0) in the
    first phase of every tick, before it hands any port that tick's frame."""

    def __init__(self, ticks: TickCounter) -> None:
        super().__init__()
        self._ticks = ticks
        self._pin_pending = PIN_GIL

    def onFrameRequested(self, frame: Any) -> None:
        try:
            ticks = self._ticks
        except AttributeError:
            return  # being freed (see _FREEING)
        if self._pin_pending:
            self._pin_pending = False
            pin_thread_state()
        ticks.value += 1  # the frame stays NONE: nothing is played
