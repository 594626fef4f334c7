"""Status webhooks that are never lost: a durable queue in `state_dir` and an ordered sender.

Every webhook is written to SQLite before its first attempt and deleted only when it is settled
(delivered, refused by the receiver, or given up after the retry window), so a crash or a restart
delivers what was pending, byte for byte and with the same event id. The receiver deduplicates on
`X-Bridge-Event-Id`; `X-Bridge-Signature` proves the body came from us and when it was sent.

Delivery is in order per key (a call's events to one URL): a webhook waits until the one before it
is settled. A timeout, a connection error, a 408, a 429 or a 5xx is retried after 1 s, doubling up
to 60 s, until the retry window has passed since the event; any other answer that is not 2xx
(other 4xx, and redirects, which are not followed) settles it as failed. Nothing here runs on, or
waits in, the media path: `enqueue` only appends to memory and hands the insert to the store's own
thread, and the sender is a task of the loop.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import hashlib
import hmac
import logging
import sqlite3
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import aiohttp

__all__ = [
    "EVENT_ID_HEADER",
    "LATENCY_BUCKETS_S",
    "SIGNATURE_HEADER",
    "RetryPolicy",
    "Webhook",
    "WebhookSender",
    "WebhookStats",
    "WebhookStore",
    "classify",
    "sign",
]

log = logging.getLogger("bridge.webhooks")

EVENT_ID_HEADER = "X-Bridge-Event-Id"
SIGNATURE_HEADER = "X-Bridge-Signature"

Outcome = Literal["delivered", "retry", "failed"]


def sign(secret: str, body: bytes, at: int) -> str:
    """The signature header's value: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`."""
    mac = hmac.new(secret.encode(), str(at).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


def classify(status: int | None) -> Outcome:
    """What an attempt's answer means; None is a timeout or a connection error."""
    if status is None or status in (408, 429) or status >= 500:
        return "retry"
    if 200 <= status < 300:
        return "delivered"
    return "failed"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    window_s: float = 600.0  # api.webhook_retry_window: retried until this long after the event
    first_s: float = 1.0
    max_s: float = 60.0
    timeout_s: float = 5.0  # one attempt, connection to the end of the answer

    def delay(self, attempts: int) -> float:
        """The wait after the attempts-th failed attempt: 1, 2, 4 ... max_s seconds."""
        return min(self.max_s, self.first_s * 2.0 ** max(0, attempts - 1))


@dataclass(slots=True)
class Webhook:
    event_id: str
    key: str  # the ordering key: one call's events to one URL go in order
    url: str
    body: bytes
    content_type: str
    created: float  # unix seconds: the retry window starts here
    attempts: int = 0
    next_at: float = 0.0  # unix seconds of the next attempt (0: now)
    row: int = 0  # the store's row (0: not stored yet)


# Delivery latency (event -> 2xx) bucket edges, seconds: retries push it to minutes.
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0)


@dataclass(slots=True)
class WebhookStats:
    sent: int = 0  # delivered (2xx)
    retried: int = 0  # attempts that will be retried
    failed: int = 0  # refused by the receiver (not retried)
    dropped: int = 0  # given up after the retry window
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    latency_sum_s: float = 0.0

    def delivered(self, seconds: float) -> None:
        self.sent += 1
        self.latency_sum_s += seconds
        index = next(
            (i for i, edge in enumerate(LATENCY_BUCKETS_S) if seconds <= edge), len(LATENCY_BUCKETS_S)
        )
        self.latency_counts[index] += 1


