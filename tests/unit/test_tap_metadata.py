"""SIPREC bodies: multipart splitting, SDP labels, rs-metadata (RFC 7865 and the draft form),
partial and complete updates, and hostile input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.tap.metadata import (
    BodyPart,
    MetadataError,
    body_parts,
    is_siprec,
    message_parts,
    metadata_of,
    parse_metadata,
    parse_sdp_streams,
    sdp_of,
)

NS = "urn:ietf:params:xml:ns:recording:1"

# RFC 7865 section 8 (abridged): two participants, two streams, complete.
RFC7865 = f"""<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns='{NS}'>
  <datamode>complete</datamode>
  <session session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <sipSessionID>ab30317f1a784dc48ff824d0d3715d86;remote=47755a9de7794ba387653f2099600ef2</sipSessionID>
  </session>
  <participant participant_id="srfBElmCRp2QB23b7Mpk0w==">
    <nameID aor="sip:bob@biloxi.com"><name xml:lang="it">Bob</name></nameID>
  </participant>
  <participant participant_id="zSfPoSvdSDCmU3A3TRDxAw==">
    <nameID aor="sip:alice@atlanta.com"><name xml:lang="it">Alice</name></nameID>
  </participant>
  <stream stream_id="UAAMm5GRQKSCMVvLyl4rFw==" session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <label>96</label></stream>
  <stream stream_id="i1Pz3to5hGk8fuXl+PbwCw==" session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <label>97</label></stream>
  <participantstreamassoc participant_id="srfBElmCRp2QB23b7Mpk0w==">
    <send>i1Pz3to5hGk8fuXl+PbwCw==</send>
    <recv>UAAMm5GRQKSCMVvLyl4rFw==</recv>
  </participantstreamassoc>
  <participantstreamassoc participant_id="zSfPoSvdSDCmU3A3TRDxAw==">
    <send>UAAMm5GRQKSCMVvLyl4rFw==</send>
    <recv>i1Pz3to5hGk8fuXl+PbwCw==</recv>
  </participantstreamassoc>
</recording>"""

# The older draft form some SRCs still send: id attributes, send/recv inside participant.
DRAFT = """<?xml version="1.0"?>
<recording xmlns="urn:ietf:params:xml:ns:recording">
  <dataMode>complete</dataMode>
  <session id="s1"/>
  <participant id="p1" session="s1">
    <nameID aor="tel:+15550001111"><name>Caller</name></nameID>
    <send>st1</send>
  </participant>
  <participant id="p2" session="s1">
    <nameID aor="sip:4001@pbx.example.com"/>
    <send>st2</send>
  </participant>
  <stream id="st1" session="s1"><label>1</label></stream>
  <stream id="st2" session="s1"><label>2</label></stream>
