"""Property-based fuzzing of everything that parses what others send or write: the AgentStream
decoder and session (bot input), the profile loader (operator input), the SIP text helpers,
digest credentials, the inbound gate and the DTMF tracker (network input). None may raise
anything but its declared error.

CI runs SIPWSB_FUZZ_EXAMPLES (default 300) examples per target; for a long hunt:
    SIPWSB_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/faults/test_fuzz.py
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.bot.agentstream.events import ProtocolError
from bridge.config import load_profile, parse_profile, render_profile
from bridge.errors import ConfigError
from bridge.sip import DtmfMethod
from bridge.sip.access import InboundGate
from bridge.sip.digest import DigestAuthenticator, parse_digest
from bridge.sip.dtmf import DtmfTracker
from bridge.sip.message import parse_headers, uri_host, uri_user
from tests.faults.faultlib import record
from tests.unit.test_agentstream_fuzz import bot_frames, decode_or_kind, started
from tests.unit.test_config import near_valid_profiles, values

EXAMPLES = int(os.environ.get("SIPWSB_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def campaign(strategy: st.SearchStrategy[Any], check: Callable[[Any], None]) -> int:
    """Runs `check` on EXAMPLES inputs drawn from `strategy`; the number of inputs tried."""
    tried = 0

    @FUZZ
    @given(strategy)
    def run(value: Any) -> None:
        nonlocal tried
        tried += 1
        check(value)

    run()
    return tried


def test_fuzz_agentstream_decoder_and_session() -> None:
    decoded = campaign(bot_frames(), decode_or_kind)

    def session_run(frames: list[str | bytes]) -> None:
        session = started(two_way=True, max_message_bytes=200, warn_message_bytes=100)
        for frame in frames:
            try:
                session.receive(frame)
            except ProtocolError as exc:
                assert exc.kind == "too_large"  # the one declared error: the socket closes with 1009

    sessions = campaign(st.lists(bot_frames(), max_size=16), session_run)
    record(
        "fuzz",
        "AgentStream decoder + session (bot messages)",
        injected=decoded + sessions,
        bad_inputs=decoded + sessions,
    )


VALID_YAML = render_profile(
    parse_profile(
        {
            "sip": {
                "listen": "0.0.0.0:5060",
                "register": {"registrar": "sip:pbx", "username": "u", "password": "p"},
                "inbound_auth": {"username": "trunk", "password": "password-1"},
                "allow_from": ["10.0.0.0/8"],
            },
            "bot": {
                "url": "wss://u:p@bot.example.com/s?sample-rate=16000",
                "headers": {"Authorization": "x"},
            },
        },
        env={},
    )
)


@st.composite
def mutated_yaml(draw: st.DrawFn) -> str:
    """A valid rendered profile with random cuts, insertions and swapped lines."""
    text = VALID_YAML
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["cut", "insert", "dup", "swap"]))
        lines = text.split("\n")
        if op == "cut" and text:
            a = draw(st.integers(0, len(text) - 1))
            text = text[:a] + text[a + draw(st.integers(1, 40)) :]
        elif op == "insert":
            a = draw(st.integers(0, len(text)))
            text = (
                text[:a]
                + draw(
                    st.text(max_size=12)
                    | st.sampled_from(
                        [
                            ": ",
                            "- ",
                            "{",
                            "[",
                            "'",
                            '"',
                            "${X}",
                            "${file:/nope}",
                            "&a ",
                            "*a",
                            "!!python/object ",
                            "\t",
                        ]
                    )
                )
                + text[a:]
            )
        elif op == "dup" and lines:
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            text = "\n".join(lines)
        elif lines:
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
    return text


def test_fuzz_profile_loader() -> None:
    def structure(data: object) -> None:
        try:
            render_profile(parse_profile(data, env={"X": "1"}))
        except ConfigError as exc:
            assert exc.message

    directory = Path(tempfile.mkdtemp(prefix="fuzz-profile-"))
    path = directory / "p.yaml"

    def text(content: str) -> None:
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
        try:
            render_profile(load_profile(path, env={"X": "1"}))
        except ConfigError as exc:
            assert exc.message
        except UnicodeEncodeError:
            pass  # could not even be written as a file

    parsed = campaign(
        st.one_of(values, st.dictionaries(st.text(max_size=8), values, max_size=6), near_valid_profiles()),
        structure,
    )
    loaded = campaign(mutated_yaml() | st.text(max_size=400), text)
    record(
        "fuzz",
        "profile loader (structures, mutated and random YAML files)",
        injected=parsed + loaded,
        bad_inputs=parsed + loaded,
    )


sip_text = st.one_of(
    st.text(max_size=600),
    st.binary(max_size=600).map(lambda b: b.decode("latin-1")),
    st.lists(
        st.sampled_from(
            [
                "INVITE sip:a@b SIP/2.0",
                "Via: x",
                "f: <sip:a@b>",
                "Authorization: Digest ",
                'realm="r", nonce="',
                " folded",
                "\t",
                ":",
                "",
                "l: 5",
                "Call-ID: c",
            ]
        ),
        max_size=12,
    ).map("\r\n".join),
)


def test_fuzz_sip_input_helpers() -> None:
    auth = DigestAuthenticator("trunk", "password-1", "r")
    gate = InboundGate(
        allow_from=("0.0.0.0/0", "::/0"),
        auth=auth,
        logger=logging.getLogger("fuzz"),
        resolver=lambda name: [],
    )

    def check(message: str) -> None:
        for name, value in parse_headers(message):
            assert isinstance(name, str) and isinstance(value, str)
            uri_user(value)
            uri_host(value)
            parse_digest(value)
        assert gate.admit(message[:40], message, 0.0) is not None  # junk never gets in
        auth.check("INVITE", [message], "127.0.0.1", 0.0)

    tried = campaign(sip_text, check)
    record("fuzz", "SIP headers, URIs, digest credentials, inbound gate", injected=tried, bad_inputs=tried)


def test_fuzz_dtmf_tracker() -> None:
    events = st.lists(
        st.tuples(
            st.sampled_from("0123456789*#AD"),
            st.sampled_from(["rfc4733", "info"]),  # type: ignore[arg-type]
            st.integers(0, 3),
            st.integers(0, 5000),
            st.booleans(),
            st.booleans(),
        ),
        max_size=40,
    )

    def check(sequence: list[tuple[str, DtmfMethod, int, int, bool, bool]]) -> None:
        tracker = DtmfTracker()
        reports = []
        for t, (digit, method, ts, duration, update, end) in enumerate(sequence):
            reports += tracker.event(digit, method, ts, duration, is_update=update, is_end=end, now=float(t))
        reports += tracker.flush()
        presses = {(digit, ts) for digit, method, ts, *_ in sequence if method == "rfc4733"}
        if len(presses) <= 32:  # the tracker remembers the last 32 key presses
            # Each RFC 4733 key press (digit, timestamp) is reported at most once.
            assert sum(1 for r in reports if r[2] == "rfc4733") <= len(presses), (reports, presses)

    tried = campaign(events, check)
    record("fuzz", "DTMF tracker (arbitrary packet orders)", injected=tried, bad_inputs=tried)


def test_profile_yaml_cannot_run_code() -> None:
    """`!!python/object` tags and the like are refused by the safe loader, never executed."""
    directory = Path(tempfile.mkdtemp(prefix="fuzz-yaml-"))
    hostile = [
        "!!python/object/apply:os.system ['touch /tmp/pwned-by-profile']",
        "sip: !!python/object/apply:os.system ['touch /tmp/pwned-by-profile']\nbot: {url: ws://b}",
        "a: &a [*a, *a]\n" + "b: &b [*a, *a, *a]\n" * 3,
    ]
    for i, text in enumerate(hostile):
        path = directory / f"h{i}.yaml"
        path.write_text(text)
        try:
            load_profile(path, env={})
        except ConfigError:
            pass
    assert not Path("/tmp/pwned-by-profile").exists()
    assert yaml.safe_load("a: 1") == {"a": 1}
    record(
        "fuzz",
        "profile YAML with python tags and alias bombs: refused",
        injected=len(hostile),
        bad_inputs=len(hostile),
    )
