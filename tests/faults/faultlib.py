"""Helpers of the fault and security suite: the results table, baselines, misbehaving bots.

Every test in tests/faults records one row per fault it injected (`record`); conftest.py prints
them as a table at the end of the run. A row says what was injected, whether the bridge
survived it, how many bad inputs were tried, how many *other* calls were disturbed (must be 0)
and whether memory and the call count came back to their baseline.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.botlib import Stream, TestBot
from tests.bridgelib import REPO, BridgeProcess, free_port, rtp_range

# ----------------------------------------------------------------------------------- the table


@dataclass
class FaultRow:
    group: str
    fault: str
    injected: int = 1  # how many times the fault was created
    survived: bool = True
    bad_inputs: int = 0  # malformed messages, datagrams, fuzz examples
    disturbed: int = 0  # other calls whose stream or audio was disturbed (must be 0)
    others: int = 0  # other calls that were up through the fault (and checked)
    baseline: str = "-"  # "ok" when memory and calls were checked back at their baseline
    note: str = ""


ROWS: list[FaultRow] = []


def record(
    group: str,
    fault: str,
    *,
    injected: int = 1,
    bad_inputs: int = 0,
    disturbed: int = 0,
    others: int = 0,
    baseline: str = "-",
    note: str = "",
) -> None:
    """Call after the test's assertions passed: the fault was injected and survived.

    `others`: how many other calls were up through the fault and checked; `disturbed`: how many
    of them were disturbed (the tests assert 0, so a recorded row always says 0 of N).
    """
    ROWS.append(FaultRow(group, fault, injected, True, bad_inputs, disturbed, others, baseline, note))


# ----------------------------------------------------------------------------------- the bridge


def start_bridge(
    tmp_path: Path, bot_url: str, overrides: dict[str, Any] | None = None, env: dict[str, str] | None = None
) -> BridgeProcess:
    """The bridge as users run it (`python -m bridge run --profile FILE`), started."""
    return BridgeProcess(tmp_path, bot_url, overrides, env=env).start()


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def open_calls(bridge: BridgeProcess) -> int:
    """Calls the bridge took (its "INVITE from" lines) that have no call summary yet."""
    records = bridge.records()
    taken = {
        r["call_sid"]
        for r in records
        if r.get("call_sid") and str(r.get("msg", "")).startswith("INVITE from")
    }
    done = {r.get("call_sid") for r in records if r.get("event") == "call_summary"}
    return len(taken - done)


class Baseline:
    """Memory and open calls of a running bridge, taken after a warm-up call."""

    def __init__(self, bridge: BridgeProcess) -> None:
        assert bridge.proc is not None
        self.bridge = bridge
        self.pid = bridge.proc.pid
        self.rss = rss_mb(self.pid)
        self.peak = self.rss

    def sample(self) -> float:
        value = rss_mb(self.pid)
        self.peak = max(self.peak, value)
        return value

    def back(self, *, timeout: float = 40.0, max_growth_mb: float = 25.0) -> str:
        """Waits for every call to be summarised; asserts memory is within `max_growth_mb`."""
        deadline = time.monotonic() + timeout
        while open_calls(self.bridge) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = open_calls(self.bridge)
        assert left == 0, f"{left} call(s) never ended:\n{self.bridge.log_text()[-3000:]}"
        growth = self.sample() - self.rss
        assert growth < max_growth_mb, f"RSS grew {growth:.1f} MB (from {self.rss:.1f} MB)"
        return f"ok (+{growth:.0f} MB)"


def run_caller(target: str, workdir: Path, *args: str, timeout: float = 60.0) -> dict[str, Any]:
    """The built-in pjsua2 test caller with any extra options (--auth, --tls-ca, --srtp ...)."""
    port = free_port()
    heard = workdir / f"heard-{port}.wav"
    cmd = [
        sys.executable,
        "-m",
        "bridge.tools.testcaller",
        target,
        "--local-port",
        str(port),
        "--heard",
        str(heard),
        "--rtp-port",
        str(rtp_range()),
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, cwd=REPO, timeout=timeout, check=False, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"test caller failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    result: dict[str, Any] = json.loads(lines[-1])
    result["heard_path"] = str(heard)
    return result


def background(fn: Any, *args: Any, **kwargs: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """Run fn in a thread; its result (or exception) lands in the returned dict."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test, which re-raises it
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def joined(thread: threading.Thread, out: dict[str, Any], timeout: float = 90.0) -> Any:
    thread.join(timeout)
    assert not thread.is_alive(), "background call did not finish"
    if "error" in out:
        raise out["error"]
    return out["result"]


# ----------------------------------------------------------------------------------- streams