</recording>"""

SDP = """v=0\r
o=src 1 1 IN IP4 192.0.2.1\r
s=-\r
c=IN IP4 192.0.2.1\r
t=0 0\r
a=sendonly\r
m=audio 20000 RTP/AVP 0\r
a=rtpmap:0 PCMU/8000\r
a=label:97\r
m=audio 20002 RTP/AVP 0 8\r
a=label: 96 \r
a=inactive\r
m=video 0 RTP/AVP 96\r
"""


def multipart(boundary: str, parts: list[tuple[str, str]], *, quoted: bool = False,
              nl: str = "\r\n") -> tuple[str, str]:
    body = "preamble to ignore" + nl
    for ctype, content in parts:
        body += f"--{boundary}{nl}Content-Type: {ctype}{nl}{nl}{content}{nl}"
    body += f"--{boundary}--{nl}epilogue"
    b = f'"{boundary}"' if quoted else boundary
    return f"multipart/mixed; boundary={b}", body


def test_rfc7865_example_maps_each_label_to_its_sender() -> None:
    md = parse_metadata(RFC7865)
    assert md.complete and md.session_id == "hVpd7YQgRW2nD22h7q60JQ=="
    assert md.sip_session_id.startswith("ab30317f")
    assert [p.name for p in md.senders("97")] == ["Bob"]
    assert [p.name for p in md.senders("96")] == ["Alice"]
    assert md.senders("98") == []
    alice = md.senders("96")[0]
    assert alice.aor == "sip:alice@atlanta.com" and alice.number == "alice"


def test_draft_form_and_tel_uris_are_read() -> None:
    md = parse_metadata(DRAFT)
    assert md.session_id == "s1"
    caller = md.senders("1")[0]
    assert (caller.name, caller.number) == ("Caller", "+15550001111")
    agent = md.senders("2")[0]
    assert (agent.name, agent.number) == ("", "4001")


def test_prefixed_namespace_is_read() -> None:
    xml = RFC7865.replace("<recording xmlns=", "<rs:recording xmlns:rs=")
    xml = xml.replace("</recording>", "</rs:recording>")
    xml = xml.replace("<datamode>", "<rs:datamode>").replace("</datamode>", "</rs:datamode>")
    # Children without the prefix are in no namespace: still matched by local name.
    assert [p.name for p in parse_metadata(xml).senders("96")] == ["Alice"]


def test_partial_update_moves_a_stream_to_a_new_participant() -> None:
    md = parse_metadata(RFC7865)
    update = parse_metadata(f"""<recording xmlns='{NS}'><datamode>partial</datamode>
      <participant participant_id="carol">
        <nameID aor="sip:carol@atlanta.com"><name>Carol</name></nameID></participant>
      <participantsessionassoc participant_id="zSfPoSvdSDCmU3A3TRDxAw==">
        <disassociate-time>2010-12-16T23:42:07Z</disassociate-time>
      </participantsessionassoc>
      <participantstreamassoc participant_id="carol">
        <send>UAAMm5GRQKSCMVvLyl4rFw==</send></participantstreamassoc>
    </recording>""")
    assert not update.complete and update.left == frozenset({"zSfPoSvdSDCmU3A3TRDxAw=="})
    merged = md.merge(update)
    assert [p.name for p in merged.senders("96")] == ["Carol"]
    assert [p.name for p in merged.senders("97")] == ["Bob"]  # untouched
    assert merged.session_id == md.session_id and merged.complete
    assert "zSfPoSvdSDCmU3A3TRDxAw==" not in merged.participants


def test_complete_update_replaces_everything() -> None:
    md = parse_metadata(RFC7865)
    merged = md.merge(parse_metadata(DRAFT))
    assert merged.senders("96") == [] and [p.name for p in merged.senders("1")] == ["Caller"]


def test_a_stream_sent_by_two_participants_lists_both_in_order() -> None:
    xml = RFC7865.replace("<send>i1Pz3to5hGk8fuXl+PbwCw==</send>", "<send>UAAMm5GRQKSCMVvLyl4rFw==</send>")
    assert [p.name for p in parse_metadata(xml).senders("96")] == ["Bob", "Alice"]


@pytest.mark.parametrize("xml, words", [
    ('<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]><recording>&a;</recording>', "DOCTYPE"),
    ("<recording><participant></recording>", "well-formed"),
    ("<metadata/>", "<recording>"),
    ("<recording>" + "x" * 70000 + "</recording>", "larger"),
])
def test_unusable_documents_raise_metadata_error_saying_why(xml: str, words: str) -> None:
    with pytest.raises(MetadataError, match=words):
        parse_metadata(xml)


def test_multipart_parts_are_split_at_the_boundary() -> None:
    ctype, body = multipart("OSS-unique-boundary-42", [("application/sdp", SDP),
                                                       ("application/rs-metadata+xml", RFC7865)])
    parts = body_parts(ctype, body)
    assert [p.content_type for p in parts] == ["application/sdp", "application/rs-metadata+xml"]
    assert sdp_of(parts) == SDP and metadata_of(parts) == RFC7865


def test_quoted_boundary_lf_only_and_parts_without_headers() -> None:
    ctype, body = multipart("b 1", [("application/sdp", "v=0")], quoted=True, nl="\n")
    want = BodyPart("application/sdp", (("Content-Type", "application/sdp"),), "v=0")
    assert body_parts(ctype, body) == [want]
    bare = body_parts("multipart/mixed;boundary=x", "--x\r\n\r\nplain text\r\n--x--\r\n")
    assert bare == [BodyPart("text/plain", (), "plain text")]


def test_non_multipart_and_broken_bodies() -> None:
    assert body_parts("application/sdp", "v=0\r\n") == [BodyPart("application/sdp", (), "v=0\r\n")]
    assert body_parts("multipart/mixed", "--x\r\n") == []  # no boundary parameter
    assert body_parts("application/sdp", "") == []


CONTENT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="-"),
                  max_size=200)


@given(st.lists(st.tuples(st.sampled_from(["application/sdp", "application/rs-metadata+xml", "text/plain"]),
                          CONTENT), max_size=5),
       st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=40),
       st.sampled_from(["\r\n", "\n"]))
def test_multipart_round_trip(parts: list[tuple[str, str]], boundary: str, nl: str) -> None:
    # Contents must not start with a newline (that would read as a header-less part) nor end with
    # one the delimiter swallows; real bodies never hinge on that.
    parts = [(ctype, content.strip("\r\n")) for ctype, content in parts]
    ctype, body = multipart(boundary, parts, nl=nl)
    got = body_parts(ctype, body)
    assert [(p.content_type, p.body) for p in got] == parts


def test_sdp_streams_labels_and_directions() -> None:
    streams = parse_sdp_streams(SDP)
    assert [(s.index, s.media, s.port, s.label, s.direction) for s in streams] == [
        (0, "audio", 20000, "97", "sendonly"),
        (1, "audio", 20002, "96", "inactive"),
        (2, "video", 0, "", "sendonly"),
    ]
    assert parse_sdp_streams("v=0\r\nm=audio x RTP/AVP 0\r\n")[0].port == 0


def test_siprec_is_recognised_by_option_tag_or_by_metadata() -> None:
    assert is_siprec([("Require", "timer, siprec")], [])
    assert not is_siprec([("Require", "timer"), ("Supported", "siprec")], [])
    ctype, body = multipart("b", [("application/sdp", SDP), ("application/rs-metadata", "<recording/>")])
    assert is_siprec([], body_parts(ctype, body))


def test_message_parts_of_a_whole_reinvite() -> None:
    ctype, body = multipart("zz", [("application/sdp", SDP), ("application/rs-metadata+xml", RFC7865)])
    message = (f"INVITE sip:srs@192.0.2.9 SIP/2.0\r\nCall-ID: abc\r\nContent-Type: {ctype}\r\n"
               f"Content-Length: {len(body)}\r\n\r\n{body}")
    headers, parts = message_parts(message)
    assert ("Call-ID", "abc") in headers
    assert metadata_of(parts) == RFC7865


def test_metadata_that_is_not_utf8_is_refused_as_malformed_not_raised() -> None:
    raw = (b"<recording xmlns='urn:ietf:params:xml:ns:recording:1'>"
           b"<datamode>compl\xc3\x28te</datamode></recording>")
    with pytest.raises(MetadataError, match="not well-formed"):
        parse_metadata(raw.decode("utf-8", "surrogateescape"))
