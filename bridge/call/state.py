"""The life of one call as a pure state machine: what each SIP, bot and bridge event does, and
how the call ends (no asyncio, sockets or pjsua2: bridged.py drives it and carries out what it
decides; tests drive it directly).

    connecting --bot connected--> streaming --caller left / bridge stop / bot closed--> ending
        |                                                                                 |
        +--caller left / bridge stop / bot unreachable------------------------------> ended

How a call ended is an `EndCause`: each one carries the summary's `outcome`, the `stop` reason
sent to the bot (if any), what the bridge does to the SIP leg, who hung up and the metrics label
(`end_cause`). `end_reason` stays the human sentence, built here from the event.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Literal

from bridge.config.model import ClosePolicy, UnreachablePolicy
from bridge.errors import BotConnectError, BridgeStopping, CallerHungUp, CallFailed

StopReason = Literal["callended", "stopped"]
HungUpBy = Literal["caller", "bot", "bridge"]
Outcome = Literal["pending", "answered", "rejected", "redirected", "abandoned"]


class Phase(enum.Enum):
    CONNECTING = "connecting"  # the INVITE rings (180) while the bot's socket opens
    STREAMING = "streaming"  # answered (200): audio flows both ways
    ENDING = "ending"  # the end is decided; the stream and the SIP leg are being closed
    ENDED = "ended"


class SipAction(enum.Enum):
    """What the bridge does to the SIP leg when the call ends this way."""

    NOTHING = "nothing"  # the caller already ended it
    BYE = "bye"
    REFER = "refer"  # transfer the caller (bot.on_close.transfer_to)
    REJECT = "reject"  # a final error response to the INVITE
    REDIRECT = "redirect"  # 302 to bot.on_unreachable.transfer_to


class EndCause(enum.Enum):
    """How a call ended. `label` is the metrics label and log search key (a small fixed
    vocabulary, `END_CAUSES`): two causes share `bot_unreachable` (rejected or redirected), and a
    stop while connecting counts as `caller_abandoned`, as it always has."""

    CALLER_HANGUP = ("caller_hangup", "answered", CallerHungUp.stop_reason, "caller", SipAction.NOTHING, None)
    # The caller hung up before the answer (the bot was connecting).
    CALLER_ABANDONED = ("caller_abandoned", "abandoned", None, "caller", SipAction.NOTHING, None)
    # The bridge stopped while the bot was connecting: 503 with Retry-After. Reported as an
    # abandoned call, as it always was (see BRIDGE_STOP for a stop after the answer).
    STOPPED_CONNECTING = ("caller_abandoned", "abandoned", None, "caller", SipAction.REJECT,
                          BridgeStopping.sip_status)
    # The caller never ACKed the 200: the leg ended after 64*T1 (32 s) with 408.
    NO_ACK = ("no_ack", "answered", CallerHungUp.stop_reason, "caller", SipAction.NOTHING, 408)
    BOT_HANGUP = ("bot_hangup", "answered", None, "bot", SipAction.BYE, None)
    BOT_TRANSFER = ("bot_transfer", "answered", None, "bot", SipAction.REFER, None)
    # The bot could not be reached: rejected with bot.on_unreachable.sip_status (503 unless set).
    BOT_REJECTED = ("bot_unreachable", "rejected", None, "bridge", SipAction.REJECT,
                    BotConnectError.sip_status)
    BOT_REDIRECTED = ("bot_unreachable", "redirected", None, "bridge", SipAction.REDIRECT, 302)
    # The bridge ended the stream (shutdown, a stalled bot, no RTP from the caller).
    BRIDGE_STOP = ("bridge_stop", "answered", BridgeStopping.stop_reason, "bridge", SipAction.BYE, None)
    ERROR = ("error", "pending", None, "bridge", SipAction.NOTHING, CallFailed.sip_status)  # a bug ended it
    OTHER = ("other", "answered", None, "bridge", SipAction.NOTHING, None)

    def __init__(self, label: str, outcome: Outcome, stop_reason: StopReason | None, hung_up_by: HungUpBy,
                 sip_action: SipAction, sip_status: int | None) -> None:
        self.label = label
        self.outcome: Outcome = outcome
        self.stop_reason: StopReason | None = stop_reason
        self.hung_up_by: HungUpBy = hung_up_by
        self.sip_action = sip_action
        self.sip_status = sip_status  # the status the bridge answers or ends with (None: none of its own)


NO_ACK_REASON: Final = "the caller never confirmed the answer (no ACK)"

# The metrics labels, in the order the metrics list them.
END_CAUSES: Final = tuple(dict.fromkeys(cause.label for cause in EndCause))


@dataclass(frozen=True, slots=True)
class Ending:
    """What the call does now that its end is decided."""

    cause: EndCause
    end_reason: str
    target: str | None = None  # REFER / 302 target
    sip_status: int | None = None  # for REJECT: the status to send, its reason phrase and headers
    sip_reason: str = ""
    sip_headers: dict[str, str] | None = None

    @property
    def sip_action(self) -> SipAction:
        return self.cause.sip_action


class CallState:
    """One call's phase and end. Events come in any order; the first decisive one wins."""

    def __init__(self, on_unreachable: UnreachablePolicy | None = None,
                 on_close: ClosePolicy | None = None) -> None:
        self.on_unreachable = on_unreachable or UnreachablePolicy()
        self.on_close = on_close or ClosePolicy()
        self.phase = Phase.CONNECTING
        self.answered = False  # the bot connected and the call was answered
        self.ending: Ending | None = None
        self.caller_left = False  # the SIP leg ended (BYE, CANCEL, 408...)
        self.stop_wanted = False  # the bridge asked the stream to end
        # The first note of why (a stop's reason, a missing ACK), kept unless a decisive end says
        # otherwise; the summary's `end_reason`.
        self._note = ""

    # ---- what the summary and /status read ------------------------------------------------

    @property
    def cause(self) -> EndCause | None:
        return self.ending.cause if self.ending is not None else None

    @property
    def outcome(self) -> Outcome:
        if self.ending is not None:
            return self.ending.cause.outcome
        return "answered" if self.answered else "pending"

    @property
    def end_reason(self) -> str:
        return self.ending.end_reason if self.ending is not None else self._note

    @property
    def stop_reason(self) -> StopReason | None:
        return self.ending.cause.stop_reason if self.ending is not None else None

    def final_cause(self) -> EndCause:
        """The cause for the summary: decided, or ERROR/OTHER for a call whose task ended early."""
        if self.ending is not None:
            return self.ending.cause
        return EndCause.OTHER if self.answered else EndCause.ERROR

    # ---- events ---------------------------------------------------------------------------

    def sip_ended(self, code: int, reason: str) -> None:
        """The SIP leg ended (any phase)."""
        self.caller_left = True
        if code == EndCause.NO_ACK.sip_status and reason == "no ACK":
            self._note = self._note or NO_ACK_REASON

    def stop_requested(self, reason: str) -> None:
        """The bridge wants the stream ended (shutdown, stall, no RTP): `stop` stopped, then BYE."""
        self.stop_wanted = True
        self._note = self._note or reason

    def bot_connected(self) -> None:
        """The bot's socket is open: `connected` and `start` go out and the call is answered."""
        self._require(Phase.CONNECTING)
        self.phase = Phase.STREAMING
        self.answered = True

    def connect_interrupted(self) -> Ending:
        """The caller hung up, or the bridge stopped, before the bot's socket opened."""
        self._require(Phase.CONNECTING)
        reason = "caller hung up while the bot was connecting"
        if self.stop_wanted:
            ending = Ending(EndCause.STOPPED_CONNECTING, reason, sip_status=BridgeStopping.sip_status,
                            sip_reason=BridgeStopping.sip_reason, sip_headers=BridgeStopping.sip_headers())
        else:
            ending = Ending(EndCause.CALLER_ABANDONED, reason)
        return self._end(ending, Phase.ENDED)

    def bot_unreachable(self, why: str) -> Ending:
        """Every attempt to open the bot's socket failed: reject or redirect, per the profile."""
        self._require(Phase.CONNECTING)
        rules = self.on_unreachable
        target = rules.transfer_to
        if rules.action == "transfer" and target:
            ending = Ending(EndCause.BOT_REDIRECTED, f"bot unreachable ({why}); redirected to {target}",
                            target=target, sip_status=EndCause.BOT_REDIRECTED.sip_status)
        else:
            status = rules.sip_status
            ending = Ending(EndCause.BOT_REJECTED, f"bot unreachable ({why}); rejected with {status}",
                            sip_status=status, sip_reason=BotConnectError.sip_reason)
        return self._end(ending, Phase.ENDED)

    def stream_over(self, bot_close_code: int | None = None) -> Ending:
        """The conversation is over: the caller left, the bridge stopped it or the bot closed
        (`bot_close_code`), checked in that order when several happened at once."""
        self._require(Phase.STREAMING)
        if self.caller_left:
            # A missing ACK is the cause only if it was the first news of the end.
            cause = EndCause.NO_ACK if self._note == NO_ACK_REASON else EndCause.CALLER_HANGUP
            ending = Ending(cause, self._note or "caller hung up")
        elif self.stop_wanted:
            ending = Ending(EndCause.BRIDGE_STOP, self._note)
        else:
            target = self.on_close.transfer_to
            if self.on_close.action == "transfer" and target:
                ending = Ending(EndCause.BOT_TRANSFER,
                                f"bot closed ({bot_close_code}); transferred to {target}", target=target)
            else:
                ending = Ending(EndCause.BOT_HANGUP, f"bot closed ({bot_close_code})")
        return self._end(ending, Phase.ENDING)

    def finished(self) -> None:
        """The call's task is done (stream closed, SIP leg ended or given up on)."""
        self.phase = Phase.ENDED

    def _end(self, ending: Ending, phase: Phase) -> Ending:
        self.ending = ending
        self.phase = phase
        return ending

    def _require(self, phase: Phase) -> None:
        if self.phase is not phase:
            raise CallStateError(f"expected {phase.value}, the call is {self.phase.value}")


class CallStateError(RuntimeError):
    """An event came in a phase where it has no meaning: a bug in the call's driver."""
