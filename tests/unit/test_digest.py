"""Inbound digest authentication: RFC 2617 vectors, nonces bound to address and time, replay, fuzz."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.sip.digest import DigestAuthenticator, digest_response, parse_digest

SRC = "192.0.2.7"


def test_rfc2617_example_vector() -> None:
    # RFC 2617 section 3.5 (the response is the same for any method/uri hashing, MD5 + qop=auth).
    got = digest_response(
        username="Mufasa",
        realm="testrealm@host.com",
        password="Circle Of Life",
        method="GET",
        uri="/dir/index.html",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        nc="00000001",
        cnonce="0a4f113b",
    )
    assert got == "6629fae49393a05397450978507c4ef1"


def test_parse_digest_handles_quotes_commas_and_escapes() -> None:
    header = (
        'Digest username="a\\"b", realm="r, x", nonce="n", uri="sip:bot@h;transport=udp", '
        'response="0123", algorithm=MD5, cnonce="c", qop=auth, nc=00000001'
    )
    params = parse_digest(header)
    assert params == {
        "username": 'a"b',
        "realm": "r, x",
        "nonce": "n",
        "uri": "sip:bot@h;transport=udp",
        "response": "0123",
        "algorithm": "MD5",
        "cnonce": "c",
        "qop": "auth",
        "nc": "00000001",
    }
    assert parse_digest("Basic dXNlcjpwYXNz") is None
    assert parse_digest('Digest realm="unterminated') is None


def authorization(
    auth: DigestAuthenticator,
    challenge: str,
    *,
    username: str = "trunk",
    password: str = "s3cret",
    nc: str = "00000001",
    uri: str = "sip:bot@198.51.100.1",
    method: str = "INVITE",
) -> str:
    params = parse_digest(challenge)
    assert params is not None
    nonce = params["nonce"]
    response = digest_response(
        username=username,
        realm=auth.realm,
        password=password,
        method=method,
        uri=uri,
        nonce=nonce,
        nc=nc,
        cnonce="abcdef",
    )
    return (
        f'Digest username="{username}", realm="{auth.realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm=MD5, cnonce="abcdef", qop=auth, nc={nc}'
    )


def test_challenge_then_valid_credentials_pass() -> None:
    auth = DigestAuthenticator("trunk", "s3cret", "bridge.example")
    first = auth.check("INVITE", [], SRC, 1000.0)
    assert not first.ok and first.challenge is not None
    assert 'realm="bridge.example"' in first.challenge and 'qop="auth"' in first.challenge
    assert "stale" not in first.challenge
    assert auth.check("INVITE", [authorization(auth, first.challenge)], SRC, 1001.0).ok


def test_wrong_password_or_user_fails_without_a_new_challenge() -> None:
    auth = DigestAuthenticator("trunk", "s3cret")
    challenge = auth.challenge(SRC, 0.0)
    for header in (
        authorization(auth, challenge, password="guess"),
        authorization(auth, challenge, username="admin"),
    ):
        result = auth.check("INVITE", [header], SRC, 1.0)
        assert not result.ok and result.challenge is None
        assert "wrong digest credentials" in result.why
        assert "s3cret" not in result.why and "guess" not in result.why


def test_nonce_is_bound_to_the_address_and_expires() -> None:
    auth = DigestAuthenticator("trunk", "s3cret", nonce_ttl_s=300)
    challenge = auth.challenge(SRC, 0.0)
    header = authorization(auth, challenge)
    elsewhere = auth.check("INVITE", [header], "203.0.113.9", 1.0)
    assert not elsewhere.ok and elsewhere.challenge is not None and elsewhere.why == "unknown nonce"
    late = auth.check("INVITE", [header], SRC, 301.0)
    assert not late.ok and late.challenge is not None and "stale=true" in late.challenge


def test_a_nonce_from_another_process_is_rechallenged() -> None:
    before_restart = DigestAuthenticator("trunk", "s3cret")
    after_restart = DigestAuthenticator("trunk", "s3cret")
    header = authorization(before_restart, before_restart.challenge(SRC, 0.0))
    result = after_restart.check("INVITE", [header], SRC, 1.0)
    assert not result.ok and result.challenge is not None


def test_replayed_nonce_count_is_refused() -> None:
    auth = DigestAuthenticator("trunk", "s3cret")
    challenge = auth.challenge(SRC, 0.0)
    header = authorization(auth, challenge)
    assert auth.check("INVITE", [header], SRC, 1.0).ok
    replay = auth.check("INVITE", [header], SRC, 2.0)
    assert not replay.ok and "replayed" in replay.why
    assert auth.check("INVITE", [authorization(auth, challenge, nc="00000002")], SRC, 3.0).ok


def test_credentials_for_another_realm_are_ignored() -> None:
    auth = DigestAuthenticator("trunk", "s3cret", "mine")
    other = DigestAuthenticator("trunk", "s3cret", "theirs")
    header = authorization(other, other.challenge(SRC, 0.0))
    result = auth.check("INVITE", [header], SRC, 1.0)
    assert not result.ok and result.challenge is not None


def test_qop_and_algorithm_are_required() -> None:
    auth = DigestAuthenticator("trunk", "s3cret")
    header = authorization(auth, auth.challenge(SRC, 0.0))
    assert not auth.check("INVITE", [header.replace("qop=auth, ", "")], SRC, 1.0).ok
    assert not auth.check("INVITE", [header.replace("algorithm=MD5", "algorithm=SHA-256")], SRC, 1.0).ok


def test_repr_hides_the_password() -> None:
    assert "s3cret" not in repr(DigestAuthenticator("trunk", "s3cret"))


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_parse_digest_never_raises(header: str) -> None:
    parse_digest(header)
    parse_digest("Digest " + header)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.text(max_size=200)
        | st.dictionaries(
            st.sampled_from(
                [
                    "username",
                    "realm",
                    "nonce",
                    "uri",
                    "response",
                    "nc",
                    "cnonce",
                    "qop",
                    "algorithm",
                    "opaque",
                ]
            ),
            st.text(max_size=40),
            max_size=9,
        ).map(lambda d: "Digest " + ", ".join(f'{k}="{v}"' for k, v in d.items())),
        max_size=3,
    ),
    st.text(max_size=40),
    st.floats(allow_nan=False, allow_infinity=False),
)
def test_check_never_raises_and_never_admits_junk(headers: list[str], source: str, now: float) -> None:
    auth = DigestAuthenticator("trunk", "s3cret", "sip-ws-bridge")
    result = auth.check("INVITE", headers, source, now)
    assert not result.ok