class WebhookStore:
    """The durable queue: one SQLite file, used from one thread only (the sender's store thread).

    WAL with synchronous=NORMAL: a commit survives the process being killed (the only failure a
    restart can recover from anyway) without an fsync per event."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS webhooks (row INTEGER PRIMARY KEY AUTOINCREMENT,"
            " event_id TEXT NOT NULL, key TEXT NOT NULL, url TEXT NOT NULL, body BLOB NOT NULL,"
            " content_type TEXT NOT NULL,"
            " created REAL NOT NULL, attempts INTEGER NOT NULL, next_at REAL NOT NULL)"
        )

    def add(self, hook: Webhook) -> int:
        cursor = self._db.execute(
            "INSERT INTO webhooks (event_id, key, url, body, content_type, created, attempts, next_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                hook.event_id,
                hook.key,
                hook.url,
                hook.body,
                hook.content_type,
                hook.created,
                hook.attempts,
                hook.next_at,
            ),
        )
        return int(cursor.lastrowid or 0)

    def attempted(self, row: int, attempts: int, next_at: float) -> None:
        self._db.execute(
            "UPDATE webhooks SET attempts = ?, next_at = ? WHERE row = ?", (attempts, next_at, row)
        )

    def settled(self, row: int) -> None:
        self._db.execute("DELETE FROM webhooks WHERE row = ?", (row,))

    def pending(self) -> list[Webhook]:
        """Every unsettled webhook, oldest first."""
        rows = self._db.execute(
            "SELECT event_id, key, url, body, content_type, created, attempts, next_at, row FROM webhooks"
            " ORDER BY row"
        ).fetchall()
        return [
            Webhook(
                str(r[0]),
                str(r[1]),
                str(r[2]),
                bytes(r[3]),
                str(r[4]),
                float(r[5]),
                int(r[6]),
                float(r[7]),
                int(r[8]),
            )
            for r in rows
        ]

    def close(self) -> None:
        self._db.close()


class WebhookSender:
    """Delivers webhooks from the durable queue, in order per key, on the event loop.

    `clock` is the wall clock (unix seconds), replaceable so tests can move time."""

    def __init__(
        self,
        store_path: Path,
        secret: str | None,
        policy: RetryPolicy | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store_path = store_path
        self.secret = secret
        self.policy = policy or RetryPolicy()
        self.stats = WebhookStats()
        self._ssl = ssl_context
        self._clock = clock
        self._queues: dict[str, collections.deque[Webhook]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._stored: dict[str, asyncio.Future[int]] = {}  # event id -> its insert, until it is done
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="webhook-store")
        self._store: WebhookStore | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing = False

    @property
    def depth(self) -> int:
        """Webhooks not yet settled."""
        return sum(len(queue) for queue in self._queues.values())

    async def start(self) -> int:
        """Open the store and take up what an earlier run left pending; returns how many."""
        loop = asyncio.get_running_loop()
        self._store = await loop.run_in_executor(self._thread, WebhookStore, self.store_path)
        pending = await loop.run_in_executor(self._thread, self._store.pending)
        # Redirects are not followed (a receiver that moved must be reconfigured, not guessed at).
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.policy.timeout_s),
            connector=aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True),
        )
        for hook in pending:
            self._queue(hook)
        if pending:
            log.info("webhooks: %d left pending by an earlier run, delivering them", len(pending))
        return len(pending)

    def enqueue(self, url: str, body: bytes, content_type: str, key: str) -> str:
        """Queue one webhook; returns its event id. Never waits: the insert runs on the store's
        thread and the first attempt waits for it, so nothing is sent that a crash could lose."""
        if self._store is None or self._closing:
            raise RuntimeError("the webhook sender is not running")
        hook = Webhook(uuid.uuid4().hex, key, url, body, content_type, self._clock())
        loop = asyncio.get_running_loop()
        insert = self._thread.submit(self._store.add, hook)
        self._stored[hook.event_id] = asyncio.wrap_future(insert, loop=loop)
        self._queue(hook)
        return hook.event_id

    async def close(self, timeout: float = 5.0) -> None:
        """Stop sending (what is pending stays in the store for the next run) and close the store."""
        self._closing = True
        workers = list(self._workers.values())
        for task in workers:
            task.cancel()
        if workers:
            await asyncio.wait(workers, timeout=timeout)
        if self._stored:
            await asyncio.wait(list(self._stored.values()), timeout=timeout)
        if self._session is not None:
            await self._session.close()
        if self._store is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._store.close)
        self._thread.shutdown(wait=True)

    # ---- internals -----------------------------------------------------------------------

    def _queue(self, hook: Webhook) -> None:
        queue = self._queues.setdefault(hook.key, collections.deque())
        queue.append(hook)
        if hook.key not in self._workers:
            self._workers[hook.key] = asyncio.ensure_future(self._deliver_in_order(hook.key, queue))

    async def _deliver_in_order(self, key: str, queue: collections.deque[Webhook]) -> None:
        try:
            while queue:
                hook = queue[0]
                await self._settle(hook)
                queue.popleft()
        finally:
            if self._workers.get(key) is asyncio.current_task():
                del self._workers[key]
            if not queue:
                self._queues.pop(key, None)

    async def _settle(self, hook: Webhook) -> None:
        """Attempt `hook` until it is delivered, refused or out of its window; then drop it from the store."""
        assert self._store is not None
        loop = asyncio.get_running_loop()
        stored = self._stored.pop(hook.event_id, None)
        if stored is not None:
            hook.row = await stored
        deadline = hook.created + self.policy.window_s
        while True:
            wait = hook.next_at - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            if hook.attempts and self._clock() >= deadline:
                self.stats.dropped += 1
                log.error(
                    "webhook %s to %s dropped: not delivered within %g s (%d attempts)",
                    hook.event_id,
                    hook.url,
                    self.policy.window_s,
                    hook.attempts,
                )
                break
            status, detail = await self._attempt(hook)
            hook.attempts += 1
            outcome = classify(status)
            if outcome == "delivered":
                self.stats.delivered(max(0.0, self._clock() - hook.created))
                break
            if outcome == "failed":
                self.stats.failed += 1
                log.error("webhook %s to %s refused with %s; not retried", hook.event_id, hook.url, detail)
                break
            self.stats.retried += 1
            hook.next_at = self._clock() + self.policy.delay(hook.attempts)
            log.warning(
                "webhook %s to %s failed (%s); retrying in %g s",
                hook.event_id,
                hook.url,
                detail,
                self.policy.delay(hook.attempts),
            )
            await loop.run_in_executor(
                self._thread, self._store.attempted, hook.row, hook.attempts, hook.next_at
            )
        await loop.run_in_executor(self._thread, self._store.settled, hook.row)

    async def _attempt(self, hook: Webhook) -> tuple[int | None, str]:
        """One POST: (status, what happened) with status None for a timeout or a connection error."""
        assert self._session is not None
        headers = {"Content-Type": hook.content_type, EVENT_ID_HEADER: hook.event_id}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, hook.body, int(self._clock()))
        try:
            async with self._session.post(
                hook.url, data=hook.body, headers=headers, allow_redirects=False
            ) as response:
                await response.read()
                return response.status, f"HTTP {response.status}"
        except TimeoutError:
            return None, f"no answer within {self.policy.timeout_s:g} s"
        except aiohttp.ClientError as exc:
            return None, f"{type(exc).__name__}: {exc}"
