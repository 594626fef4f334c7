"""Agent-assist taps: both sides of a live call streamed one way to a transcription service.

Two inputs: SIPREC recording sessions (RFC 7865/7866: one INVITE, one stream per participant,
`rs-metadata` naming who is who) and plain forked calls marked as taps (a profile in tap mode,
or a header such as `X-Stream-Mode: tap`), paired by a correlation header. Pure parts:
`metadata` (multipart body, SDP labels, rs-metadata), `align` (tracks lined up by conference
tick), `layout` (separate, mixed, stereo), `stream` (one AgentStream socket's messages),
`correlate` (which calls are one conversation), `tracks` (who each stream is). `channel` is the
clock-thread hand-off; `sink` (one socket), `conversation` and `service` are the asyncio side.
"""
