"""Framing of the guest protocol: the 16-byte header and a sans-IO frame assembler.

WSL counterpart: ``MESSAGE_HEADER`` in ``src/shared/inc/lxinitshared.h`` and ``RecvMessage`` in
``src/shared/inc/socketshared.h``. Every message on a guest channel starts with four little-endian
32-bit words: message type, total size (header included), transaction id and transaction step.

This module does no I/O. :class:`FrameAssembler` is fed what ``recvmsg`` returned and hands back
whole frames together with the file descriptors that travelled with them; ``channel.py`` (the
guest's blocking end) and ``lxss.vm.link`` (the service's asyncio end) own the sockets, and
both hand each ``recvmsg`` result to :meth:`FrameAssembler.feed_received`. Everything received
is untrusted: sizes are checked before anything is buffered, and nothing is allocated for bytes
that have not arrived yet.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterable, Mapping, Sequence
from enum import IntEnum
from typing import Final, NamedTuple

from lxss.linux.fdpass import FD_SIZE, fds_from_ancillary

HEADER_SIZE: Final = 16
MAX_MESSAGE_SIZE: Final = 16 * 1024 * 1024  # WSL's limit; larger sizes are refused, not buffered

U32_MAX: Final = 0xFFFF_FFFF

MAX_FDS_PER_MESSAGE: Final = 32
"""Most descriptors taken with one recvmsg: more than any message carries. A peer that sends
more loses the stream (the kernel drops the rest, and with them which frame they belonged to)."""
RECV_ANCILLARY_SPACE: Final = socket.CMSG_SPACE(MAX_FDS_PER_MESSAGE * FD_SIZE)
"""The ancillary buffer size to give recvmsg on a guest channel."""

_HEADER: Final = struct.Struct("<IIII")


class TransactionStep(IntEnum):
    """The step word of a header. Replies count up from FIRST_REPLY (3, 4, ... follow)."""

    NONE = 0  # not part of a transaction: the id word carries a per-direction sequence number
    REQUEST = 1  # opens a transaction; the id word is the initiator's transaction id
    FIRST_REPLY = 2


class ProtocolError(ValueError):
    """The peer sent something the guest protocol does not allow.

    A ``ValueError`` because the bytes, not the machinery, are wrong. ``message_type`` and
    ``field`` say where, when known, so callers can log or count without parsing the text.
    A framing error (a bad size) leaves the stream unusable; a bad body does not.
    """

    def __init__(
        self, text: str, *, message_type: int | None = None, field: str | None = None
    ) -> None:
        super().__init__(text)
        self.message_type = message_type
        self.field = field


class ChannelClosed(EOFError):
    """The peer closed the channel (perhaps in the middle of a message), or this end did."""


class MessageHeader(NamedTuple):
    """A decoded header. ``size`` counts the whole message, header included."""

    type: int
    size: int
    transaction_id: int
    step: int


class Frame(NamedTuple):
    """One complete message as received.

    ``data`` is the whole message, header included, because string offsets count from its first
    byte. ``fds`` are the descriptors that arrived with it; whoever holds the frame owns them.
    """

    header: MessageHeader
    data: bytes
    fds: tuple[int, ...]

    @property
    def body(self) -> bytes:
        return self.data[HEADER_SIZE:]


def pack_header(message_type: int, size: int, transaction_id: int = 0, step: int = 0) -> bytes:
    """Return the 16 header bytes; raise ``ValueError`` if a word does not fit in 32 bits."""
    words = (message_type, size, transaction_id, step)
    if any(not 0 <= word <= U32_MAX for word in words):
        raise ValueError(f"header words must be unsigned 32-bit integers, got {words}")
    return _HEADER.pack(*words)


def unpack_header(
    data: bytes | bytearray | memoryview, type_names: Mapping[int, str] | None = None
) -> MessageHeader:
    """Decode the first 16 bytes of ``data``.

    Raises :class:`ProtocolError` if fewer than 16 bytes are given or the announced size is
    below the header size or above :data:`MAX_MESSAGE_SIZE`. ``type_names`` (the catalogue's,
    which this module does not know) lets the error name the message.
    """
    if len(data) < HEADER_SIZE:
        raise ProtocolError(f"message header truncated: {len(data)} of {HEADER_SIZE} bytes")
    header = MessageHeader(*_HEADER.unpack_from(data))
    if not HEADER_SIZE <= header.size <= MAX_MESSAGE_SIZE:
        name = (type_names or {}).get(header.type, "message")
        raise ProtocolError(
            f"{name} (type {header.type}) announces {header.size} bytes; "
            f"a message is {HEADER_SIZE} to {MAX_MESSAGE_SIZE} bytes",
            message_type=header.type,
        )
    return header


def close_fds(fds: Iterable[int]) -> None:
    """Close every descriptor in ``fds``, carrying on past ones that fail to close.

    Used on error paths: a close failing must neither hide the error being raised nor leave the
    remaining descriptors open.
    """
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class FrameAssembler:
    """Cuts a byte stream, fed in arbitrary chunks, into frames (sans-IO).

    Descriptors fed with a chunk belong to the frame that holds the chunk's *last* byte. That is
    where the kernel puts them: a sender attaches descriptors to a frame's first byte (one
    ``sendmsg`` per frame), and a Unix stream read ends right after the segment that carried
    descriptors, though it may start with the tail of an earlier segment.

    Ownership: descriptors passed to :meth:`feed` belong to the assembler until they are handed
    out in a :class:`Frame`. On a :class:`ProtocolError` (a bad size: the stream has lost its
    framing) the assembler closes every descriptor it holds and refuses further input.
    :meth:`close` closes descriptors of a frame that never completed.
    """

    def __init__(self, type_names: Mapping[int, str] | None = None) -> None:
        self._type_names = type_names  # only to name messages in errors
        # Grows only by what arrived: a peer that announces 16 MiB and sends 20 bytes costs 20.
        self._buffer = bytearray()
        self._header: MessageHeader | None = None
        self._fds: list[int] = []
        self._failed: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished frame held so far (0 between frames)."""
        return len(self._buffer)

    @property
    def expected_size(self) -> int | None:
        """The announced size of the frame being read, once its header is complete."""
        return self._header.size if self._header is not None else None

    @property
    def failed(self) -> ProtocolError | None:
        """The error that ended this stream, if one did."""
        return self._failed

    def fail(self, error: ProtocolError) -> None:
        """End the stream: close every descriptor held and refuse further input.

        For errors found outside the assembler that also cost the stream its framing, such as
        descriptors the kernel had to drop (MSG_CTRUNC).
        """
        self._failed = error
        self.close()

    def bytes_wanted(self) -> int:
        """How many bytes complete the current header, or the current frame once its header is in.

        A reader that asks for no more than this never reads past a frame boundary, which keeps
        later frames in the socket for whoever owns the channel next.
        """
        if self._header is None:
            return HEADER_SIZE - len(self._buffer)
        return self._header.size - len(self._buffer)

    def feed(self, data: bytes, fds: Sequence[int] = ()) -> list[Frame]:
        """Take one chunk and return the frames it completes (possibly none).

        Raises :class:`ProtocolError` for an impossible size, after closing every descriptor
        held, including ``fds`` and those of frames completed earlier in this chunk.
        """
        if self._failed is not None:
            close_fds(fds)
            raise ProtocolError(f"stream already failed: {self._failed}")
        frames: list[Frame] = []
        view = memoryview(data)
        try:
            while view:
                taken = min(len(view), self.bytes_wanted())
                self._buffer += view[:taken]
                view = view[taken:]
                if not view:
                    # The chunk ends inside this frame: its descriptors are this frame's.
                    self._fds.extend(fds)
                    fds = ()
                frame = self._advance()
                if frame is not None:
                    frames.append(frame)
            self._fds.extend(fds)  # an empty chunk: descriptors go to the frame in progress
        except ProtocolError as error:
            close_fds(fd for frame in frames for fd in frame.fds)
            close_fds(fds)
            self.fail(error)
            raise
        return frames

    def feed_received(
        self, data: bytes, ancillary: list[tuple[int, int, bytes]], flags: int
    ) -> list[Frame]:
        """Take one ``recvmsg`` result (its data, ancillary data and flags): the frames it
        completes, possibly none.

        The assembler owns every descriptor in *ancillary* from the call on, whatever
        happens. Raises, with those descriptors closed:

        - :class:`ProtocolError` if the kernel truncated the ancillary data (MSG_CTRUNC:
          more than :data:`MAX_FDS_PER_MESSAGE` descriptors at once, or a buffer smaller
          than :data:`RECV_ANCILLARY_SPACE`); the stream fails, as for a bad size;
        - :class:`ChannelClosed` for end of file (empty *data*), saying whether the peer
          closed it in the middle of a frame; the caller adds its channel's name;
        - :class:`ProtocolError` from :meth:`feed`.
        """
        fds = fds_from_ancillary(ancillary, socket.SOL_SOCKET, socket.SCM_RIGHTS)
        if flags & socket.MSG_CTRUNC:
            close_fds(fds)
            error = ProtocolError(f"more than {MAX_FDS_PER_MESSAGE} descriptors sent at once")
            self.fail(error)
            raise error
        if not data:
            close_fds(fds)
            if self._buffer:
                size = self.expected_size
                of = f" of {size}" if size is not None else ""
                raise ChannelClosed(
                    f"peer closed it in the middle of a message ({len(self._buffer)}{of} "
                    "bytes received)"
                )
            raise ChannelClosed("peer closed it")
        return self.feed(data, fds)

    def _advance(self) -> Frame | None:
        """Parse the header once it is complete; return the frame once its body is."""
        if self._header is None:
            if len(self._buffer) < HEADER_SIZE:
                return None
            self._header = unpack_header(self._buffer, self._type_names)
        if len(self._buffer) < self._header.size:
            return None
        frame = Frame(self._header, bytes(self._buffer), tuple(self._fds))
        self._buffer.clear()
        self._header = None
        self._fds = []
        return frame

    def close(self) -> None:
        """Drop any partial frame and close its descriptors. Idempotent."""
        fds, self._fds = self._fds, []
        self._buffer.clear()
        self._header = None
        close_fds(fds)
