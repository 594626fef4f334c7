"""The native sender as the writer of a bot's socket (caller audio without the event loop).

With the native pipe, a call's caller audio can go to the bot from the pipe's sender thread
(native/media_sender.hpp, MediaSender): whole chunks become media messages, rendered from the
dialect's template (bridge/bot/template.py), and are written to the socket without entering
Python. While it does, it is the socket's only writer: the call's own events (dtmf, marks) and
websockets' pings and pongs are queued through it, and it numbers every message as it queues it
(the session's events are templates with a slot for the number), so the sequence numbers are in
the order of the wire. Nothing here knows the dialect.

`hand_off` starts this for a call when it can be done (native pipe, plain ws://, no resampling
between the conference and the socket); when the writer is released (the call is ending, the
socket is closing or gone) the session carries on from the sender's counters.
"""

from __future__ import annotations

from bridge.audio.pipe_channel import PipeChannel
from bridge.bot.dialect import DialectSession
from bridge.ws.client import BotLink

__all__ = ["PipeWriter", "hand_off"]


class PipeWriter:
    """A call's pipe as the SocketWriter of its bot link."""

    __slots__ = ("_channel", "_session")

    def __init__(self, channel: PipeChannel, session: DialectSession) -> None:
        self._channel = channel
        self._session = session

    def write_text(self, text: str) -> bool:
        # An event template (the session made it while handed off): the pipe numbers it.
        return self._channel.send_event(text.encode()) > 0

    def write_frame(self, frame: bytes) -> bool:
        return self._channel.send_raw(frame)

    def sent(self) -> tuple[int, int]:
        status = self._channel.send_status()
        return status.messages, status.text_bytes

    def release(self) -> bytes:
        rest, seq, chunks, samples = self._channel.stop_sending()
        self._session.take_back_numbering(seq, chunks, samples)
        return rest


def hand_off(channel: PipeChannel, session: DialectSession, link: BotLink, rate: int) -> bool:
    """Let the pipe's sender write caller audio (and every other frame) to the bot's socket;
    False, changing nothing, when the socket is TLS or busy or the pipe has no sender."""
    fd = link.plain_socket_fd()
    if fd is None:
        return False
    seq, chunks, samples = session.hand_off_numbering()
    template = session.sender_template().encode()
    if not channel.start_sending(fd, template, seq, chunks, samples, rate, link.backlog_limit):
        session.take_back_numbering(seq, chunks, samples)
        return False
    link.hand_writes_to(PipeWriter(channel, session))
    return True
