"""Stream multiplexing over one byte stream (sans-IO): the channel to a version 2 guest.

A QEMU guest here has no vsock, only virtio-serial ports: one byte stream between host
and guest. Everything that crosses it (the guest protocol of mini_init, init and the
session leaders, and every launched program's stdin, stdout, stderr, console, control
and lifetime streams) travels as a *channel* of this multiplexer. A channel is a pair
of byte streams, one each way, with its own flow control, end of file and close.

Frames: a 12-byte little-endian header (type u8, flags u8, reserved u16 = 0, channel
u32, payload length u32), then the payload.

- HELLO (channel 0): magic and version; each end sends it first.
- OPEN: the sender opens *channel* (an id of its own half: the host's are odd, the
  guest's even), of a `Kind`, for a service (nonzero: a listener at the other end is
  asked to accept it, as a vsock connection to a port would be) or for attachment (0:
  it will be attached to one DATA frame of another channel, as SCM_RIGHTS attaches a
  descriptor to a byte of a Unix socket stream).
- DATA: bytes of the sender's direction. With flag ATTACH the payload begins with a
  u16 count and that many u32 ids of channels opened for attachment, which belong to
  the payload's last byte (see lxss.protocol.framing.FrameAssembler for why the last).
- CREDIT: u32 bytes more the sender may receive on the channel (its window grows).
- EOF: the sender's direction of the channel ends (a half-close, as shutdown(SHUT_WR)).
- CLOSE: the sender is done with the channel both ways; the receiver answers CLOSE at
  once (the mux does it) and the id is free again once both ends sent theirs.

Flow control: each direction of each channel starts with a WINDOW of credit; a sender
never sends more than it has, and a receiver grants more only as it hands bytes on.
So one stalled reader stops only its own channel: the stream itself is never blocked
by it, and at most WINDOW bytes of it wait at the receiver.

Everything the peer sends is untrusted (the guest may be hostile): every size, id,
count and state change is checked, and the first violation raises `MuxError` and
fails the multiplexer for good; the owner drops the stream and every channel on it.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final, NamedTuple

from lxss.protocol.framing import ProtocolError

HEADER: Final = struct.Struct("<BBHII")
HEADER_SIZE: Final = HEADER.size
MAGIC: Final = b"lxss-mux"
VERSION: Final = 1
_HELLO: Final = struct.Struct("<8sI")
_OPEN: Final = struct.Struct("<BI")
_U32: Final = struct.Struct("<I")
_U16: Final = struct.Struct("<H")

MAX_PAYLOAD: Final = 256 * 1024  # data bytes in one DATA frame
WINDOW: Final = 1024 * 1024  # credit per channel and direction
GRANT_THRESHOLD: Final = WINDOW // 4  # credit is returned in batches of at least this
MAX_PEER_CHANNELS: Final = 256  # channels the peer may have open at once
MAX_PENDING_ATTACHMENTS: Final = 64  # opened for attachment, not attached yet
MAX_ATTACHMENTS: Final = 16  # per DATA frame (framing.MAX_FDS_PER_MESSAGE's order)
MAX_CHANNEL_ID: Final = 2**32 - 1

# Services: the channels a host opens to a guest's listeners (vsock would call them ports).
SERVICE_ATTACHMENT: Final = 0
SERVICE_MINI_INIT: Final = 1
SERVICE_NOTIFY: Final = 2

ATTACH: Final = 0x01  # DATA flag


class FrameType(IntEnum):
    HELLO = 1
    OPEN = 2
    DATA = 3
    CREDIT = 4
    EOF = 5
    CLOSE = 6


class Kind(IntEnum):
    """Which ways a channel's bytes flow, and so what the accepting end hands on."""

    SOCKET = 1  # both ways: a Unix stream socket (descriptors may ride along)
    READER = 2  # opener to acceptor only: the acceptor hands on a pipe's read end
    WRITER = 3  # acceptor to opener only: the acceptor hands on a pipe's write end