def media_gaps(stream: Stream, chunk_ms: int = 100) -> dict[str, float]:
    """How continuous the caller's audio was at the bot: chunk numbering, timestamps, arrival gaps."""
    media = [e for e in stream.events if e.msg.get("event") == "media"]
    chunks = [int(e.msg["media"]["chunk"]) for e in media]
    stamps = [int(e.msg["media"]["timestamp"]) for e in media]
    arrival = [e.t for e in media]
    gaps = [b - a for a, b in itertools.pairwise(arrival)]
    return {
        "messages": float(len(media)),
        "chunks_ok": float(chunks == list(range(1, len(chunks) + 1))),
        "stamps_ok": float(all(s == chunk_ms * (i + 1) for i, s in enumerate(stamps[:-1]))),
        "max_gap_s": max(gaps) if gaps else 0.0,
        "span_s": (arrival[-1] - arrival[0]) if arrival else 0.0,
    }


def undisturbed(stream: Stream, *, seconds: float, chunk_ms: int = 100, max_gap_s: float = 0.6) -> bool:
    """A stream that ran `seconds` or more with every chunk, in order, never stalling > max_gap_s."""
    gaps = media_gaps(stream, chunk_ms)
    return (
        gaps["chunks_ok"] == 1.0
        and gaps["stamps_ok"] == 1.0
        and gaps["max_gap_s"] <= max_gap_s
        and gaps["messages"] * chunk_ms / 1000.0 >= seconds * 0.9
    )


# ----------------------------------------------------------------------------------- raw bots

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class RawBot:
    """A WebSocket "bot" that completes the opening handshake and then misbehaves:

    - "stall": never reads again (its receive buffer is tiny, so the bridge's backlog grows);
    - "deaf": reads and discards everything but never answers a ping (nor anything else);
    - "abort": aborts the TCP connection (no close frame: 1006 at the bridge) after `after_s`.
    """

    def __init__(self, mode: str, *, after_s: float = 1.0, first_message: str | None = None) -> None:
        self.mode = mode
        self.after_s = after_s
        self.first_message = first_message  # sent right after the handshake (e.g. audio to queue)
        self.port = 0
        self.connections = 0
        self.bytes_read = 0
        self.handshakes = threading.Event()
        self.closed = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/bot"

    def __enter__(self) -> RawBot:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            for writer in self._writers:
                writer.transport.abort()
            if self._server is not None:
                self._server.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.mode == "stall":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited by accepted sockets
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._serve, sock=sock, limit=1 << 16)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            key = ""
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.strip().lower() == "sec-websocket-key":
                    key = value.strip()
            accept = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()
            writer.write(
                (
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
                ).encode()
            )
            if self.first_message is not None:
                writer.write(text_frame(self.first_message))
            await writer.drain()
            self.handshakes.set()
            if self.mode == "stall":
                writer.transport.pause_reading()
                await asyncio.sleep(3600)
            elif self.mode == "abort":
                await asyncio.sleep(self.after_s)
                writer.transport.abort()
            else:
                while True:
                    data = await reader.read(65536)
                    if not data:
                        break
                    self.bytes_read += len(data)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self.closed.set()


def text_frame(text: str) -> bytes:
    """One unmasked WebSocket text frame (server to client)."""
    data = text.encode()
    if len(data) < 126:
        head = bytes([0x81, len(data)])
    elif len(data) < 1 << 16:
        head = bytes([0x81, 126]) + len(data).to_bytes(2, "big")
    else:
        head = bytes([0x81, 127]) + len(data).to_bytes(8, "big")
    return head + data


class TlsBot(TestBot):
    """The test bot behind wss:// with the given certificate."""

    def __init__(self, cert: Path, key: Path, **kwargs: Any) -> None:
        import ssl

        super().__init__(**kwargs)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)

    @property
    def url(self) -> str:
        return f"wss://{self.host}:{self.port}/bot"

    async def _start(self) -> None:
        from websockets.asyncio.server import serve

        self._server = await serve(
            self._handler, self.host, 0, compression=None, max_size=8 << 20, ssl=self.context
        )
        self.port = self._server.sockets[0].getsockname()[1]


# ----------------------------------------------------------------------------------- PKI


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path  # for 127.0.0.1 and localhost, signed by ca
    key: Path
    client_cert: Path  # a client certificate signed by ca
    client_key: Path
    rogue_cert: Path  # self-signed, for 127.0.0.1: what an impostor would present
    rogue_key: Path


def make_pki(directory: Path) -> Pki:
    """A throw-away CA, a server certificate for 127.0.0.1, a client certificate and a rogue one."""
    directory.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=30)

    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=fault-suite-ca",
        "-days",
        "2",
    )
    for name, cn in (("server", "localhost"), ("client", "trunk-client")):
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            "-extfile",
            "san.cnf",
        )
    run(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "rogue.key",
        "-out",
        "rogue.pem",
        "-subj",
        "/CN=localhost",
        "-days",
        "2",
        "-addext",
        "subjectAltName=IP:127.0.0.1,DNS:localhost",
    )
    return Pki(
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
        directory / "client.pem",
        directory / "client.key",
        directory / "rogue.pem",
        directory / "rogue.key",
    )


# ----------------------------------------------------------------------------------- misc


@contextlib.contextmanager
def env_vars(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def wait_until(predicate: Any, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())
