"""Pure parts of metrics and call records: end causes, the registry's exposition, status rendering."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.call.state import EndCause
from bridge.call.summary import END_CAUSES, iso_utc
from bridge.ops.metrics import BridgeMetrics, LiveState
from bridge.ops.status import render_status


@pytest.mark.parametrize(("cause", "outcome", "stop", "label", "who"), [
    (EndCause.CALLER_HANGUP, "answered", "callended", "caller_hangup", "caller"),
    (EndCause.NO_ACK, "answered", "callended", "no_ack", "caller"),
    (EndCause.BRIDGE_STOP, "answered", "stopped", "bridge_stop", "bridge"),
    (EndCause.BOT_HANGUP, "answered", None, "bot_hangup", "bot"),
    (EndCause.BOT_TRANSFER, "answered", None, "bot_transfer", "bot"),
    (EndCause.BOT_REJECTED, "rejected", None, "bot_unreachable", "bridge"),
    (EndCause.BOT_REDIRECTED, "redirected", None, "bot_unreachable", "bridge"),
    (EndCause.CALLER_ABANDONED, "abandoned", None, "caller_abandoned", "caller"),
    (EndCause.STOPPED_CONNECTING, "abandoned", None, "caller_abandoned", "caller"),
    (EndCause.ERROR, "pending", None, "error", "bridge"),
    (EndCause.OTHER, "answered", None, "other", "bridge"),
])
def test_end_cause_and_who_hung_up(cause: EndCause, outcome: str, stop: str | None, label: str,
                                   who: str) -> None:
    assert (cause.outcome, cause.stop_reason, cause.label, cause.hung_up_by) == (outcome, stop, label, who)
    assert cause.label in END_CAUSES


def test_end_cause_labels_are_the_metrics_vocabulary() -> None:
    assert END_CAUSES == ("caller_hangup", "caller_abandoned", "no_ack", "bot_hangup", "bot_transfer",
                          "bot_unreachable", "bridge_stop", "error", "other")


def test_iso_utc() -> None:
    assert iso_utc(0.25) == "1970-01-01T00:00:00.250Z"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


class Latency:
    count = 4
    total_ms = 10.0

    def buckets(self, edges_ms: tuple[float, ...]) -> list[int]:
        return [0 if edge < 2 else 3 if edge < 5 else 4 for edge in edges_ms]


def test_each_bridge_has_its_own_registry_and_families() -> None:
    state = LiveState(max_calls=5, accepting=True, registration_enabled=True, registered=True,
                      registration_code=200, rejected_by_engine={"over_capacity": 2, "rate_limited": 1},
                      latency={"caller_to_bot": Latency(), "bot_to_caller": None})
    one = BridgeMetrics(lambda: state, "one")
    two = BridgeMetrics(lambda: LiveState(), "two")
    one.invites.inc()
    one.dtmf.labels("info").inc(2)
    one.rejected["bot_unreachable"] = 3
    got = samples(one.exposition().decode())
    other = samples(two.exposition().decode())
    p = "sip_ws_bridge_"
    assert got[(p + "invites_total", ())] == 1 and other[(p + "invites_total", ())] == 0
    assert got[(p + "info", (("profile", "one"), ("version", "0.1.0")))] == 1
    assert got[(p + "max_calls", ())] == 5 and got[(p + "registered", ())] == 1
    assert got[(p + "registration_status_code", ())] == 200
    assert got[(p + "dtmf_digits_total", (("method", "info"),))] == 2
    assert got[(p + "rejected_invites_total", (("reason", "over_capacity"),))] == 2
    assert got[(p + "rejected_invites_total", (("reason", "rate_limited"),))] == 1
    assert got[(p + "rejected_invites_total", (("reason", "bot_unreachable"),))] == 3
    assert got[(p + "active_calls", (("state", "answered"),))] == 0
    assert got[(p + "caller_frames_total", ())] == 0
    lat = (("direction", "caller_to_bot"),)
    assert got[(p + "added_latency_seconds_count", lat)] == 4
    assert got[(p + "added_latency_seconds_sum", lat)] == pytest.approx(0.01)
    assert got[(p + "added_latency_seconds_bucket", (*lat, ("le", "0.005")))] == 4
    assert got[(p + "added_latency_seconds_bucket", (*lat, ("le", "0.001")))] == 0
    other_direction = ("direction", "bot_to_caller")
    assert not any(k[0].startswith(p + "added_latency") and other_direction in k[1] for k in got)


SNAPSHOT: dict[str, Any] = {
    "name": "prod", "version": "0.1.0", "pid": 42, "uptime_s": 3725.0, "ready": False,
    "not_ready": ["at capacity (2/2 calls)"], "registration": "registered with sip:pbx",
    "active_calls": 2, "max_calls": 2, "invites": 17,
    "calls_ended": {"caller_hangup": 14, "bot_hangup": 1},
    "rejected": {"over_capacity": 3, "rate_limited": 0}, "reloads": 1,
    "totals": {"caller_frames": 123456, "bot_frames_played": 100000, "underruns": 2,
               "media_to_bot_dropped": 0, "caller_frames_lost": 0, "bytes_to_bot": 50_000_000,
               "audio_bytes_from_bot": 20_000_000},
    "calls": [
        {"call_sid": "abc@10.0.0.1", "stream_sid": "s1", "from": "+4930123", "to": "500",
         "state": "answered", "age_s": 65.2, "answered_s": 64.0, "codec": "PCMU", "dtmf": "1#",
         "frames_in": 3200, "frames_out": 1500, "underruns": 0, "drops": 0, "playout_ms": 80,
         "recording": True, "media_path": "python"},
        {"call_sid": "def@10.0.0.2", "stream_sid": "s2", "from": "anonymous", "to": "500",
         "state": "connecting", "age_s": 0.4, "answered_s": None, "codec": "", "dtmf": "",
         "frames_in": 0, "frames_out": 0, "underruns": 0, "drops": 0, "playout_ms": 0, "recording": False,
         "media_path": "native"},
    ],
}


def test_status_rendering() -> None:
    text = render_status(json.loads(json.dumps(SNAPSHOT)))
    lines = text.splitlines()
    assert "profile prod" in lines[0] and "up 1h02m" in lines[0]
    assert "NOT READY: at capacity (2/2 calls)" in lines[0]
    assert "2 active of 2, 17 taken; registered with sip:pbx" in lines[1]
    assert "bot_hangup 1, caller_hangup 14" in lines[2] and "over_capacity 3" in lines[2]
    assert "rate_limited" not in lines[2]
    assert "in 120k" in lines[3] and "bytes to bot 47M" in lines[3]
    rows = [line for line in lines if line.startswith(("abc@", "def@"))]
    assert rows[0].startswith("abc@10.0.0.1") and "1:04" in rows[0] and rows[0].endswith("yes")
    assert rows[1].startswith("def@10.0.0.2") and "connecting" in rows[1]
    assert render_status({"calls": []}).splitlines()[-1] == "(no calls)"


def test_the_grafana_dashboard_uses_only_metrics_the_bridge_exports() -> None:
    import re
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "dashboards" / "sip-ws-bridge.json"
    dashboard = json.loads(path.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    used = {name for expr in exprs for name in re.findall(r"sip_ws_bridge_[a-z_]+", expr)}
    state = LiveState(latency={"caller_to_bot": Latency(), "bot_to_caller": Latency()})
    exported = {name for name, _ in samples(BridgeMetrics(lambda: state, "x").exposition().decode())}
    assert used and used <= exported, used - exported
    families = {re.sub(r"_(total|bucket|count|sum|created)$", "", name) for name in exported}
    shown = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in used}
    assert families - shown <= {"sip_ws_bridge_invites", "sip_ws_bridge_registration_enabled",
                                "sip_ws_bridge_rtp_loss_ratio"}, families - shown
