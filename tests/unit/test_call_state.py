"""The call's pure state machine: every transition, and the end cause table."""

from __future__ import annotations

import pytest

from bridge.call.state import END_CAUSES, CallState, CallStateError, EndCause, Phase, SipAction
from bridge.config.model import ClosePolicy, UnreachablePolicy
from bridge.errors import BotConnectError, BridgeStopping, CallerHungUp, CallFailed


def streaming(**kwargs: object) -> CallState:
    state = CallState(**kwargs)  # type: ignore[arg-type]
    state.bot_connected()
    return state


def test_a_new_call_is_connecting_and_pending() -> None:
    state = CallState()
    assert state.phase is Phase.CONNECTING and state.outcome == "pending"
    assert state.cause is None and state.end_reason == "" and state.stop_reason is None
    assert state.final_cause() is EndCause.ERROR  # a task that died here: a bug


def test_a_call_whose_task_died_connecting_is_an_error_and_answered_one_other() -> None:
    state = CallState()
    state.finished()
    assert (state.outcome, state.final_cause()) == ("pending", EndCause.ERROR)
    state = streaming()
    state.finished()
    assert (state.outcome, state.final_cause()) == ("answered", EndCause.OTHER)


def test_bot_connected_answers() -> None:
    state = streaming()
    assert state.phase is Phase.STREAMING and state.outcome == "answered"
    assert state.final_cause() is EndCause.OTHER  # answered, ended without a decided cause


def test_caller_leaves_while_connecting() -> None:
    state = CallState()
    state.sip_ended(487, "Request Terminated")
    ending = state.connect_interrupted()
    assert ending.cause is EndCause.CALLER_ABANDONED and ending.sip_action is SipAction.NOTHING
    assert state.phase is Phase.ENDED and state.outcome == "abandoned"
    assert state.end_reason == "caller hung up while the bot was connecting"


def test_bridge_stops_while_connecting_503_retry_after() -> None:
    state = CallState()
    state.stop_requested("bridge shutting down")
    ending = state.connect_interrupted()
    assert ending.cause is EndCause.STOPPED_CONNECTING and ending.sip_action is SipAction.REJECT
    assert (ending.sip_status, ending.sip_reason, ending.sip_headers) == (503, "Service Unavailable",
                                                                          {"Retry-After": "5"})
    assert state.outcome == "abandoned" and ending.cause.label == "caller_abandoned"


def test_bot_unreachable_rejects_with_the_profile_status() -> None:
    state = CallState(UnreachablePolicy("reject", 480))
    ending = state.bot_unreachable("connection refused")
    assert ending.cause is EndCause.BOT_REJECTED and ending.sip_action is SipAction.REJECT
    assert (ending.sip_status, ending.sip_reason) == (480, "Bot Unavailable")
    assert ending.end_reason == "bot unreachable (connection refused); rejected with 480"
    assert state.outcome == "rejected" and state.phase is Phase.ENDED


def test_bot_unreachable_redirects_when_told() -> None:
    state = CallState(UnreachablePolicy("transfer", 503, "sip:fallback@pbx"))
    ending = state.bot_unreachable("HTTP 500 on the WebSocket upgrade")
    assert ending.cause is EndCause.BOT_REDIRECTED and ending.sip_action is SipAction.REDIRECT
    assert ending.target == "sip:fallback@pbx" and state.outcome == "redirected"
    assert ending.end_reason == ("bot unreachable (HTTP 500 on the WebSocket upgrade); "
                                 "redirected to sip:fallback@pbx")


def test_transfer_without_a_target_rejects() -> None:
    ending = CallState(UnreachablePolicy("transfer", 503, None)).bot_unreachable("x")
    assert ending.cause is EndCause.BOT_REJECTED and ending.sip_status == 503


def test_caller_hangs_up_an_answered_call() -> None:
    state = streaming()
    state.sip_ended(200, "BYE")
    ending = state.stream_over(None)
    assert ending.cause is EndCause.CALLER_HANGUP and ending.end_reason == "caller hung up"
    assert state.stop_reason == "callended" and state.phase is Phase.ENDING
    state.finished()
    assert state.phase.value == "ended"


def test_no_ack() -> None:
    state = streaming()
    state.sip_ended(408, "no ACK")
    ending = state.stream_over(None)
    assert ending.cause is EndCause.NO_ACK and state.stop_reason == "callended"
    assert ending.end_reason == "the caller never confirmed the answer (no ACK)"


