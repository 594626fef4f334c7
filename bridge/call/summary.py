"""A finished call's summary record: who, how long, how it ended, what flowed each way.

`call_summary` takes what it reports through `SummarySource` (the call implements it) and the
end cause from the call's state machine (`EndCause`, bridge/call/state.py): its metrics label,
`outcome`, `stop_reason` and who hung up come from there; `end_reason` is the human sentence.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Protocol

from bridge.audio.channel import MediaChannel
from bridge.audio.pipe_channel import PipeChannel
from bridge.call.record import iso_utc
from bridge.call.state import END_CAUSES, CallState
from bridge.sip import CallEnd, IncomingCall, MediaInfo, StreamStats

__all__ = ["END_CAUSES", "SummarySource", "call_summary", "iso_utc"]


class SummarySource(Protocol):
    """What a summary reads from a call."""

    @property
    def incoming(self) -> IncomingCall: ...
    @property
    def state(self) -> CallState: ...
    @property
    def created(self) -> float: ...
    @property
    def started_wall(self) -> float: ...
    @property
    def answered_at(self) -> float | None: ...
    @property
    def sip_ended_at(self) -> float | None: ...
    @property
    def bot_connect_s(self) -> float | None: ...
    @property
    def sip_end(self) -> CallEnd | None: ...
    @property
    def sip_stats(self) -> StreamStats: ...
    @property
    def media(self) -> MediaInfo | None: ...
    @property
    def dtmf_digits(self) -> str: ...
    @property
    def channel(self) -> MediaChannel | PipeChannel | None: ...
    @property
    def socket_rate(self) -> int: ...
    @property
    def bytes_to_bot(self) -> int: ...
    @property
    def bot_media_messages(self) -> int: ...
    @property
    def bot_bytes_in(self) -> int: ...
    @property
    def media_drops(self) -> int: ...
    @property
    def protocol_errors(self) -> int: ...
    @property
    def bot_ignored(self) -> Mapping[str, int]: ...
    @property
    def stream_sid_mismatches(self) -> int: ...
    @property
    def recording_path(self) -> str: ...


def call_summary(call: SummarySource) -> dict[str, object]:
    now = time.monotonic()
    state = call.state
    cause = state.final_cause()
    end = call.sip_end
    channel = call.channel
    playout = channel.playout if channel else None
    stats = call.sip_stats
    answered_at = call.answered_at
    expected = stats.rx_packets + stats.rx_lost
    return {
        "from": call.incoming.from_user,
        "to": call.incoming.to_user,
        "outcome": state.outcome,
        # From the answer to the end of the SIP leg (or now, if the bridge ends it later): not
        # the bot's closing handshake and grace after `stop`.
        "duration_s": round((call.sip_ended_at or now) - answered_at, 3) if answered_at else 0,
        "ended_by": end.ended_by if end else "bridge",
        "end_reason": state.end_reason,
        "sip_status": end.code if end else 0,
        "stop_reason": state.stop_reason or "",
        "codec": call.media.codec if call.media else "",
        "dtmf": call.dtmf_digits,
        "rtp_rx_packets": stats.rx_packets,
        "rtp_rx_lost": stats.rx_lost,
        "jitter_ms": round(stats.rx_jitter_ms_mean, 2),
        "bot_media_messages": call.bot_media_messages,
        "bytes_from_bot": call.bot_bytes_in,
        "bytes_to_bot": call.bytes_to_bot,
        "media_drops": call.media_drops,
        "underruns": playout.underruns if playout else 0,
        "playout_dropped_bytes": playout.dropped_bytes if playout else 0,
        "protocol_errors": call.protocol_errors,
        "bot_ignored": dict(call.bot_ignored),
        "stream_sid_mismatches": call.stream_sid_mismatches,
        "start": iso_utc(call.started_wall),
        "setup_ms": round((answered_at - call.created) * 1000) if answered_at else None,
        "bot_connect_ms": round(call.bot_connect_s * 1000) if call.bot_connect_s is not None else None,
        "end_cause": cause.label,
        "hung_up_by": cause.hung_up_by,
        "socket_rate": call.socket_rate,
        "frames_from_caller": channel.rx_frames if channel else 0,
        "frames_to_caller": channel.tx_frames_audio if channel else 0,
        "caller_frames_lost": channel.rx_overrun_frames if channel else 0,
        "rtp_loss_pct": round(100.0 * stats.rx_lost / expected, 2) if expected else 0.0,
        "recording": call.recording_path,
    }