class Role(IntEnum):
    HOST = 1  # opens odd ids
    GUEST = 2  # opens even ids


class MuxError(ProtocolError):
    """The peer broke the multiplexing protocol; the stream is unusable from now on."""


# Events that `Mux.receive` returns -----------------------------------------------------


class Hello(NamedTuple):
    version: int


class Opened(NamedTuple):
    """The peer opened *channel*: for *service*, or for attachment (service 0)."""

    channel: int
    kind: Kind
    service: int


class Data(NamedTuple):
    """Bytes for *channel*. *data* is a view into the buffer given to `receive`: valid
    only until the caller reuses it. *attached* (channels the peer opened for
    attachment) belong to the last byte of *data*; a frame split across `receive`
    calls yields several Data events and only the last carries them."""

    channel: int
    data: memoryview
    attached: tuple[int, ...] = ()


class Credit(NamedTuple):
    channel: int
    added: int


class Eof(NamedTuple):
    channel: int


class Closed(NamedTuple):
    """The peer closed *channel* (the mux has answered CLOSE): drop its local end."""

    channel: int


Event = Hello | Opened | Data | Credit | Eof | Closed


@dataclass
class ChannelState:
    """One channel's bookkeeping at this end."""

    id: int
    kind: Kind
    ours: bool  # opened by this end
    send_credit: int = WINDOW
    receive_outstanding: int = 0  # bytes received and not yet granted back
    consumed: int = 0  # bytes handed on since the last grant
    sent_eof: bool = False
    received_eof: bool = False
    sent_close: bool = False
    received_close: bool = False
    pending_attachment: bool = False  # peer's, opened for attachment, not attached yet
    service: int = 0

    @property
    def sends_at_all(self) -> bool:
        """Whether this end has a direction on the channel (a SOCKET's both ends do; a
        READER's opener and a WRITER's acceptor only)."""
        return self.kind == Kind.SOCKET or (self.kind == Kind.READER) == self.ours

    @property
    def may_send(self) -> bool:
        """Whether this end's direction exists and is still open."""
        return self.sends_at_all and not (self.sent_eof or self.sent_close or self.received_close)

    @property
    def may_receive(self) -> bool:
        receives = self.kind == Kind.SOCKET or not self.sends_at_all
        return receives and not (self.received_eof or self.received_close)


@dataclass
class _Partial:
    """A DATA frame whose payload is still arriving."""

    channel: ChannelState
    remaining: int  # data bytes still to come
    attached: tuple[int, ...] = field(default=())


@dataclass(eq=False)
class Deferred:
    """Payload in the outbox that its owner writes itself (by splice from *source*, a
    descriptor of the owner's): the *remaining* bytes of it still to be written."""

    remaining: int
    source: int

    def __len__(self) -> int:
        return self.remaining


def frame(frame_type: FrameType, channel: int, payload: bytes = b"", flags: int = 0) -> bytes:
    return HEADER.pack(frame_type, flags, 0, channel, len(payload)) + payload