def test_a_stop_reason_first_keeps_its_sentence_when_the_caller_leaves() -> None:
    state = streaming()
    state.stop_requested("bot stopped reading for 10 s")
    state.sip_ended(408, "no ACK")
    ending = state.stream_over(None)
    # The caller's end wins (the bot is told callended), the first reason stays the sentence.
    assert ending.cause is EndCause.CALLER_HANGUP and ending.end_reason == "bot stopped reading for 10 s"


def test_bridge_stop() -> None:
    state = streaming()
    state.stop_requested("no RTP from the caller for 3 s")
    state.stop_requested("bridge shutting down")  # the first reason stays
    ending = state.stream_over(None)
    assert ending.cause is EndCause.BRIDGE_STOP and ending.sip_action is SipAction.BYE
    assert ending.end_reason == "no RTP from the caller for 3 s" and state.stop_reason == "stopped"


def test_bot_closes_bye() -> None:
    ending = streaming().stream_over(1006)
    assert ending.cause is EndCause.BOT_HANGUP and ending.sip_action is SipAction.BYE
    assert ending.end_reason == "bot closed (1006)"


def test_bot_closes_transfer() -> None:
    ending = streaming(on_close=ClosePolicy("transfer", "sip:agents@pbx")).stream_over(1000)
    assert ending.cause is EndCause.BOT_TRANSFER and ending.sip_action is SipAction.REFER
    assert ending.target == "sip:agents@pbx"
    assert ending.end_reason == "bot closed (1000); transferred to sip:agents@pbx"


@pytest.mark.parametrize("event", ["bot_connected", "connect_interrupted", "bot_unreachable"])
def test_connecting_events_need_a_connecting_call(event: str) -> None:
    state = streaming()
    with pytest.raises(CallStateError):
        getattr(state, event)(*(["x"] if event == "bot_unreachable" else []))


def test_stream_over_needs_a_streaming_call() -> None:
    with pytest.raises(CallStateError):
        CallState().stream_over(1000)
    state = streaming()
    state.stream_over(1000)
    with pytest.raises(CallStateError):
        state.stream_over(1000)


@pytest.mark.parametrize(("cause", "label", "outcome", "stop", "who", "action", "status"), [
    (EndCause.CALLER_HANGUP, "caller_hangup", "answered", "callended", "caller", SipAction.NOTHING, None),
    (EndCause.NO_ACK, "no_ack", "answered", "callended", "caller", SipAction.NOTHING, 408),
    (EndCause.CALLER_ABANDONED, "caller_abandoned", "abandoned", None, "caller", SipAction.NOTHING, None),
    (EndCause.STOPPED_CONNECTING, "caller_abandoned", "abandoned", None, "caller", SipAction.REJECT, 503),
    (EndCause.BOT_HANGUP, "bot_hangup", "answered", None, "bot", SipAction.BYE, None),
    (EndCause.BOT_TRANSFER, "bot_transfer", "answered", None, "bot", SipAction.REFER, None),
    (EndCause.BOT_REJECTED, "bot_unreachable", "rejected", None, "bridge", SipAction.REJECT, 503),
    (EndCause.BOT_REDIRECTED, "bot_unreachable", "redirected", None, "bridge", SipAction.REDIRECT, 302),
    (EndCause.BRIDGE_STOP, "bridge_stop", "answered", "stopped", "bridge", SipAction.BYE, None),
    (EndCause.ERROR, "error", "pending", None, "bridge", SipAction.NOTHING, 500),
    (EndCause.OTHER, "other", "answered", None, "bridge", SipAction.NOTHING, None),
])
def test_end_cause_table(cause: EndCause, label: str, outcome: str, stop: str | None, who: str,
                         action: SipAction, status: int | None) -> None:
    assert (cause.label, cause.outcome, cause.stop_reason, cause.hung_up_by, cause.sip_action,
            cause.sip_status) == (label, outcome, stop, who, action, status)


def test_the_table_is_complete_and_the_labels_are_the_metrics_vocabulary() -> None:
    assert len(EndCause) == 11
    assert set(END_CAUSES) == {cause.label for cause in EndCause}


def test_errors_classify_themselves() -> None:
    assert (BotConnectError.sip_status, BotConnectError.sip_reason) == (503, "Bot Unavailable")
    assert BridgeStopping.stop_reason == "stopped" and BridgeStopping.sip_headers() == {"Retry-After": "5"}
    assert CallerHungUp.stop_reason == "callended"
    assert (CallFailed.sip_status, CallFailed.sip_reason) == (500, "Internal Error")
