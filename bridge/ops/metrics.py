"""Prometheus metrics of one bridge process, on a CollectorRegistry the bridge owns.

Two kinds of values, so that nothing is added to the 20 ms media path:
- event metrics (counters and histograms of prometheus_client) updated on the loop when
  something happens: an INVITE, an answer, a DTMF digit, a registration change, a call's end;
- scrape-time metrics from a custom collector that reads the counters calls already keep
  (frames, underruns, drops, bytes, playout depth) over the live calls plus the totals of
  finished calls, and the bridge's own latency histograms.

Every series is a counter, a gauge of a count or a histogram without per-call labels, so the
metrics of several processes can later be summed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, exposition
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from bridge import __version__
from bridge.call.summary import END_CAUSES
from bridge.ops.webhooks import LATENCY_BUCKETS_S, WebhookSender
from bridge.sip import REFUSED_REQUEST_REASONS

if TYPE_CHECKING:
    from bridge.call.bridged import BridgeCall

__all__ = ["CONTENT_TYPE", "BridgeMetrics", "CallCounters", "LiveState", "call_counters"]

P = "sip_ws_bridge_"
# The classic text format: every Prometheus version reads it (prometheus_client >= 0.22 defaults
# to format 1.0.0, which only Prometheus 3 announces).
CONTENT_TYPE: str = getattr(exposition, "CONTENT_TYPE_PLAIN_0_0_4", exposition.CONTENT_TYPE_LATEST)

# Bucket edges in seconds.
SETUP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0)
CONNECT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
JITTER_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2)
LOSS_BUCKETS = (0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
LATENCY_BUCKETS_MS = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 50.0, 100.0, 200.0)


class LatencySource(Protocol):
    """A latency histogram the bridge keeps (bridge.latency.LatencyHistogram)."""

    count: int
    total_ms: float

    def buckets(self, edges_ms: tuple[float, ...]) -> list[int]: ...


@dataclass
class CallCounters:
    """Counters a call keeps itself, read at scrape time (never updated per frame by metrics)."""

    caller_frames: int = 0
    caller_frames_lost: int = 0
    bot_frames_played: int = 0
    media_to_bot: int = 0
    media_to_bot_dropped: int = 0
    media_from_bot: int = 0
    bytes_to_bot: int = 0
    audio_bytes_from_bot: int = 0
    underruns: int = 0
    playout_dropped_bytes: int = 0
    bot_protocol_errors: int = 0
    bot_messages_ignored: int = 0
    bot_stream_sid_mismatches: int = 0

    def add(self, other: CallCounters) -> None:
        for name in _COUNTER_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))


_COUNTER_FIELDS = tuple(f.name for f in fields(CallCounters))


def call_counters(call: BridgeCall) -> CallCounters:
    channel = call.channel
    playout = channel.playout if channel is not None else None
    return CallCounters(
        caller_frames=channel.rx_frames if channel else 0,
        caller_frames_lost=channel.rx_overrun_frames if channel else 0,
        bot_frames_played=channel.tx_frames_audio if channel else 0,
        media_to_bot=call.media_to_bot,
        media_to_bot_dropped=call.media_drops,
        media_from_bot=call.bot_media_messages,
        bytes_to_bot=call.link.sent_bytes if call.link else 0,
        audio_bytes_from_bot=call.bot_bytes_in,
        underruns=playout.underruns if playout else 0,
        playout_dropped_bytes=playout.dropped_bytes if playout else 0,
        bot_protocol_errors=call.protocol_errors,
        bot_messages_ignored=sum(call.bot_ignored.values()),
        bot_stream_sid_mismatches=call.stream_sid_mismatches,
    )


@dataclass
class LiveState:
    """What the collector reads from the bridge at scrape time (built by the service)."""

    calls: list[BridgeCall] = field(default_factory=list)
    max_calls: int = 0
    accepting: bool = False
    registration_enabled: bool = False
    registered: bool = False
    registration_code: int = 0
    rejected_by_engine: Mapping[str, int] = field(default_factory=dict)
    # Requests the SIP stack answered with an error before any call existed, by reason.
    refused_requests: Mapping[str, int] = field(default_factory=dict)
    latency: Mapping[str, LatencySource | None] = field(default_factory=dict)
    webhooks: WebhookSender | None = None  # the status webhooks' sender (api.listen)


# name, help, CallCounters field, labels
_COUNTERS: tuple[tuple[str, str, str, dict[str, str]], ...] = (
    ("caller_frames", "20 ms frames of caller audio taken from the conference", "caller_frames", {}),
    ("caller_frames_lost", "caller frames lost because the event loop fell behind (ring overrun)",
     "caller_frames_lost", {}),
    ("bot_frames_played", "20 ms frames of bot audio played to callers", "bot_frames_played", {}),
    ("media_messages", "AgentStream media messages", "media_to_bot", {"direction": "to_bot"}),
    ("media_messages", "AgentStream media messages", "media_from_bot", {"direction": "from_bot"}),
    ("media_messages_dropped", "media messages to the bot dropped because its socket was backed up",
     "media_to_bot_dropped", {}),
    ("websocket_sent_bytes", "bytes written to bots' WebSockets", "bytes_to_bot", {}),
    ("bot_audio_received_bytes", "PCM bytes of audio received from bots", "audio_bytes_from_bot", {}),
    ("playout_underruns", "times a bot's audio ran dry in mid-speech", "underruns", {}),
    ("playout_dropped_bytes", "bot audio dropped because the playout buffer was full",
     "playout_dropped_bytes", {}),
    ("bot_protocol_errors", "bad messages from bots (dropped)", "bot_protocol_errors", {}),
    ("bot_messages_ignored", "bot messages with no meaning where they came (an event out of place, "
     "after stop, unknown): ignored", "bot_messages_ignored", {}),
    ("bot_stream_sid_mismatches", "bot messages naming another stream's streamSid (accepted)",
     "bot_stream_sid_mismatches", {}),
)


class _LiveCollector(Collector):
    def __init__(self, metrics: BridgeMetrics, live: Callable[[], LiveState]) -> None:
        self._metrics = metrics
        self._live = live

    def collect(self) -> Iterable[Metric]:
        state = self._live()
        yield from self._gauges(state)
        totals = CallCounters()
        totals.add(self._metrics.finished)
        for call in state.calls:
            totals.add(call_counters(call))
        families: dict[str, CounterMetricFamily] = {}
        for name, doc, attr, labels in _COUNTERS:
            family = families.get(name)
            if family is None:
                family = families[name] = CounterMetricFamily(P + name, doc, labels=list(labels))
            family.add_metric(list(labels.values()), getattr(totals, attr))
        yield from families.values()
        rejected = CounterMetricFamily(P + "rejected_invites", "INVITEs not answered, by reason",
                                       labels=["reason"])
        reasons = dict.fromkeys(("over_capacity", "shutting_down", "bot_unreachable"), 0)
        for source in (state.rejected_by_engine, self._metrics.rejected):
            for reason, count in source.items():
                reasons[reason] = reasons.get(reason, 0) + count
        for reason, count in sorted(reasons.items()):
            rejected.add_metric([reason], count)
        yield rejected
        refused = CounterMetricFamily(
            P + "sip_requests_refused", "requests answered with an error (or an ACK dropped) before any "
            "call existed, by reason", labels=["reason"])
        for reason, count in sorted({**dict.fromkeys(REFUSED_REQUEST_REASONS, 0),
                                     **state.refused_requests}.items()):
            refused.add_metric([reason], count)
        yield refused
        yield from self._latency(state)
        if state.webhooks is not None:
            yield from _webhook_metrics(state.webhooks)

    def _gauges(self, state: LiveState) -> Iterator[Metric]:
        active = GaugeMetricFamily(P + "active_calls", "calls in progress, by state", labels=["state"])
        answered = sum(1 for call in state.calls if call.outcome == "answered")
        active.add_metric(["connecting"], len(state.calls) - answered)
        active.add_metric(["answered"], answered)
        yield active
        yield GaugeMetricFamily(P + "max_calls", "the admission limit (sip.max_calls)", value=state.max_calls)
        yield GaugeMetricFamily(P + "accepting_calls", "1 while new calls are accepted, 0 while draining",
                                value=int(state.accepting))
        yield GaugeMetricFamily(P + "registration_enabled", "1 when the bridge registers (sip.register)",
                                value=int(state.registration_enabled))
        yield GaugeMetricFamily(P + "registered", "1 while the registration is active",
                                value=int(state.registered))
        yield GaugeMetricFamily(P + "registration_status_code", "SIP status of the last REGISTER answer",
                                value=state.registration_code)
        depth = [call.channel.playout.buffered_bytes / (2 * call.policy.clock_rate)
                 for call in state.calls if call.channel is not None]
        yield GaugeMetricFamily(P + "playout_buffered_seconds", "bot audio queued for playout, all calls",
                                value=sum(depth))
        yield GaugeMetricFamily(P + "playout_buffered_seconds_max",
                                "bot audio queued for playout, deepest call", value=max(depth, default=0.0))

    def _latency(self, state: LiveState) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            P + "added_latency_seconds",
            "latency the bridge adds: caller_to_bot = clock tick to the socket write; bot_to_caller = "
            "bot message to RTP, beyond the audio queued before it",
            labels=["direction"],
        )
        seen = False
        for direction, source in sorted(state.latency.items()):
            if source is None:
                continue
            seen = True
            counts = source.buckets(LATENCY_BUCKETS_MS)
            edges = [f"{edge / 1000:g}" for edge in LATENCY_BUCKETS_MS]
            buckets = [(edge, float(n)) for edge, n in zip(edges, counts, strict=True)]
            buckets.append(("+Inf", float(source.count)))
            family.add_metric([direction], buckets, sum_value=source.total_ms / 1000)
        if seen:
            yield family


class BridgeMetrics:
    def __init__(self, live: Callable[[], LiveState], profile_name: str) -> None:
        self.registry = r = CollectorRegistry()
        self.finished = CallCounters()
        self.rejected: dict[str, int] = {}

        def counter(name: str, doc: str, labels: tuple[str, ...] = (), *init: tuple[str, ...]) -> Counter:
            metric = Counter(P + name, doc, list(labels), registry=r)
            for values in init:
                metric.labels(*values)
            return metric

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(P + name, doc, registry=r, buckets=buckets)

        info = Gauge(P + "info", "version and profile of this bridge", ["version", "profile"], registry=r)
        info.labels(__version__, profile_name).set(1)
        Gauge(P + "start_time_seconds", "when the process started (Unix time)", registry=r).set(time.time())
        self.invites = counter("invites", "INVITEs taken for a call (not counting those the engine refused)")
        self.calls = counter(
            "calls", "calls ended, by outcome and end cause", ("outcome", "end_cause"),
            ("answered", "caller_hangup"), ("answered", "bot_hangup"), ("answered", "bridge_stop"),
            ("abandoned", "caller_abandoned"), ("rejected", "bot_unreachable"),
        )
        self.setup = histogram("call_setup_seconds",
                               "INVITE to the call confirmed (bot socket open, 200 OK, ACK)", SETUP_BUCKETS)
        self.bot_connect = histogram(
            "bot_connect_seconds", "time to open a bot's WebSocket (TCP, TLS, handshake, retries)",
            CONNECT_BUCKETS)
        self.duration = histogram("call_duration_seconds", "answered calls, answer to end", DURATION_BUCKETS)
        self.jitter = histogram(
            "rtp_jitter_seconds", "mean RTP interarrival jitter per call (PJSIP stream statistics)",
            JITTER_BUCKETS)
        self.loss = histogram("rtp_loss_ratio", "fraction of RTP packets lost per call", LOSS_BUCKETS)
        self.rtp_received = counter("rtp_received_packets", "RTP packets received from callers")
        self.rtp_lost = counter("rtp_lost_packets", "RTP packets lost on the way from callers")
        self.dtmf = counter("dtmf_digits", "DTMF digits received, by method", ("method",),
                            ("rfc4733",), ("info",))
        self.registration_failures = counter("registration_failures", "failed REGISTER attempts")
        self.reloads = counter("reloads", "profile reloads (SIGHUP), by result", ("result",),
                               ("applied",), ("rejected",))
        self.recordings = counter("recordings", "call recordings, by result", ("result",),
                                  ("saved",), ("failed",))
        self.call_errors = counter("call_errors", "calls ended by a bug in the bridge (logged)")
        r.register(_LiveCollector(self, live))

    # ---- events (loop thread) ---------------------------------------------------------

    def call_finished(self, call: BridgeCall) -> None:
        """Once per call, as it is removed from the live set: its counters move to the totals."""
        self.finished.add(call_counters(call))
        summary = call.summary
        outcome = str(summary.get("outcome", call.outcome))
        cause = str(summary.get("end_cause", "error"))
        self.calls.labels(outcome, cause if cause in END_CAUSES else "other").inc()
        if outcome in ("rejected", "redirected"):
            self.rejected["bot_unreachable"] = self.rejected.get("bot_unreachable", 0) + 1
        if call.answered_at is not None:
            self.duration.observe(time.monotonic() - call.answered_at)
        stats = call.sip_stats
        if stats.rx_packets or stats.rx_lost:
            self.rtp_received.inc(stats.rx_packets)
            self.rtp_lost.inc(stats.rx_lost)
            self.jitter.observe(stats.rx_jitter_ms_mean / 1000)
            self.loss.observe(stats.rx_lost / (stats.rx_packets + stats.rx_lost))
        if call.recorder is not None:
            self.recordings.labels("saved" if call.recorder.path else "failed").inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _webhook_metrics(webhooks: WebhookSender) -> Iterator[Metric]:
    stats = webhooks.stats
    for name, doc, value in (
        ("webhooks_sent", "status webhooks delivered (2xx)", stats.sent),
        ("webhooks_retried", "webhook attempts that failed and will be retried", stats.retried),
        ("webhooks_failed", "webhooks the receiver refused (4xx other than 408/429, redirects): not retried",
         stats.failed),
        ("webhooks_dropped", "webhooks given up after api.webhook_retry_window", stats.dropped),
    ):
        yield CounterMetricFamily(P + name, doc, value=value)
    yield GaugeMetricFamily(P + "webhook_queue_depth", "webhooks not settled yet", value=webhooks.depth)
    buckets, total = [], 0
    for edge, count in zip((*LATENCY_BUCKETS_S, float("inf")), stats.latency_counts, strict=True):
        total += count
        buckets.append((str(edge) if edge != float("inf") else "+Inf", total))
    yield HistogramMetricFamily(P + "webhook_delivery_seconds", "from a status event to its delivery",
                                buckets=buckets, sum_value=stats.latency_sum_s)
