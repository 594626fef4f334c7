"""Real, independent SIP peers for the interop tests: start/stop helpers and analysis tools.

Everything here talks to 127.0.0.1 only and runs each external program under timeout(1), in its own
process group, so stop() can always kill it (and anything it spawned). Nothing here is a pytest
fixture: tests/conftest.py (or a test module) wraps these in fixtures.

Peers (configs and media in tests/peers/, see tests/peers/README.md):
  * Kamailio   registrar with digest auth + proxy + dispatcher (Kamailio.start)
  * sipp       scripted UAC/UAS with RTP and DTMF (run_sipp, start_sipp)
  * baresip    independent softphone as caller or registered callee (Baresip.call, Baresip.start_callee)
  * Asterisk   a PBX the bridge registers to; dials the bridge, sends DTMF, records (Asterisk.start)
Tools: compare_audio, dominant_frequency, rtp_timing, rtp_events, TsharkCapture, free ports.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import wave
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

LOOPBACK = "127.0.0.1"
PEERS_DIR = Path(__file__).resolve().parent / "peers"
MEDIA_DIR = PEERS_DIR / "media"
SIPP_DIR = PEERS_DIR / "sipp"

#: `-key audio` values for the sipp UAC scenarios (headerless codec files, loop forever, payload type)
SIPP_AUDIO = {
    "pcmu": f"{MEDIA_DIR / 'speech.pcmu'},-1,0",
    "pcma": f"{MEDIA_DIR / 'speech.pcma'},-1,8",
    "g722": f"{MEDIA_DIR / 'speech.g722'},-1,9",
}
#: the speech every sipp scenario streams (speech.* are encodings of this 6.4 s, 8 kHz file)
SPEECH_WAV = MEDIA_DIR / "speech_8k.wav"
TONE_WAV = MEDIA_DIR / "tone1k_8k.wav"

# unix socket paths must stay below 108 bytes; longer work dirs get their socket dir under /tmp
_MAX_SOCK_PATH = 100


# --------------------------------------------------------------------------------------------------
# processes and ports


def _check_loopback_host(host: str) -> None:
    if host != LOOPBACK:
        raise ValueError(f"test peers only talk to {LOOPBACK}, not {host!r}")


def _check_sip_target(target: str) -> None:
    """Accept 'HOST:PORT', 'sip:user@HOST:PORT', 'sip:HOST:PORT;params' with HOST == 127.0.0.1."""
    t = target.split(";", 1)[0]
    if t.startswith(("sip:", "sips:")):
        t = t.split(":", 1)[1]
    t = t.rsplit("@", 1)[-1]
    host = t.rsplit(":", 1)[0] if ":" in t else t
    _check_loopback_host(host)


class PeerProcess:
    """A program run under `timeout -k 5 MAX`, in its own process group, output to a log file."""

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        max_seconds: float = 600,
        stdin: int | IO[Any] | None = subprocess.DEVNULL,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")  # closed in stop()
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self.popen = subprocess.Popen(
            ["timeout", "-k", "5", f"{max_seconds:.0f}", *self.argv],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=stdin,
            cwd=cwd,
            env=full_env,
            start_new_session=True,
        )
        self.pid = self.popen.pid  # pid of timeout(1) == the process group id

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float) -> int | None:
        """Wait up to `timeout` s; the exit code (124 = killed by timeout(1)) or None if still running."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float = 5.0, sig: int = signal.SIGTERM) -> int | None:
        """SIGTERM the whole process group, SIGKILL it after `grace` s. Always reaps; idempotent."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # the leader may be gone while children of the group linger
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover - a D-state process
            pass
        if self.popen.stdin:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
        if not self._log.closed:
            self._log.close()
        return self.popen.returncode

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


_handed_out: set[int] = set()
_port_lock = threading.Lock()


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        try:
            u.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_udp_tcp_port() -> int:
    """A port that is free on 127.0.0.1 for both UDP and TCP (never the same one twice per process)."""
    with _port_lock:
        for _ in range(500):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                t.bind((LOOPBACK, 0))
                port: int = t.getsockname()[1]
                if port in _handed_out or not _udp_free(port):
                    continue
            _handed_out.add(port)
            return port
    raise RuntimeError("no free UDP+TCP port on 127.0.0.1")


def free_udp_range(count: int, lo: int = 20000, hi: int = 30000) -> tuple[int, int]:
    """`count` consecutive UDP ports free on 127.0.0.1 (first even), e.g. an RTP range: (first, last)."""
    with _port_lock:
        for _ in range(500):
            base = random.randrange(lo, hi - count) & ~1
            ports = range(base, base + count)
            if any(p in _handed_out for p in ports):
                continue
            if all(_udp_free(p) for p in ports):
                _handed_out.update(ports)
                return base, base + count - 1
    raise RuntimeError(f"no {count} free consecutive UDP ports in {lo}-{hi}")


def _wait_until(pred: Any, timeout: float, step: float = 0.1) -> bool:
    end = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(step)


def _socket_dir(preferred: Path, sock_name: str) -> tuple[Path, bool]:
    """`preferred` if a socket in it fits the unix path limit, else a fresh short dir (True = temporary)."""
    if len(str(preferred / sock_name)) <= _MAX_SOCK_PATH:
        preferred.mkdir(parents=True, exist_ok=True)
        return preferred, False
    return Path(tempfile.mkdtemp(prefix="peer-", dir="/tmp")), True


def _render(template: Path, dest: Path, values: Mapping[str, str]) -> Path:
    text = template.read_text()
    for k, v in values.items():
        text = text.replace(f"@@{k}@@", v)
    left = re.findall(r"@@[A-Z_]+@@", text)
    if left:
        raise ValueError(f"{template}: unrendered placeholders {sorted(set(left))}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)
    return dest


def _contact_port(uri: str) -> int | None:
    """5080 from 'sip:bridge@127.0.0.1:5080;ob' (None if no port)."""
    m = re.search(r"@?[^@;:>]+:(\d+)(?:[;>]|$)", uri.split("sip:", 1)[-1])
    return int(m.group(1)) if m else None


def _tail(text: str, n: int = 40) -> str:
    return "\n".join(text.splitlines()[-n:])


# --------------------------------------------------------------------------------------------------
# Kamailio: registrar (digest auth) + proxy + dispatcher


class Kamailio:
    """kamailio 5.6 on udp:127.0.0.1:PORT, configured from tests/peers/kamailio/.

    * REGISTER is challenged (digest, db_text users in tests/peers/kamailio/db/subscriber, realm = From
      domain): bridge/bridgepass, ua/secret1, ua2/secret2, baresip/secret3, sippuas/secret5, lb/lbpass.
    * INVITE sip:lb@... goes round-robin to dispatcher set 1 (`dispatcher_targets`, e.g.
      ["sip:127.0.0.1:5080"]), failover after 5 s / 408 / 5xx, OPTIONS probing every 5 s.
    * Any other INVITE goes to the registered contact of the Request-URI user (404 if none); INVITEs
      are not authenticated. Record-Route; media does not pass through kamailio.
    """

    def __init__(self, workdir: Path, port: int, proc: PeerProcess, run_dir: Path, tmp_run: bool) -> None:
        self.workdir = workdir
        self.port = port
        self.proc = proc
        self.log_path = proc.log_path
        self.run_dir = run_dir
        self._tmp_run = tmp_run

    @property
    def uri(self) -> str:
        """The registrar/proxy URI, e.g. for the bridge's registrar setting."""
        return f"sip:{LOOPBACK}:{self.port}"

    @property
    def ctl(self) -> str:
        return f"unix:{self.run_dir / 'kamailio_ctl'}"

    @classmethod
    def start(
        cls,
        workdir: Path,
        port: int,
        dispatcher_targets: Sequence[str] = (),
        *,
        max_seconds: float = 900,
        debug: int = 2,
    ) -> Kamailio:
        workdir = Path(workdir) / "kamailio"
        workdir.mkdir(parents=True, exist_ok=True)
        for t in dispatcher_targets:
            _check_sip_target(t)
        src = PEERS_DIR / "kamailio"
        db = workdir / "db"
        if db.exists():
            shutil.rmtree(db)
        shutil.copytree(src / "db", db)
        run_dir, tmp_run = _socket_dir(workdir / "run", "kamailio_ctl")
        ds = workdir / "dispatcher.list"
        ds.write_text(
            "# setid destination (rendered by tests/peerlib.py)\n"
            + "".join(f"1 {t}\n" for t in dispatcher_targets)
        )
        cfg = _render(
            src / "kamailio.cfg",
            workdir / "kamailio.cfg",
            {"PORT": str(port), "DB_DIR": str(db), "RUN_DIR": str(run_dir), "DISPATCHER": str(ds)},
        )
        if debug != 2:
            cfg.write_text(cfg.read_text().replace("\ndebug=2\n", f"\ndebug={debug}\n", 1))
        chk = subprocess.run(
            ["timeout", "20", "kamailio", "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30
        )
        if chk.returncode != 0:
            raise RuntimeError(f"kamailio config check failed:\n{_tail(chk.stdout + chk.stderr)}")
        proc = PeerProcess(
            ["kamailio", "-f", str(cfg), "-DD", "-E", "-Y", str(run_dir)],
            workdir / "kamailio.log",
            cwd=workdir,
            max_seconds=max_seconds,
        )
        k = cls(workdir, port, proc, run_dir, tmp_run)

        def up() -> bool:
            if not proc.alive():
                return True
            try:
                return "uptime" in k.kamcmd("core.uptime", timeout=3)
            except (RuntimeError, subprocess.TimeoutExpired):
                return False

        _wait_until(up, 15, 0.2)
        if not proc.alive() or not up():
            k.stop()
            raise RuntimeError(f"kamailio did not start on {LOOPBACK}:{port}:\n{_tail(proc.log_text())}")
        return k

    def kamcmd(self, *args: str, timeout: float = 10) -> str:
        r = subprocess.run(
            ["timeout", str(int(timeout) + 1), "kamcmd", "-s", self.ctl, *args],
            capture_output=True,
            text=True,
            timeout=timeout + 5,
        )
        if r.returncode != 0:
            raise RuntimeError(f"kamcmd {' '.join(args)} failed ({r.returncode}): {r.stdout}{r.stderr}")
        return r.stdout

    def registered_contacts(self, aor: str | None = None) -> dict[str, list[str]]:
        """{AoR user: [contact URIs]} from `ul.dump` (only `aor` if given)."""
        out = self.kamcmd("ul.dump")
        result: dict[str, list[str]] = {}
        cur: str | None = None
        for line in out.splitlines():
            m = re.match(r"\s*AoR:\s*(\S+)", line)
            if m:
                cur = m.group(1)
                result.setdefault(cur, [])
                continue
            m = re.match(r"\s*Address:\s*(\S+)", line)
            if m and cur is not None:
                result[cur].append(m.group(1))
        if aor is not None:
            return {aor: result.get(aor, [])}
        return result

    def wait_registered(
        self, aor: str, timeout: float = 10, count: int = 1, port: int | None = None
    ) -> list[str]:
        """Wait until `aor` has at least `count` contacts (with SIP `port`, if given); returns all its
        contacts (empty list on timeout)."""
        got: list[str] = []

        def ok() -> bool:
            nonlocal got
            got = self.registered_contacts(aor)[aor]
            if port is not None:
                return sum(_contact_port(c) == port for c in got) >= count
            return len(got) >= count

        _wait_until(ok, timeout, 0.2)
        return got

    def dispatcher_list(self) -> str:
        """`kamcmd dispatcher.list` (FLAGS: AP = active+probing, IP = inactive+probing)."""
        return self.kamcmd("dispatcher.list")

    def stop(self) -> None:
        self.proc.stop()
        if self._tmp_run:
            shutil.rmtree(self.run_dir, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# sipp


@dataclass
class SippResult:
    rc: int  # 0 all calls ok, 1 some failed, 255 fatal or `timeout` hit, 254 cannot bind, 99 no call
    stats: dict[str, str]  # last row of the -trace_stat CSV (cumulative "(C)" columns)
    messages: str  # -trace_msg log (every SIP message sent/received)
    errors: str = ""  # -trace_err log (unexpected messages)
    logs: str = ""  # <log> actions (-trace_logs), e.g. uas_media's "INFO-DTMF digit=..."
    stderr: str = ""
    files: dict[str, Path] = field(default_factory=dict)

    def _int(self, key: str) -> int:
        try:
            return int(self.stats.get(key, "0") or 0)
        except ValueError:
            return 0

    @property
    def successful(self) -> int:
        return self._int("SuccessfulCall(C)")

    @property
    def failed(self) -> int:
        return self._int("FailedCall(C)")

    @property
    def created(self) -> int:
        return self._int("TotalCallCreated")


_sipp_seq = itertools.count(1)


def _sipp_scenario(scenario: str | Path) -> Path:
    p = Path(scenario)
    if p.is_file():
        return p.resolve()
    name = p.name if p.suffix == ".xml" else p.name + ".xml"
    for cand in (SIPP_DIR / name, SIPP_DIR / "odd" / name):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"sipp scenario {scenario!r} not found in {SIPP_DIR}")


class SippRun:
    """A sipp started in the background (e.g. the UAS side); .wait() -> SippResult, .stop()."""

    def __init__(self, proc: PeerProcess, files: dict[str, Path], local_port: int, media_port: int) -> None:
        self.proc = proc
        self.files = files
        self.local_port = local_port
        self.media_port = media_port
        self.log_path = proc.log_path

    @property
    def uri_host(self) -> str:
        return f"{LOOPBACK}:{self.local_port}"

    def result(self) -> SippResult:
        def rd(k: str) -> str:
            try:
                return self.files[k].read_text(errors="replace")
            except (FileNotFoundError, KeyError):
                return ""

        stats: dict[str, str] = {}
        stat_text = rd("stats")
        rows = [r for r in csv.reader(io.StringIO(stat_text), delimiter=";") if r]
        if len(rows) >= 2:
            stats = dict(zip(rows[0], rows[-1], strict=False))
        rc = self.proc.popen.returncode
        return SippResult(
            rc=-1 if rc is None else rc,
            stats=stats,
            messages=rd("messages"),
            errors=rd("errors"),
            logs=rd("logs"),
            stderr=rd("stderr"),
            files=dict(self.files),
        )

    def wait(self, timeout: float) -> SippResult:
        if self.proc.wait(timeout) is None:
            self.proc.stop()
        else:
            self.proc.stop()  # reap stragglers of the group, close the log
        return self.result()

    def stop(self) -> SippResult:
        self.proc.stop(sig=signal.SIGINT)  # sipp writes its final stats on SIGINT/SIGTERM
        return self.result()


def start_sipp(
    workdir: Path,
    target: str | None,
    scenario: str | Path,
    *,
    service: str = "bridge",
    keys: Mapping[str, str] | None = None,
    duration_ms: int = 2000,
    calls: int = 1,
    rate: float | None = None,
    limit: int | None = None,
    local_port: int | None = None,
    media_port: int | None = None,
    timeout: float = 60,
    recv_timeout_ms: int | None = None,
    auth: tuple[str, str] | None = None,
    extra_args: Sequence[str] = (),
) -> SippRun:
    """Start sipp in the background; `target` None = UAS (listens on `local_port`). See run_sipp."""
    if target is not None:
        _check_sip_target(target)
    sf = _sipp_scenario(scenario)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    local_port = local_port or free_udp_tcp_port()
    media_port = media_port or free_udp_range(4)[0]
    tag = f"sipp{next(_sipp_seq)}-{sf.stem}"
    files = {
        "stats": workdir / f"{tag}_stats.csv",
        "messages": workdir / f"{tag}_messages.log",
        "errors": workdir / f"{tag}_errors.log",
        "screen": workdir / f"{tag}_screen.log",
        "logs": workdir / f"{tag}_logs.log",
        "stderr": workdir / f"{tag}.out",
    }
    argv = ["sipp"]
    if target is not None:
        argv.append(target)
    argv += ["-sf", str(sf), "-s", service, "-i", LOOPBACK, "-p", str(local_port)]
    argv += ["-mi", LOOPBACK, "-mp", str(media_port), "-m", str(calls), "-d", str(duration_ms)]
    if rate is not None:
        argv += ["-r", f"{rate:g}"]
    if limit is not None:
        argv += ["-l", str(limit)]
    if recv_timeout_ms is not None:
        argv += ["-recv_timeout", str(recv_timeout_ms)]
    if auth is not None:
        argv += ["-au", auth[0], "-ap", auth[1]]
    for k, v in (keys or {}).items():
        argv += ["-key", k, v]
    # without -timeout_error, sipp 3.6's -timeout only stops new calls and waits for running ones
    argv += ["-timeout", f"{max(1, int(timeout))}s", "-timeout_error", "-nostdin"]
    argv += ["-trace_stat", "-fd", "1", "-stf", str(files["stats"])]
    argv += ["-trace_msg", "-message_file", str(files["messages"])]
    argv += ["-trace_err", "-error_file", str(files["errors"])]
    argv += ["-trace_screen", "-screen_file", str(files["screen"])]
    argv += ["-trace_logs", "-log_file", str(files["logs"])]
    argv += list(extra_args)
    proc = PeerProcess(argv, files["stderr"], cwd=workdir, max_seconds=timeout + 10)
    return SippRun(proc, files, local_port, media_port)


def run_sipp(
    workdir: Path,
    target: str | None,
    scenario: str | Path,
    *,
    service: str = "bridge",
    keys: Mapping[str, str] | None = None,
    duration_ms: int = 2000,
    calls: int = 1,
    rate: float | None = None,
    limit: int | None = None,
    local_port: int | None = None,
    media_port: int | None = None,
    timeout: float = 60,
    recv_timeout_ms: int | None = None,
    auth: tuple[str, str] | None = None,
    extra_args: Sequence[str] = (),
) -> SippResult:
    """Run sipp in the foreground until it exits (at most `timeout` + 15 s).

    target: "127.0.0.1:PORT" (the bridge, or kamailio); scenario: a name in tests/peers/sipp (or odd/)
    such as "uac_media_dtmf", or a path. `service` is the Request-URI user. keys: `-key` values, e.g.
    {"audio": SIPP_AUDIO["pcmu"]} for the uac_media_dtmf* scenarios, {"contact": ..., "expires": "300"}
    with auth=(user, password) for register_auth. duration_ms is `-d` (the hold time of the UAC
    scenarios), calls `-m`, rate `-r` (calls/s), limit `-l` (max concurrent). Trace files land in
    workdir as sipp<N>-<scenario>_{stats.csv,messages.log,errors.log,screen.log,logs.log}.
    """
    run = start_sipp(
        workdir,
        target,
        scenario,
        service=service,
        keys=keys,
        duration_ms=duration_ms,
        calls=calls,
        rate=rate,
        limit=limit,
        local_port=local_port,
        media_port=media_port,
        timeout=timeout,
        recv_timeout_ms=recv_timeout_ms,
        auth=auth,
        extra_args=extra_args,
    )
    return run.wait(timeout + 15)


# --------------------------------------------------------------------------------------------------
# baresip


@dataclass
class BaresipResult:
    established: bool  # "Call established" seen
    received_wav: Path | None  # what baresip received (sndfile dump-*-dec.wav, 8 kHz mono)
    sent_wav: Path | None  # what baresip sent (dump-*-enc.wav)
    log_path: Path
    log: str
    rc: int | None
    dtmf_received: str = ""  # RFC 4733 digits baresip received ("received event: 'X' (end=1)")


_baresip_seq = itertools.count(1)


def _pad_wav(src: Path, dest: Path, total_s: float) -> Path:
    """8 kHz mono s16 copy of `src`, padded with silence to at least total_s (aufile EOF ends a call)."""
    length = float(
        subprocess.run(
            ["soxi", "-D", str(src)], capture_output=True, text=True, timeout=20, check=True
        ).stdout
    )
    pad = max(0.0, total_s - length)
    subprocess.run(
        ["sox", str(src), "-r", "8000", "-c", "1", "-b", "16", str(dest), "pad", "0", f"{pad:.2f}"],
        check=True,
        timeout=30,
        capture_output=True,
    )
    return dest


def _render_baresip(
    role: str, cfg_dir: Path, values: Mapping[str, str], account_values: Mapping[str, str]
) -> None:
    src = PEERS_DIR / "baresip" / role
    _render(src / "config", cfg_dir / "config", values)
    _render(src / "accounts", cfg_dir / "accounts", account_values)


def _baresip_dtmf(log: str) -> str:
    return "".join(re.findall(r"received event: '(.)' \(end=1\)", log))


def _dumps(snd: Path, kind: str) -> list[Path]:
    return sorted(snd.glob(f"dump-*-{kind}.wav"), key=lambda p: p.stat().st_mtime)


class Baresip:
    """baresip 1.0 (headless: WAV file as microphone, ALSA null sink, sndfile dumps both directions)."""

    def __init__(self, proc: PeerProcess, cfg_dir: Path, snd_dir: Path, sip_port: int) -> None:
        self.proc = proc
        self.cfg_dir = cfg_dir
        self.snd_dir = snd_dir
        self.sip_port = sip_port
        self.log_path = proc.log_path

    @staticmethod
    def call(
        workdir: Path,
        uri: str,
        wav: Path = SPEECH_WAV,
        digits: str = "",
        *,
        hold_s: float = 4.0,
        dtmf_delay_s: float = 1.5,
        answer_timeout_s: float = 10.0,
        codecs: str = "PCMU,PCMA,G722",
        sip_port: int | None = None,
        max_seconds: float = 60,
    ) -> BaresipResult:
        """Dial `uri` (e.g. sip:bot@127.0.0.1:5080), send `wav` as the microphone, send `digits` as
        RFC 4733 events `dtmf_delay_s` after the answer (one key every 0.3 s), keep the call `hold_s` more
        seconds, hang up, quit. Returns what baresip received as a WAV (BaresipResult.received_wav)."""
        _check_sip_target(uri)
        workdir = Path(workdir) / f"baresip-call{next(_baresip_seq)}"
        cfg = workdir / "cfg"
        snd = workdir / "dumps"
        snd.mkdir(parents=True, exist_ok=True)
        cfg.mkdir(parents=True, exist_ok=True)
        sip_port = sip_port or free_udp_tcp_port()
        rtp = free_udp_range(20)
        total = answer_timeout_s + dtmf_delay_s + 0.3 * len(digits) + hold_s + 10
        mic = _pad_wav(Path(wav), workdir / "mic.wav", total)
        _render_baresip(
            "caller",
            cfg,
            {
                "SIP_PORT": str(sip_port),
                "WAV": str(mic),
                "SND_PATH": str(snd),
                "RTP_PORTS": f"{rtp[0]}-{rtp[1]}",
            },
            {"CODECS": codecs},
        )
        proc = PeerProcess(
            ["baresip", "-f", str(cfg), "-t", f"{max_seconds:.0f}"],
            workdir / "baresip.log",
            cwd=workdir,
            max_seconds=max_seconds + 5,
            stdin=subprocess.PIPE,
        )
        assert proc.popen.stdin is not None
        stdin = proc.popen.stdin

        def send(text: str) -> None:
            with contextlib.suppress(BrokenPipeError, OSError):
                stdin.write(text.encode())
                stdin.flush()

        established = False
        try:
            _wait_until(lambda: "baresip is ready" in proc.log_text() or not proc.alive(), 10, 0.1)
            time.sleep(0.3)
            send(f"/dial {uri}\n")
            established = _wait_until(
                lambda: "Call established" in proc.log_text() or not proc.alive(), answer_timeout_s, 0.1
            ) and ("Call established" in proc.log_text())
            if established:
                time.sleep(dtmf_delay_s)
                for d in digits:
                    send(d)
                    time.sleep(0.3)
                time.sleep(hold_s)
                send("/hangup\n")
                time.sleep(1.0)
            send("/quit\n")
            proc.wait(5)
        finally:
            rc = proc.stop()
        dec, enc = _dumps(snd, "dec"), _dumps(snd, "enc")
        return BaresipResult(
            established=established,
            received_wav=dec[-1] if dec else None,
            sent_wav=enc[-1] if enc else None,
            log_path=proc.log_path,
            log=proc.log_text(),
            rc=rc,
            dtmf_received=_baresip_dtmf(proc.log_text()),
        )

    @classmethod
    def start_callee(
        cls,
        workdir: Path,
        registrar: str,
        user: str = "baresip",
        password: str = "secret3",
        wav: Path = SPEECH_WAV,
        *,
        codecs: str = "PCMU,PCMA,G722",
        sip_port: int | None = None,
        max_seconds: float = 120,
    ) -> Baresip:
        """Register `user` at `registrar` (e.g. Kamailio.uri) and auto-answer, playing `wav` (padded to
        max_seconds). .wait_registered(), .received_wavs() (one dump-*-dec.wav per call), .stop()."""
        _check_sip_target(registrar)
        workdir = Path(workdir) / f"baresip-callee{next(_baresip_seq)}"
        cfg = workdir / "cfg"
        snd = workdir / "dumps"
        snd.mkdir(parents=True, exist_ok=True)
        cfg.mkdir(parents=True, exist_ok=True)
        sip_port = sip_port or free_udp_tcp_port()
        rtp = free_udp_range(20)
        mic = _pad_wav(Path(wav), workdir / "mic.wav", max_seconds + 5)
        _render_baresip(
            "callee",
            cfg,
            {
                "SIP_PORT": str(sip_port),
                "WAV": str(mic),
                "SND_PATH": str(snd),
                "RTP_PORTS": f"{rtp[0]}-{rtp[1]}",
            },
            {"USER": user, "PASSWORD": password, "REGISTRAR": registrar, "CODECS": codecs},
        )
        # stdin must stay open (a pipe): with /dev/null baresip's stdio module complains
        proc = PeerProcess(
            ["baresip", "-f", str(cfg), "-t", f"{max_seconds:.0f}"],
            workdir / "baresip.log",
            cwd=workdir,
            max_seconds=max_seconds + 5,
            stdin=subprocess.PIPE,
        )
        return cls(proc, cfg, snd, sip_port)

    def wait_registered(self, timeout: float = 10) -> bool:
        return _wait_until(
            lambda: "200 OK" in self.proc.log_text() and "binding" in self.proc.log_text(), timeout
        )

    def received_wavs(self) -> list[Path]:
        return _dumps(self.snd_dir, "dec")

    def dtmf_received(self) -> str:
        """RFC 4733 digits received so far, all calls ("received event: 'X' (end=1)" in the log)."""
        return _baresip_dtmf(self.proc.log_text())

    def stop(self) -> None:
        if self.proc.popen.stdin and self.proc.alive():
            with contextlib.suppress(BrokenPipeError, OSError):
                self.proc.popen.stdin.write(b"/quit\n")
                self.proc.popen.stdin.flush()
            self.proc.wait(3)
        self.proc.stop()


# --------------------------------------------------------------------------------------------------
# Asterisk


def _dtmf_ends(log: str) -> list[str]:
    return re.findall(r"DTMF end '(.)' received on", log)


def _cache_dir() -> Path:
    return Path(os.environ.get("SIP_WS_BRIDGE_CACHE") or Path.home() / ".cache" / "sip-ws-bridge")


@dataclass
class AsteriskCall:
    id: str
    rx_wav: Path  # what Asterisk received from the bridge
    tx_wav: Path  # what Asterisk sent
    mix_wav: Path
    answered: bool
    ended: bool
    log: str = ""  # the messages.log lines of this call (dialplan, DTMF, MixMonitor)
    dtmf_received: str = ""  # digits Asterisk received from the bridge during this call ("DTMF end")


class Asterisk:
    """Asterisk 22 built by scripts/build-asterisk.sh, run from a work dir with tests/peers/asterisk/*.conf.

    SIP on udp 127.0.0.1:sip_port; RTP on 127.0.0.1 within rtp_range. Endpoint/AoR/auth `bridge`/`secret`:
    the bridge registers there. call_bridge() makes Asterisk dial the bridge, play a file, send DTMF
    and record what the bridge sends (dialplan context bridge-test, see extensions.conf). Calls from the
    bridge (as `bridge`) reach context default: echo, dtmf, play, 100 (dials the bridge).
    """

    USER = "bridge"
    PASSWORD = "secret"

    def __init__(
        self,
        workdir: Path,
        sip_port: int,
        proc: PeerProcess,
        conf: Path,
        run_dir: Path,
        tmp_run: bool,
        rec_dir: Path,
        log_dir: Path,
    ) -> None:
        self.workdir = workdir
        self.sip_port = sip_port
        self.proc = proc
        self.conf = conf
        self.run_dir = run_dir
        self._tmp_run = tmp_run
        self.rec_dir = rec_dir
        self.log_dir = log_dir
        self.log_path = log_dir / "messages.log"
        self.stdout_path = proc.log_path
        self._seq = itertools.count(1)

    @staticmethod
    def prefix() -> Path:
        return _cache_dir() / "asterisk" / "install"

    @classmethod
    def binary(cls) -> Path:
        return cls.prefix() / "sbin" / "asterisk"

    @classmethod
    def available(cls) -> bool:
        """True if scripts/build-asterisk.sh has built Asterisk into the cache and it runs."""
        b = cls.binary()
        if not os.access(b, os.X_OK):
            return False
        try:
            r = subprocess.run([str(b), "-V"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return r.returncode == 0 and r.stdout.startswith("Asterisk")

    @property
    def registrar_uri(self) -> str:
        return f"sip:{LOOPBACK}:{self.sip_port}"

    @classmethod
    def start(
        cls,
        workdir: Path,
        sip_port: int,
        rtp_range: tuple[int, int],
        *,
        codecs: str = "ulaw,alaw,g722",
        max_seconds: float = 900,
    ) -> Asterisk:
        if not cls.available():
            raise RuntimeError(f"Asterisk is not built ({cls.binary()}): run scripts/build-asterisk.sh")
        workdir = Path(workdir) / "asterisk"
        etc, var, log_dir, rec = workdir / "etc", workdir / "var", workdir / "log", workdir / "recordings"
        for d in (etc, var / "lib", var / "spool", var / "agi-bin", log_dir, rec, workdir / "sounds"):
            d.mkdir(parents=True, exist_ok=True)
        (var / "lib" / "astdb.sqlite3").unlink(missing_ok=True)  # forget contacts of an earlier run
        run_dir, tmp_run = _socket_dir(workdir / "run", "asterisk.ctl")
        values = {
            "ETC_DIR": str(etc),
            "PREFIX": str(cls.prefix()),
            "VAR_DIR": str(var),
            "RUN_DIR": str(run_dir),
            "LOG_DIR": str(log_dir),
            "SIP_PORT": str(sip_port),
            "CODECS": codecs,
            "RTP_START": str(rtp_range[0]),
            "RTP_END": str(rtp_range[1]),
            "MEDIA_DIR": str(MEDIA_DIR),
            "REC_DIR": str(rec),
        }
        for name in (
            "asterisk.conf",
            "modules.conf",
            "logger.conf",
            "rtp.conf",
            "pjsip.conf",
            "extensions.conf",
        ):
            _render(PEERS_DIR / "asterisk" / name, etc / name, values)
        conf = etc / "asterisk.conf"
        proc = PeerProcess(
            [str(cls.binary()), "-C", str(conf), "-f", "-vvv"],
            log_dir / "stdout.log",
            cwd=workdir,
            max_seconds=max_seconds,
        )
        a = cls(workdir, sip_port, proc, conf, run_dir, tmp_run, rec, log_dir)
        ok = _wait_until(lambda: (run_dir / "asterisk.ctl").exists() or not proc.alive(), 30)
        if ok and proc.alive():
            try:
                a.cli("core waitfullybooted", timeout=60)
            except (RuntimeError, subprocess.TimeoutExpired):
                ok = False
        if not ok or not proc.alive() or f"{LOOPBACK}:{sip_port}" not in a.cli("pjsip show transports"):
            a.stop()
            raise RuntimeError(f"Asterisk did not start on {LOOPBACK}:{sip_port}:\n{_tail(proc.log_text())}")
        return a

    def cli(self, cmd: str, timeout: float = 15) -> str:
        """`asterisk -C <conf> -rx CMD` -> its output."""
        r = subprocess.run(
            ["timeout", str(int(timeout) + 1), str(self.binary()), "-C", str(self.conf), "-rx", cmd],
            capture_output=True,
            text=True,
            timeout=timeout + 5,
        )
        if r.returncode != 0:
            raise RuntimeError(f"asterisk -rx {cmd!r} failed ({r.returncode}): {r.stdout}{r.stderr}")
        return r.stdout

    def contacts(self, aor: str = "bridge") -> list[str]:
        """Registered contact URIs of `aor` (from `pjsip show contacts`)."""
        out = self.cli("pjsip show contacts")
        return re.findall(rf"^\s*Contact:\s+{re.escape(aor)}/(\S+)", out, re.M)

    def wait_registered(self, aor: str = "bridge", timeout: float = 10, port: int | None = None) -> list[str]:
        """Wait until `aor` has a contact (on SIP `port`, if given: a stale contact of an earlier
        registrant stays until it expires or is replaced); returns the contacts ([] on timeout)."""
        got: list[str] = []

        def ok() -> bool:
            nonlocal got
            got = self.contacts(aor)
            return any(_contact_port(c) == port for c in got) if port is not None else bool(got)

        _wait_until(ok, timeout, 0.2)
        return got

    def messages(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def dtmf_read(self) -> list[str]:
        """What Read() got in each call to exten `dtmf` (log line DTMF-RECEIVED=...), oldest first."""
        return re.findall(r"app_verbose\.c: DTMF-RECEIVED=(\S*)", self.messages())

    def dtmf_received(self) -> str:
        """Every DTMF digit Asterisk received on any channel so far (logger 'dtmf': "DTMF end 'X'
        received"), in order; AsteriskCall.dtmf_received has those of one call_bridge() call."""
        return "".join(_dtmf_ends(self.messages()))

    def call_bridge(
        self,
        play: Path | None = SPEECH_WAV,
        digits: str = "1234",
        *,
        pre_s: float = 1.0,
        hold_s: float = 4.0,
        user: str | None = None,
        wait: bool = True,
        timeout: float = 60,
    ) -> AsteriskCall:
        """Asterisk dials the registered bridge; after the answer it waits pre_s, plays `play` (any WAV,
        converted to 8 kHz; None = nothing), sends `digits` as RFC 4733 ("" = none), waits hold_s and
        hangs up. What the bridge sent is recorded to AsteriskCall.rx_wav. `user` puts that user in the
        Request-URI (PJSIP/user@bridge). With wait=True, returns after the call ended and the recording
        is closed (RuntimeError if the call did not end within `timeout`)."""
        cid = f"c{next(self._seq)}"
        if play is not None:
            snd = self.workdir / "sounds" / f"{cid}-play.wav"
            subprocess.run(
                ["sox", str(play), "-r", "8000", "-c", "1", "-b", "16", str(snd)],
                check=True,
                timeout=30,
                capture_output=True,
            )
            self.cli(f"dialplan set global PLAY_{cid} {snd.with_suffix('')}")
        else:
            self.cli(f"dialplan set global PLAY_{cid} none")
        if digits and not re.fullmatch(r"[0-9A-Da-d*#]+", digits):
            raise ValueError(f"bad DTMF digits {digits!r}")
        self.cli(f"dialplan set global DIGITS_{cid} {digits or 'none'}")
        self.cli(f"dialplan set global PRE_{cid} {pre_s:g}")
        self.cli(f"dialplan set global HOLD_{cid} {hold_s:g}")
        dest = f"PJSIP/{user}@bridge" if user else "PJSIP/bridge"
        self.cli(f"channel originate {dest} extension talk-{cid}@bridge-test")
        call = AsteriskCall(
            id=cid,
            rx_wav=self.rec_dir / f"{cid}-rx.wav",
            tx_wav=self.rec_dir / f"{cid}-tx.wav",
            mix_wav=self.rec_dir / f"{cid}-mix.wav",
            answered=False,
            ended=False,
        )
        if wait:
            self.wait_call(call, timeout)
        return call

    def wait_call(self, call: AsteriskCall, timeout: float = 60) -> AsteriskCall:
        """Wait until `call` is over and MixMonitor closed its files; fills answered/ended/log/dtmf_received.

        answered=False, ended=True: the bridge never answered (not registered, rejected, no answer
        within 30 s). Detected when no PJSIP/bridge-* channel is left, so with several calls to the
        bridge in parallel a failed one is only noticed once the others are gone. RuntimeError if the
        call is still going after `timeout` s."""
        end_pat = f"BRIDGE-TEST {call.id} END"
        ans_pat = f"BRIDGE-TEST {call.id} ANSWERED"
        t0 = time.monotonic()
        state = "pending"

        def over() -> bool:
            nonlocal state
            text = self.messages()
            if end_pat in text:
                state = "ended"
            elif ans_pat not in text and time.monotonic() - t0 > 1.5:
                if "PJSIP/bridge-" not in self.cli("core show channels concise"):
                    state = "failed"
            return state != "pending"

        _wait_until(over, timeout, 0.2)
        if state == "ended":
            # MixMonitor closes its files in its own thread just after the hangup
            _wait_until(lambda: "End MixMonitor Recording" in self._call_log(call.id), 10, 0.1)
        text = self.messages()
        call.answered = ans_pat in text
        call.ended = state != "pending"
        call.log = self._call_log(call.id)
        call.dtmf_received = "".join(_dtmf_ends(call.log))
        if state == "pending":
            raise RuntimeError(f"Asterisk call {call.id} did not end within {timeout} s:\n{_tail(text)}")
        return call

    def _call_log(self, cid: str) -> str:
        """messages.log lines of the call whose dialplan logged BRIDGE-TEST <cid> (by its [C-...] tag)."""
        text = self.messages()
        m = re.search(rf"\[(C-[0-9a-f]+)\][^\n]*BRIDGE-TEST {cid} ANSWERED", text)
        if not m:
            return ""
        tag = f"[{m.group(1)}]"
        return "\n".join(ln for ln in text.splitlines() if tag in ln)

    def stop(self) -> None:
        if self.proc.alive():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.cli("core stop now", timeout=5)
            self.proc.wait(5)
        pid_file = self.run_dir / "asterisk.pid"
        if self.proc.alive() and pid_file.exists():
            with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
        self.proc.stop()
        if self._tmp_run:
            shutil.rmtree(self.run_dir, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# audio analysis


def load_wav_8k(path: Path) -> npt.NDArray[np.float64]:
    """Any audio file -> 8 kHz mono samples (float64, s16 scale), via sox."""
    fd, tmp = tempfile.mkstemp(suffix=".wav")
    os.close(fd)
    try:
        subprocess.run(
            ["sox", str(path), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer", tmp],
            check=True,
            timeout=60,
            capture_output=True,
        )
        with wave.open(tmp) as w:
            return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float64)
    finally:
        os.unlink(tmp)


def _ncc(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9))


def _dominant_hz(x: npt.NDArray[np.float64], rate: int = 8000) -> float:
    if len(x) < 2:
        return 0.0
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec[1:]) + 1) * rate / len(x)


def dominant_frequency(wav: Path) -> float:
    """Dominant frequency (Hz) of a recording, at 8 kHz (e.g. 1000.0 for tone1k_8k.wav)."""
    return _dominant_hz(load_wav_8k(wav))


def compare_audio(
    ref_wav: Path,
    got_wav: Path,
    *,
    min_peak: float = 0.7,
    seg_min: float = 0.6,
    expect_hz: float | None = None,
) -> dict[str, float | int | bool]:
    """How well `got_wav` (a recording) reproduces `ref_wav`; both converted to 8 kHz mono.

    xcorr_peak: normalized cross-correlation at the best global lag (1.0 identical; clean G.711 > 0.99).
    lag_ms: where REF starts inside GOT. seg_median / seg_match: GOT in 0.5 s windows (silent ones
    skipped), each matched within +-400 ms of the global lag -- robust to jitter-buffer shifts; seg_match
    is the share of windows with corr >= seg_min. dom_hz: dominant frequency of GOT. rms_*: levels.
    ok: (xcorr_peak >= min_peak or seg_match >= 0.8) and, with expect_hz, |dom_hz - expect_hz| < 20.
    Reference numbers: pjsua recording of sipp speech 0.94 / seg_median 0.999; speech vs tone 0.01.
    """
    ref, got = load_wav_8k(ref_wav), load_wav_8k(got_wav)
    rms_got = float(np.sqrt(np.mean(got**2))) if len(got) else 0.0
    rms_ref = float(np.sqrt(np.mean(ref**2))) if len(ref) else 0.0
    res: dict[str, float | int | bool] = {
        "xcorr_peak": 0.0,
        "lag_ms": 0.0,
        "seg_median": 0.0,
        "seg_match": 0.0,
        "windows": 0,
        "dom_hz": _dominant_hz(got),
        "rms_ref": rms_ref,
        "rms_got": rms_got,
        "len_ref_s": len(ref) / 8000,
        "len_got_s": len(got) / 8000,
        "ok": False,
    }
    if len(got) < 800 or rms_got < 1 or len(ref) < 800:
        return res
    n = len(ref) + len(got)
    nfft = 1 << (n - 1).bit_length()
    cc = np.fft.irfft(np.fft.rfft(got, nfft) * np.conj(np.fft.rfft(ref, nfft)), nfft)
    cand = np.concatenate([cc[: len(got)], cc[nfft - len(ref) + 1 :]])
    lags = np.concatenate([np.arange(len(got)), np.arange(-len(ref) + 1, 0)])
    lag = int(lags[int(np.argmax(cand))])
    g0, r0 = max(lag, 0), max(-lag, 0)
    m = min(len(got) - g0, len(ref) - r0)
    peak = _ncc(got[g0 : g0 + m], ref[r0 : r0 + m]) if m > 0 else 0.0

    win, search = 4000, 3200  # 0.5 s windows, +-400 ms
    thr = 0.05 * rms_got
    segs: list[float] = []
    for i in range(0, len(got) - win + 1, win):
        g = got[i : i + win]
        if np.sqrt(np.mean(g**2)) < thr:
            continue
        c0 = i - lag
        lo, hi = max(0, c0 - search), min(len(ref), c0 + win + search)
        if hi - lo < win:
            continue
        seg_ref = ref[lo:hi]
        nf = 1 << (len(seg_ref) + win).bit_length()
        c = np.fft.irfft(np.fft.rfft(seg_ref, nf) * np.conj(np.fft.rfft(g, nf)), nf)[: len(seg_ref) - win + 1]
        k = int(np.argmax(c))
        segs.append(_ncc(g, seg_ref[k : k + win]))
    seg_median = float(np.median(segs)) if segs else 0.0
    seg_match = float(np.mean([s >= seg_min for s in segs])) if segs else 0.0
    ok = peak >= min_peak or seg_match >= 0.8
    if expect_hz is not None:
        ok = ok and abs(float(res["dom_hz"]) - expect_hz) < 20
    res.update(
        xcorr_peak=peak,
        lag_ms=lag / 8.0,
        seg_median=seg_median,
        seg_match=seg_match,
        windows=len(segs),
        ok=ok,
    )
    return res


# --------------------------------------------------------------------------------------------------
# packet capture and RTP analysis (tshark)


def _tshark_decode_opts(sip_ports: Sequence[int]) -> list[str]:
    opts = ["-o", "rtp.heuristic_rtp:TRUE"]
    for p in sip_ports:
        opts += ["-d", f"udp.port=={p},sip"]
    return opts


class TsharkCapture:
    """tshark on lo, bounded by `-a duration:N`, writing workdir/<name>.pcapng. stop() ends it early."""

    def __init__(self, proc: PeerProcess, pcap: Path) -> None:
        self.proc = proc
        self.pcap = pcap
        self.log_path = proc.log_path

    @classmethod
    def start(
        cls, workdir: Path, bpf: str = "udp", duration_s: float = 30, name: str = "capture"
    ) -> TsharkCapture:
        """bpf: a capture filter, e.g. "udp and (port 5080 or portrange 20000-20099)"."""
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        pcap = workdir / f"{name}.pcapng"
        pcap.unlink(missing_ok=True)
        proc = PeerProcess(
            ["tshark", "-i", "lo", "-f", bpf, "-a", f"duration:{duration_s:.0f}", "-w", str(pcap), "-q"],
            workdir / f"{name}.log",
            cwd=workdir,
            max_seconds=duration_s + 15,
        )
        # dumpcap writes the file header once it captures; give it a moment more to be safe
        if not _wait_until(lambda: (pcap.exists() and pcap.stat().st_size > 0) or not proc.alive(), 10):
            proc.stop()
            raise RuntimeError(f"tshark did not start:\n{_tail(proc.log_text())}")
        time.sleep(0.5)
        return cls(proc, pcap)

    def wait(self, timeout: float) -> Path:
        self.proc.wait(timeout)
        self.proc.stop(sig=signal.SIGINT)
        return self.pcap

    def stop(self) -> Path:
        self.proc.stop(sig=signal.SIGINT)  # SIGINT: tshark flushes and closes the file
        return self.pcap


def _tshark_fields(pcap: Path, flt: str, fields: Sequence[str], sip_ports: Sequence[int]) -> list[list[str]]:
    argv = ["tshark", "-r", str(pcap), *_tshark_decode_opts(sip_ports), "-Y", flt, "-T", "fields"]
    for f in fields:
        argv += ["-e", f]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"tshark failed: {r.stderr}")
    return [ln.split("\t") for ln in r.stdout.splitlines() if ln.strip()]


def rtp_timing(
    pcap: Path,
    src_port: int,
    dst_port: int | None = None,
    pt: int | None = None,
    *,
    sip_ports: Sequence[int] = (),
    clock_rate: int = 8000,
) -> dict[str, float]:
    """Inter-packet spacing of the RTP stream sent from UDP `src_port` (optionally to `dst_port`, with
    payload type `pt`): packets, mean_ms, stdev_ms, min_ms, max_ms, within_15_25ms (percent), seq_gaps,
    jitter_ms (RFC 3550 interarrival jitter at the end) and jitter_max_ms. A clean 20 ms sender gives
    mean 19.8-20.2 and within_15_25ms > 95. Note G.722's RTP clock is 8000 although it samples 16 kHz."""
    flt = f"rtp && udp.srcport=={src_port}"
    if dst_port is not None:
        flt += f" && udp.dstport=={dst_port}"
    if pt is not None:
        flt += f" && rtp.p_type=={pt}"
    rows = _tshark_fields(pcap, flt, ["frame.time_epoch", "rtp.seq", "rtp.timestamp"], sip_ports)
    rows = [r for r in rows if len(r) == 3 and all(r)]
    res: dict[str, float] = {"packets": float(len(rows))}
    if len(rows) < 2:
        return res
    t = np.array([float(r[0]) * 1000 for r in rows])
    seq = np.array([int(r[1]) for r in rows])
    ts = np.array([int(r[2]) for r in rows], dtype=np.int64)
    d = np.diff(t)
    dseq = (np.diff(seq) + 65536) % 65536
    jitter = jmax = 0.0
    for i in range(1, len(t)):
        dts = ((ts[i] - ts[i - 1] + 2**32) % 2**32) * 1000.0 / clock_rate
        dd = abs((t[i] - t[i - 1]) - dts)
        jitter += (dd - jitter) / 16.0
        jmax = max(jmax, jitter)
    res.update(
        mean_ms=float(d.mean()),
        stdev_ms=float(d.std()),
        min_ms=float(d.min()),
        max_ms=float(d.max()),
        within_15_25ms=float(100.0 * np.mean((d >= 15) & (d <= 25))),
        seq_gaps=float(np.count_nonzero(dseq != 1)),
        jitter_ms=float(jitter),
        jitter_max_ms=float(jmax),
    )
    return res


def rtp_events(
    pcap: Path, src_port: int | None = None, *, sip_ports: Sequence[int] = ()
) -> list[dict[str, int | str | bool]]:
    """RFC 4733 telephone-events in a capture (optionally only from `src_port`), one dict per packet:
    seq, timestamp (same for all packets of one event), digit ('0'-'9', '*', '#', 'A'-'D'), end,
    duration, volume. digits_from_events() turns them into the digit string."""
    flt = "rtpevent" + (f" && udp.srcport=={src_port}" if src_port is not None else "")
    fields = [
        "rtp.seq",
        "rtp.timestamp",
        "rtpevent.event_id",
        "rtpevent.end_of_event",
        "rtpevent.duration",
        "rtpevent.volume",
    ]
    rows = _tshark_fields(pcap, flt, fields, sip_ports)
    names = "0123456789*#ABCD"
    out: list[dict[str, int | str | bool]] = []
    for r in rows:
        if len(r) < 6 or not r[2]:
            continue
        ev = int(r[2])
        out.append(
            {
                "seq": int(r[0] or 0),
                "timestamp": int(r[1] or 0),
                "digit": names[ev] if ev < len(names) else str(ev),
                "end": r[3] in ("1", "True", "true"),
                "duration": int(r[4] or 0),
                "volume": int(r[5] or 0),
            }
        )
    return out


def digits_from_events(events: Sequence[Mapping[str, int | str | bool]]) -> str:
    """'1234' from rtp_events(): one digit per event (an event = one RTP timestamp; its repeated and
    retransmitted end packets count once)."""
    seen: set[tuple[int, str]] = set()
    digits: list[str] = []
    for e in events:
        key = (int(e["timestamp"]), str(e["digit"]))
        if key not in seen:
            seen.add(key)
            digits.append(key[1])
    return "".join(digits)