class Mux:
    """Both directions of the protocol at one end, without I/O.

    Bytes from the peer go into `receive`, which returns events. What this end sends
    is queued in `outbox` (a list of buffers, for one scatter write); the owner writes
    them out in order and removes what was written (`take_output` does both for a
    simple owner). One thread uses a Mux at a time.
    """

    def __init__(self, role: Role) -> None:
        self.role = role
        self.channels: dict[int, ChannelState] = {}
        self.outbox: list[bytes | memoryview | Deferred] = []
        self.outbox_bytes = 0
        self.failed: MuxError | None = None
        self._next_id = 1 if role == Role.HOST else 2
        self._peer_parity = 0 if role == Role.HOST else 1
        self._peer_open = 0
        self._pending_attachments = 0
        self._hello_received = False
        self._assembly = bytearray()  # a header, fixed payload or attachment table
        self._current: tuple[FrameType, int, int] | None = None  # being collected: type,
        # channel, size (None: a header is)
        self._table_count: int | None = None  # attachments announced, ids being collected
        self._data_size = 0  # a DATA frame's size, while its attachment table is collected
        self._partial: _Partial | None = None
        self._queue(frame(FrameType.HELLO, 0, _HELLO.pack(MAGIC, VERSION)))

    def __repr__(self) -> str:
        state = f"failed: {self.failed}" if self.failed else f"{len(self.channels)} channels"
        return f"<Mux {self.role.name.lower()} {state}>"

    # Sending ---------------------------------------------------------------------

    def _queue(self, *buffers: bytes | memoryview | Deferred) -> None:
        for buffer in buffers:
            self.outbox.append(buffer)
            self.outbox_bytes += len(buffer)

    def take_output(self) -> bytes:
        """Everything queued, joined, and the outbox emptied."""
        data = b"".join(b for b in self.outbox if not isinstance(b, Deferred))
        assert len(data) == self.outbox_bytes, "deferred payload: the owner writes it"
        self.outbox.clear()
        self.outbox_bytes = 0
        return data

    def wrote(self, count: int) -> None:
        """The owner wrote *count* bytes of the outbox's front."""
        self.outbox_bytes -= count
        while count:
            first = self.outbox[0]
            if count >= len(first):
                count -= len(first)
                self.outbox.pop(0)
                if isinstance(first, Deferred):
                    first.remaining = 0
            elif isinstance(first, Deferred):
                first.remaining -= count
                count = 0
            else:
                self.outbox[0] = memoryview(first)[count:]
                count = 0

    def open(self, kind: Kind, service: int = SERVICE_ATTACHMENT) -> int:
        """Open a channel; its id. For attachment (service 0) it must then be attached
        to one `send` of another channel."""
        self._check_usable()
        channel = self._next_id
        while channel in self.channels:
            channel = self._advance_id(channel)
        self._next_id = self._advance_id(channel)
        self.channels[channel] = ChannelState(channel, Kind(kind), ours=True, service=service)
        self._queue(frame(FrameType.OPEN, channel, _OPEN.pack(kind, service)))
        return channel

    @staticmethod
    def _advance_id(channel: int) -> int:
        channel += 2
        return channel if channel <= MAX_CHANNEL_ID else channel % 2 or 2

    def credit(self, channel: int) -> int:
        """Bytes that may be sent on *channel* now (0 if its direction has ended)."""
        state = self.channels.get(channel)
        if state is None or not state.may_send:
            return 0
        return min(state.send_credit, MAX_PAYLOAD)

    def send(self, channel: int, data: bytes | memoryview, attached: Sequence[int] = ()) -> None:
        """Queue *data* (at most `credit` bytes) on *channel*, with *attached* channels
        (this end's, just opened for attachment) riding on its last byte."""
        self._check_usable()
        state = self._ours_to_send(channel)
        if not data or len(data) > min(state.send_credit, MAX_PAYLOAD):
            raise ValueError(f"channel {channel}: {len(data)} bytes, credit {state.send_credit}")
        flags = 0
        table = b""
        if attached:
            if len(attached) > MAX_ATTACHMENTS:
                raise ValueError(f"{len(attached)} attachments, at most {MAX_ATTACHMENTS}")
            for other in attached:
                target = self.channels.get(other)
                if target is None or not target.ours or target.service != SERVICE_ATTACHMENT:
                    raise ValueError(f"channel {other} was not opened for attachment")
            flags = ATTACH
            table = _U16.pack(len(attached)) + b"".join(_U32.pack(a) for a in attached)
        state.send_credit -= len(data)
        self._queue(HEADER.pack(FrameType.DATA, flags, 0, channel, len(table) + len(data)))
        self._queue(table + bytes(data) if table else data)

    def send_deferred(self, channel: int, size: int, source: int) -> Deferred:
        """Queue a DATA frame of *size* bytes (at most `credit`) whose payload the owner
        writes itself, from *source*, when it reaches the outbox's front."""
        self._check_usable()
        state = self._ours_to_send(channel)
        if not 0 < size <= min(state.send_credit, MAX_PAYLOAD):
            raise ValueError(f"channel {channel}: {size} bytes, credit {state.send_credit}")
        state.send_credit -= size
        deferred = Deferred(size, source)
        self._queue(HEADER.pack(FrameType.DATA, 0, 0, channel, size), deferred)
        return deferred

    def send_eof(self, channel: int) -> None:
        """End this end's direction of *channel* (nothing if it has none or it ended)."""
        self._check_usable()
        state = self.channels.get(channel)
        if state is None or not state.may_send:
            return
        state.sent_eof = True
        self._queue(frame(FrameType.EOF, channel))

    def close(self, channel: int) -> None:
        """This end is done with *channel*; idempotent."""
        state = self.channels.get(channel)
        if state is None or state.sent_close:
            return
        state.sent_close = True
        if self.failed is None:
            self._queue(frame(FrameType.CLOSE, channel))
        self._release_if_done(state)

    def consumed(self, channel: int, count: int) -> None:
        """*count* bytes received on *channel* were handed on: the peer may send more
        (granted in batches, so a fast stream costs few CREDIT frames)."""
        state = self.channels.get(channel)
        if state is None or state.sent_close or state.received_close:
            return
        state.consumed += count
        if state.consumed >= GRANT_THRESHOLD or state.consumed >= state.receive_outstanding:
            grant, state.consumed = state.consumed, 0
            state.receive_outstanding -= grant
            if not state.received_eof and self.failed is None:
                self._queue(frame(FrameType.CREDIT, channel, _U32.pack(grant)))

    def _ours_to_send(self, channel: int) -> ChannelState:
        state = self.channels.get(channel)
        if state is None or not state.may_send:
            raise ValueError(f"channel {channel} cannot send")
        return state

    def _check_usable(self) -> None:
        if self.failed is not None:
            raise MuxError(f"the stream failed: {self.failed}")

    def _release_if_done(self, state: ChannelState) -> None:
        if state.sent_close and state.received_close and self.channels.get(state.id) is state:
            del self.channels[state.id]
            if not state.ours:
                self._peer_open -= 1
                if state.pending_attachment:
                    self._pending_attachments -= 1

    # Receiving -------------------------------------------------------------------

    def receive(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """The events in *data* (the next bytes from the peer, in any chunking).

        Raises MuxError, the mux failed for good, at the first thing the protocol does
        not allow; the events before it in *data* are lost with it."""
        self._check_usable()
        view = memoryview(data).cast("B")
        events: list[Event] = []
        try:
            while view:
                view = self._step(view, events)
        except MuxError as error:
            self.failed = error
            raise
        return events

    def bytes_wanted(self) -> int:
        """How many bytes complete what is being received now (a header, a small payload,
        an attachment table or a DATA frame's data): an owner that reads no more than
        this sees each DATA frame's data start at the beginning of a read."""
        if self._partial is not None:
            return self._partial.remaining
        if self._current is None:
            return HEADER_SIZE - len(self._assembly)
        return self._current[2] - len(self._assembly)

    def data_pending(self) -> int | None:
        """The channel whose data comes next in the stream, while a DATA frame without
        attachments is being received (the owner may then move its bytes itself and
        account for them with `skip`); None otherwise."""
        partial = self._partial
        if partial is None or partial.attached or partial.channel.sent_close:
            return None
        return partial.channel.id

    def skip(self, count: int) -> None:
        """The owner moved *count* bytes of the pending data (see `data_pending`) itself."""
        partial = self._partial
        assert partial is not None and 0 < count <= partial.remaining
        partial.remaining -= count
        if partial.remaining == 0:
            self._partial = None

    def _collect(self, view: memoryview, size: int) -> tuple[bytes | None, memoryview]:
        """Gather *size* bytes in the assembly buffer: (them, rest) once complete."""
        wanted = size - len(self._assembly)
        self._assembly += view[:wanted]
        view = view[wanted:]
        if len(self._assembly) < size:
            return None, view
        gathered = bytes(self._assembly)
        self._assembly.clear()
        return gathered, view

    def _step(self, view: memoryview, events: list[Event]) -> memoryview:
        """Consume what *view* holds of the current unit (a header, a fixed payload, an
        attachment table or data); the rest."""
        partial = self._partial
        if partial is not None:
            taken = min(partial.remaining, len(view))
            partial.remaining -= taken
            last = partial.remaining == 0
            if last:
                self._partial = None
            state = partial.channel
            if not state.sent_close:
                events.append(Data(state.id, view[:taken], partial.attached if last else ()))
            return view[taken:]
        if self._current is None:
            header, view = self._collect(view, HEADER_SIZE)
            if header is not None:
                frame_type, flags, reserved, channel, size = HEADER.unpack(header)
                self._on_header(frame_type, flags, reserved, channel, size, events)
            return view
        kind, channel, size = self._current
        body, view = self._collect(view, size)
        if body is None:
            return view
        self._current = None
        if kind == FrameType.DATA:
            self._on_attachment_table(channel, body)
        else:
            self._dispatch(kind, channel, body, events)
        return view

    def _on_header(self, frame_type: int, flags: int, reserved: int, channel: int,
                   size: int, events: list[Event]) -> None:  # fmt: skip
        try:
            kind = FrameType(frame_type)
        except ValueError:
            raise MuxError(f"unknown mux frame type {frame_type}") from None
        if reserved:
            raise MuxError(f"mux {kind.name} frame with reserved bits set")
        if flags & ~(ATTACH if kind == FrameType.DATA else 0):
            raise MuxError(f"mux {kind.name} frame with unknown flags {flags:#x}")
        if not self._hello_received and kind != FrameType.HELLO:
            raise MuxError(f"mux {kind.name} frame before HELLO")
        if kind != FrameType.DATA:
            if size != _FIXED_SIZES[kind]:
                raise MuxError(f"mux {kind.name} frame of {size} bytes, not {_FIXED_SIZES[kind]}")
            if size:
                self._current = (kind, channel, size)
            else:
                self._dispatch(kind, channel, b"", events)
            return
        if not 0 < size <= MAX_DATA_FRAME:
            raise MuxError(f"mux DATA frame of {size} bytes on channel {channel}")
        state = self._known(channel, "DATA")
        if not state.may_receive:
            raise MuxError(f"mux DATA on channel {channel}, whose direction has ended")
        if flags & ATTACH:
            self._data_size = size
            self._current = (kind, channel, _U16.size)
        else:
            self._begin_data(state, size, ())

    def _on_attachment_table(self, channel: int, table: bytes) -> None:
        """The attachment table of a DATA frame: first its count, then its ids."""
        state = self.channels[channel]
        count = self._table_count
        if count is None:
            (count,) = _U16.unpack(table)
            # Data must follow: attachments belong to its last byte.
            if not 0 < count <= MAX_ATTACHMENTS or self._data_size <= _U16.size + 4 * count:
                raise MuxError(f"mux DATA frame on channel {channel}: {count} attachments")
            self._table_count = count
            self._current = (FrameType.DATA, channel, 4 * count)
            return
        self._table_count = None
        ids = struct.unpack(f"<{count}I", table)
        if len(set(ids)) != len(ids):
            raise MuxError(f"mux DATA frame on channel {channel}: a channel attached twice")
        for other in ids:
            target = self.channels.get(other)
            if target is None or not target.pending_attachment or other == channel:
                raise MuxError(f"mux DATA frame on channel {channel} attaches channel {other}, "
                               "which awaits no attachment")  # fmt: skip
        for other in ids:
            self.channels[other].pending_attachment = False
            self._pending_attachments -= 1
        self._begin_data(state, self._data_size - _U16.size - len(table), ids)

    def _begin_data(self, state: ChannelState, size: int, attached: tuple[int, ...]) -> None:
        if size > MAX_PAYLOAD:
            raise MuxError(f"mux DATA frame of {size} data bytes on channel {state.id}")
        if state.receive_outstanding + size > WINDOW:
            raise MuxError(f"mux channel {state.id}: data beyond its window")
        state.receive_outstanding += size
        if state.sent_close:
            # Crossed our CLOSE: dropped, and its attachments with it (their ends at the
            # peer see our CLOSE of them too).
            for other in attached:
                self.close(other)
        self._partial = _Partial(state, size, attached)

    def _dispatch(self, kind: FrameType, channel: int, payload: bytes,
                  events: list[Event]) -> None:  # fmt: skip
        if kind == FrameType.HELLO:
            magic, version = _HELLO.unpack(payload)
            if magic != MAGIC or self._hello_received:
                raise MuxError("the peer does not speak lxss's multiplexing protocol")
            if version != VERSION:
                raise MuxError(f"the peer speaks mux version {version}, this end {VERSION}")
            self._hello_received = True
            events.append(Hello(version))
        elif kind == FrameType.OPEN:
            events.append(self._on_open(channel, *_OPEN.unpack(payload)))
        elif kind == FrameType.CREDIT:
            (added,) = _U32.unpack(payload)
            state = self._known(channel, "CREDIT")
            if state.sent_close:
                return  # crossed our CLOSE
            if not state.sends_at_all:
                raise MuxError(f"mux channel {channel}: credit for a direction it has not")
            if not added or state.send_credit + added > WINDOW:
                raise MuxError(f"mux channel {channel}: credit beyond its window")
            state.send_credit += added
            events.append(Credit(channel, added))
        elif kind == FrameType.EOF:
            state = self._known(channel, "EOF")
            if not state.may_receive:
                raise MuxError(f"mux channel {channel}: EOF on a direction already ended")
            state.received_eof = True
            if not state.sent_close:
                events.append(Eof(channel))
        else:
            state = self._known(channel, "CLOSE")
            state.received_close = True
            if not state.sent_close:
                self.close(channel)
                events.append(Closed(channel))
            self._release_if_done(state)

    def _known(self, channel: int, what: str) -> ChannelState:
        state = self.channels.get(channel)
        if state is None or state.received_close:
            raise MuxError(f"mux {what} for channel {channel}, which is not open")
        return state

    def _on_open(self, channel: int, kind_number: int, service: int) -> Opened:
        if channel % 2 != self._peer_parity or channel == 0:
            raise MuxError(f"mux OPEN of channel {channel}, an id not the peer's to use")
        if channel in self.channels:
            raise MuxError(f"mux OPEN of channel {channel}, which is open")
        try:
            kind = Kind(kind_number)
        except ValueError:
            raise MuxError(f"mux OPEN of channel {channel}: unknown kind {kind_number}") from None
        if self._peer_open >= MAX_PEER_CHANNELS:
            raise MuxError(f"the peer opened more than {MAX_PEER_CHANNELS} channels")
        pending = service == SERVICE_ATTACHMENT
        if pending and self._pending_attachments >= MAX_PENDING_ATTACHMENTS:
            raise MuxError(f"more than {MAX_PENDING_ATTACHMENTS} channels await attachment")
        self.channels[channel] = ChannelState(
            channel, kind, ours=False, pending_attachment=pending, service=service
        )
        self._peer_open += 1
        self._pending_attachments += pending
        return Opened(channel, kind, service)


_FIXED_SIZES: Final = {
    FrameType.HELLO: _HELLO.size,
    FrameType.OPEN: _OPEN.size,
    FrameType.CREDIT: _U32.size,
    FrameType.EOF: 0,
    FrameType.CLOSE: 0,
}
MAX_DATA_FRAME: Final = MAX_PAYLOAD + _U16.size + MAX_ATTACHMENTS * _U32.size
