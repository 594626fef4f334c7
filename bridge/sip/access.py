"""Who may place a call through the bridge: source allow-list, per-source rate limit, digest auth.

Pure Python, no pjsua2: the engine asks `InboundGate.admit()` about every new INVITE on its SIP
thread, before the call reaches the asyncio loop or the bot. The answer is either None (go on)
or a `Verdict` (the SIP status to answer with). Order of the checks:

1. the source address must be in `sip.allow_from` (else 403; answering costs nothing, and no
   bot is ever contacted);
2. the source must be within its token bucket (`sip.rate_limit`; else 503 + Retry-After);
3. with `sip.inbound_auth`, the INVITE must carry valid digest credentials (else 401 with a
   challenge, or 403 for wrong ones).

Every rejection is counted (`counters`) and logged without flooding: the first rejection of
each kind from a source is logged, then one summary per kind and interval.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import socket
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from bridge.sip.digest import DigestAuthenticator
from bridge.sip.message import parse_headers

log = logging.getLogger("bridge.sip.access")

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_ALLOW_FROM: tuple[str, ...] = ("127.0.0.0/8", "::1")

# Bounds on per-source state: a flood of spoofed UDP sources must not grow memory without end.
MAX_TRACKED_SOURCES = 10_000


@dataclass(frozen=True, slots=True)
class Verdict:
    """How to answer an INVITE that is not let in."""

    code: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)
    kind: str = ""  # the counter it was counted in


def split_source(source: str) -> tuple[str, int]:
    """("1.2.3.4", 5060) from "1.2.3.4:5060"; IPv6 as "[::1]:5060"; port 0 if none."""
    text = source.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    return host, int(port) if port.isascii() and port.isdigit() else 0


def parse_address(host: str) -> IpAddress | None:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_rule(rule: str) -> IpNetwork | None:
    """A CIDR or a single address as a network; None if `rule` is neither (then a host name)."""
    try:
        return ipaddress.ip_network(rule.strip(), strict=False)
    except ValueError:
        return None


Resolver = Callable[[str], list[str]]


def resolve_host(name: str) -> list[str]:
    """Every address of a host name (blocking DNS: only at start)."""
    infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_UDP)
    return sorted({str(info[4][0]) for info in infos})


class SourcePolicy:
    """The `sip.allow_from` list: CIDRs, addresses and host names (resolved once, at start)."""

    def __init__(self, rules: Sequence[str], resolver: Resolver = resolve_host) -> None:
        networks: list[IpNetwork] = []
        self.unresolved: list[tuple[str, str]] = []  # (host, why), for the start-up log
        for rule in rules:
            network = parse_rule(rule)
            if network is not None:
                networks.append(network)
                continue
            try:
                addresses = resolver(rule)
            except OSError as exc:
                self.unresolved.append((rule, str(exc.strerror or exc)))
                continue
            for address in addresses:
                parsed = parse_rule(address)
                if parsed is not None:
                    networks.append(parsed)
        self.rules = tuple(rules)
        self.networks = tuple(networks)
        self.open_to_all = any(n.prefixlen == 0 for n in networks)

    def allows(self, host: str) -> bool:
        address = parse_address(host)
        if address is None:
            return False
        return any(address.version == n.version and address in n for n in self.networks)


class RateLimiter:
    """A token bucket per source address: `rate` INVITEs per second, bursts of `burst`."""

    def __init__(self, rate: float, burst: int, max_sources: int = MAX_TRACKED_SOURCES) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    @property
    def retry_after_s(self) -> int:
        """Seconds until a source that ran dry has a token again (at least 1)."""
        return max(1, math.ceil(1.0 / self.rate)) if self.rate > 0 else 60

    def allow(self, source: str, now: float) -> bool:
        if self.rate <= 0:
            return True
        tokens, at = self._buckets.pop(source, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[source] = (tokens, now)  # most recent last
        while len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)  # the least recently seen: it refills to full anyway
        return allowed

    def __len__(self) -> int:
        return len(self._buckets)


class LogThrottle:
    """Logs the first event of a kind per source, then one summary per kind every `interval` s."""

    def __init__(self, logger: logging.Logger, interval_s: float = 60.0,
                 max_sources: int = MAX_TRACKED_SOURCES) -> None:
        self._log = logger
        self.interval_s = interval_s
        self.max_sources = max_sources
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._pending: dict[str, dict[str, int]] = {}  # kind -> source -> count not yet logged
        self._next_flush = 0.0
        self.lines = 0  # log lines written (tests check the log is not flooded)

    def event(self, kind: str, source: str, message: str, now: float) -> None:
        key = (kind, source)
        if key not in self._seen:
            self._seen[key] = None
            while len(self._seen) > self.max_sources:
                self._seen.popitem(last=False)
            self.lines += 1
            self._log.warning("%s (further ones from %s are summarised every %.0f s)",
                              message, source, self.interval_s)
            if not self._next_flush:
                self._next_flush = now + self.interval_s
            return
        per_source = self._pending.setdefault(kind, {})
        if source in per_source or len(per_source) < self.max_sources:
            per_source[source] = per_source.get(source, 0) + 1
        if not self._next_flush:
            self._next_flush = now + self.interval_s

    def flush(self, now: float, *, force: bool = False) -> None:
        """Log the summaries that are due (called about once a second)."""
        if not self._pending or (not force and now < self._next_flush):
            return
        for kind, per_source in self._pending.items():
            total = sum(per_source.values())
            top = sorted(per_source.items(), key=lambda item: -item[1])[:3]
            shown = ", ".join(f"{src} ({count})" for src, count in top)
            self.lines += 1
            self._log.warning("%s: %d more in the last %.0f s from %d source(s); most from %s",
                              kind, total, self.interval_s, len(per_source), shown)
        self._pending.clear()
        self._next_flush = now + self.interval_s


@dataclass(frozen=True, slots=True)
class RateLimit:
    invites_per_second: float = 50.0
    burst: int = 100


class InboundGate:
    """The checks every new INVITE goes through (see the module docstring). SIP thread only."""

    COUNTERS = ("forbidden_source", "rate_limited", "auth_challenged", "auth_failed", "auth_ok")

    def __init__(
        self,
        allow_from: Sequence[str] = DEFAULT_ALLOW_FROM,
        rate_limit: RateLimit | None = RateLimit(),
        auth: DigestAuthenticator | None = None,
        *,
        resolver: Resolver = resolve_host,
        logger: logging.Logger = log,
        summary_interval_s: float = 60.0,
    ) -> None:
        self.policy = SourcePolicy(allow_from, resolver)
        self.limiter = (
            RateLimiter(rate_limit.invites_per_second, rate_limit.burst) if rate_limit is not None else None
        )
        self.auth = auth
        self.throttle = LogThrottle(logger, summary_interval_s)
        self.counters: dict[str, int] = dict.fromkeys(self.COUNTERS, 0)

    def describe(self) -> Iterable[str]:
        """Start-up log lines: what is checked."""
        yield "INVITEs accepted from " + ", ".join(self.policy.rules)
        for host, why in self.policy.unresolved:
            yield f"sip.allow_from: cannot resolve {host} ({why}); INVITEs from it get 403"
        if self.policy.open_to_all:
            yield "sip.allow_from lets any address place calls: protect it with digest auth or a firewall"
        if self.limiter is not None:
            limiter = self.limiter
            yield f"rate limit: {limiter.rate:g} INVITEs/s per source, bursts of {limiter.burst:g}"
        if self.auth is not None:
            yield f"INVITEs must authenticate (digest, realm {self.auth.realm!r})"

    def admit(self, source: str, message: str, now: float) -> Verdict | None:
        host, _ = split_source(source)
        if not self.policy.allows(host):
            return self._reject(
                "forbidden_source", host, now, Verdict(403, "Forbidden"),
                f"INVITE from {source} rejected with 403: the address is not in sip.allow_from")
        if self.limiter is not None and not self.limiter.allow(host, now):
            retry = self.limiter.retry_after_s
            verdict = Verdict(503, "Rate Limited", {"Retry-After": str(retry)})
            return self._reject(
                "rate_limited", host, now, verdict,
                f"INVITE from {source} rejected with 503: over the rate limit (sip.rate_limit)")
        if self.auth is None:
            return None
        authorizations = [v for k, v in parse_headers(message) if k.lower() == "authorization"]
        result = self.auth.check("INVITE", authorizations, host, now)
        if result.ok:
            self.counters["auth_ok"] += 1
            return None
        if result.challenge is not None:
            self.counters["auth_challenged"] += 1
            if authorizations:  # a stale or foreign nonce: only worth a debug line
                log.debug("INVITE from %s re-challenged: %s", source, result.why)
            return Verdict(401, "Unauthorized", {"WWW-Authenticate": result.challenge}, "auth_challenged")
        return self._reject("auth_failed", host, now, Verdict(403, "Forbidden"),
                            f"INVITE from {source} rejected with 403: {result.why}")

    def _reject(self, kind: str, host: str, now: float, verdict: Verdict, message: str) -> Verdict:
        self.counters[kind] += 1
        self.throttle.event(kind, host, message, now)
        return Verdict(verdict.code, verdict.reason, verdict.headers, kind)

    def tick(self, now: float) -> None:
        """About once a second: due log summaries."""
        self.throttle.flush(now)
