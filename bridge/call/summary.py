"""What a finished call's summary record adds to the fields call.py collects: wall-clock start,
setup and connect times, frame counts, loss, who hung up, and a short end cause.

The end cause is a small fixed vocabulary (it is a metrics label and a log search key);
`end_reason` stays the human sentence.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    from bridge.call.bridged import BridgeCall

EndCause = Literal[
    "caller_hangup",  # the caller hung up an answered call
    "caller_abandoned",  # the caller hung up before it was answered (the bot was connecting)
    "no_ack",  # the caller never ACKed the 200: ended after 64*T1 (32 s)
    "bot_hangup",  # the bot closed its socket; the bridge hung up
    "bot_transfer",  # the bot closed its socket; the bridge transferred the caller
    "bot_unreachable",  # the bot could not be reached: rejected or redirected
    "bridge_stop",  # the bridge ended the stream (shutdown)
    "error",  # a bug in the bridge ended the call
    "other",
]
END_CAUSES: Final = (
    "caller_hangup", "caller_abandoned", "no_ack", "bot_hangup", "bot_transfer", "bot_unreachable",
    "bridge_stop", "error", "other",
)
HungUpBy = Literal["caller", "bot", "bridge"]


def end_cause(outcome: str, stop_reason: str, end_reason: str) -> EndCause:
    if outcome in ("rejected", "redirected"):
        return "bot_unreachable"
    if outcome == "abandoned":
        return "caller_abandoned"
    if outcome != "answered":
        return "error"
    if end_reason.startswith("the caller never confirmed"):
        return "no_ack"
    if stop_reason == "callended":
        return "caller_hangup"
    if stop_reason == "stopped":
        return "bridge_stop"
    if end_reason.startswith("bot closed"):
        return "bot_transfer" if "transferred" in end_reason else "bot_hangup"
    return "other"


def hung_up_by(cause: EndCause) -> HungUpBy:
    if cause in ("caller_hangup", "caller_abandoned", "no_ack"):
        return "caller"
    if cause in ("bot_hangup", "bot_transfer"):
        return "bot"
    return "bridge"


def iso_utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"


def summary_extras(call: BridgeCall, base: dict[str, object]) -> dict[str, object]:
    """The fields a call summary adds to `base` (the fields call.py collects itself)."""
    cause = end_cause(str(base.get("outcome", "")), str(base.get("stop_reason", "")),
                      str(base.get("end_reason", "")))
    channel = call.channel
    stats = call.sip_stats
    expected = stats.rx_packets + stats.rx_lost
    answered_at = call.answered_at
    recorder = call.recorder
    return {
        "start": iso_utc(call.started_wall),
        "setup_ms": round((answered_at - call.created) * 1000) if answered_at else None,
        "bot_connect_ms": round(call.bot_connect_s * 1000) if call.bot_connect_s is not None else None,
        "end_cause": cause,
        "hung_up_by": hung_up_by(cause),
        "socket_rate": call.socket_rate,
        "frames_from_caller": channel.rx_frames if channel else 0,
        "frames_to_caller": channel.tx_frames_audio if channel else 0,
        "caller_frames_lost": channel.rx_overrun_frames if channel else 0,
        "rtp_loss_pct": round(100.0 * stats.rx_lost / expected, 2) if expected else 0.0,
        "recording": recorder.path if recorder is not None and recorder.path else "",
    }
