"""The stream multiplexer of version 2's channel, without I/O (lxss.protocol.mux)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lxss.protocol import mux
from lxss.protocol.mux import (
    ATTACH,
    HEADER,
    MAX_ATTACHMENTS,
    MAX_PAYLOAD,
    MAX_PEER_CHANNELS,
    MAX_PENDING_ATTACHMENTS,
    WINDOW,
    Closed,
    Credit,
    Data,
    Eof,
    FrameType,
    Hello,
    Kind,
    Mux,
    MuxError,
    Opened,
    Role,
    frame,
)


def pair() -> tuple[Mux, Mux]:
    """A host and a guest mux that have exchanged HELLOs."""
    host, guest = Mux(Role.HOST), Mux(Role.GUEST)
    assert guest.receive(host.take_output()) == [Hello(1)]
    assert host.receive(guest.take_output()) == [Hello(1)]
    return host, guest


def hello() -> bytes:
    return Mux(Role.HOST).take_output()


def guest_after_hello() -> Mux:
    guest = Mux(Role.GUEST)
    guest.receive(hello())
    guest.take_output()
    return guest


def data_of(events: list[mux.Event], channel: int) -> bytes:
    return b"".join(bytes(e.data) for e in events if isinstance(e, Data) and e.channel == channel)


def open_frame(channel: int, kind: int = Kind.SOCKET, service: int = 1) -> bytes:
    return frame(FrameType.OPEN, channel, struct.pack("<BI", kind, service))


def attach_frame(channel: int, ids: list[int], data: bytes) -> bytes:
    table = struct.pack("<H", len(ids)) + b"".join(struct.pack("<I", i) for i in ids)
    return frame(FrameType.DATA, channel, table + data, ATTACH)


# Ordinary use ----------------------------------------------------------------------------


def test_a_channel_carries_bytes_both_ways_then_eof_and_close() -> None:
    host, guest = pair()
    channel = host.open(Kind.SOCKET, mux.SERVICE_MINI_INIT)
    assert channel % 2 == 1
    host.send(channel, b"to the guest")
    host.send_eof(channel)
    events = guest.receive(host.take_output())
    assert events[0] == Opened(channel, Kind.SOCKET, mux.SERVICE_MINI_INIT)
    assert data_of(events, channel) == b"to the guest"
    assert events[-1] == Eof(channel)
    guest.consumed(channel, 12)
    guest.send(channel, b"\x00\xffback")
    guest.close(channel)
    events = host.receive(guest.take_output())
    assert data_of(events, channel) == b"\x00\xffback"
    assert events[-1] == Closed(channel)
    assert channel not in host.channels  # the host answered CLOSE: its side is released
    assert guest.receive(host.take_output()) == []
    assert guest.channels == {}


def test_ids_come_from_each_ends_own_half() -> None:
    host, guest = pair()
    assert [host.open(Kind.SOCKET) for _ in range(3)] == [1, 3, 5]
    assert [guest.open(Kind.SOCKET) for _ in range(3)] == [2, 4, 6]


def test_attached_channels_ride_on_the_last_byte_of_a_split_frame() -> None:
    host, guest = pair()
    carrier = host.open(Kind.SOCKET, 1)
    stdin, stdout = host.open(Kind.READER), host.open(Kind.WRITER)
    host.send(carrier, b"a frame of the guest protocol", [stdin, stdout])
    stream = host.take_output()
    events = [e for i in range(len(stream)) for e in guest.receive(stream[i : i + 1])]
    pieces = [e for e in events if isinstance(e, Data)]
    assert b"".join(bytes(p.data) for p in pieces) == b"a frame of the guest protocol"
    assert [p.attached for p in pieces] == [()] * (len(pieces) - 1) + [(stdin, stdout)]
    assert Opened(stdin, Kind.READER, 0) in events and Opened(stdout, Kind.WRITER, 0) in events


def test_reader_and_writer_channels_flow_one_way_only() -> None:
    host, guest = pair()
    reader, writer = host.open(Kind.READER), host.open(Kind.WRITER)
    guest.receive(host.take_output())
    assert host.credit(reader) > 0 and host.credit(writer) == 0
    assert guest.credit(reader) == 0 and guest.credit(writer) > 0
    with pytest.raises(ValueError):
        host.send(writer, b"x")


def test_credit_bounds_what_is_sent_and_comes_back_in_batches() -> None:
    host, guest = pair()
    channel = host.open(Kind.SOCKET, 1)
    guest.receive(host.take_output())
    sent = 0
    while host.credit(channel):
        chunk = b"x" * host.credit(channel)
        host.send(channel, chunk)
        sent += len(chunk)
    assert sent == WINDOW
    with pytest.raises(ValueError):
        host.send(channel, b"x")  # no credit left
    received = guest.receive(host.take_output())
    assert len(data_of(received, channel)) == WINDOW
    guest.consumed(channel, 100)  # too little to be worth a CREDIT frame
    assert guest.take_output() == b""
    guest.consumed(channel, WINDOW - 100)  # all of it handed on: granted back
    events = host.receive(guest.take_output())
    assert sum(e.added for e in events if isinstance(e, Credit)) == WINDOW
    assert host.credit(channel) == MAX_PAYLOAD


def test_data_crossing_a_close_is_dropped_and_the_id_freed() -> None:
    host, guest = pair()
    channel = host.open(Kind.SOCKET, 1)
    guest.receive(host.take_output())
    guest.close(channel)
    host.send(channel, b"in flight")
    attached = host.open(Kind.READER)
    host.send(channel, b"y", [attached])
    assert data_of(guest.receive(host.take_output()), channel) == b""
    events = host.receive(guest.take_output())
    assert events == [Closed(channel), Closed(attached)]  # dropped with what carried it
    guest.receive(host.take_output())
    assert channel not in guest.channels and attached not in guest.channels


def test_output_is_written_in_pieces() -> None:
    host = Mux(Role.HOST)
    channel = host.open(Kind.SOCKET, 1)
    host.send(channel, b"0123456789")
    whole = b"".join(host.outbox)
    written = b""
    while host.outbox:
        first = bytes(host.outbox[0])[:3]
        written += first
        host.wrote(len(first))
    assert written == whole and host.outbox_bytes == 0


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2), st.binary(min_size=1, max_size=3000)), max_size=20),
    st.lists(st.integers(1, 4096), min_size=1, max_size=50),
)
def test_any_chunking_of_the_stream_gives_the_same_bytes(
    writes: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    host, guest = pair()
    channels = [host.open(Kind.SOCKET, 1) for _ in range(3)]
    expected = {c: b"" for c in channels}
    for index, payload in writes:
        host.send(channels[index], payload)
        expected[channels[index]] += payload
    stream = host.take_output()
    events: list[mux.Event] = []
    position = 0
    for cut in cuts * (len(stream) // sum(cuts) + 1):
        if position >= len(stream):
            break
        chunk = bytearray(stream[position : position + cut])
        # Views are valid only until the buffer is reused: take the bytes at once.
        for event in guest.receive(chunk):
            events.append(event._replace(data=memoryview(bytes(event.data))) if isinstance(
                event, Data) else event)  # fmt: skip
        chunk[:] = b"\xee" * len(chunk)
        position += cut
    assert {c: data_of(events, c) for c in channels} == expected


# Hostile input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "complaint"),
    [
        (open_frame(1), "before HELLO"),
        (hello() + hello()[:12] + b"x" * 12, "does not speak"),
        (HEADER.pack(99, 0, 0, 0, 0), "unknown mux frame type 99"),
        (hello() + HEADER.pack(FrameType.EOF, 0, 1, 1, 0), "reserved"),
        (hello() + HEADER.pack(FrameType.EOF, ATTACH, 0, 1, 0), "unknown flags"),
        (hello() + HEADER.pack(FrameType.CREDIT, 0, 0, 1, 3) + b"abc", "of 3 bytes, not 4"),
        (hello() + open_frame(2), "not the peer's to use"),
        (hello() + open_frame(0), "not the peer's to use"),
        (hello() + open_frame(1) + open_frame(1), "which is open"),
        (hello() + open_frame(1, kind=9), "unknown kind 9"),
        (hello() + frame(FrameType.DATA, 1, b"x"), "channel 1, which is not open"),
        (hello() + open_frame(1) + HEADER.pack(FrameType.DATA, 0, 0, 1, 1 << 30), "DATA frame of"),
        (hello() + open_frame(1) + frame(FrameType.EOF, 1) + frame(FrameType.DATA, 1, b"x"),
         "direction has ended"),
        (hello() + open_frame(1) + frame(FrameType.EOF, 1) * 2, "already ended"),
        (hello() + open_frame(1) + frame(FrameType.CLOSE, 1) * 2, "which is not open"),
        (hello() + open_frame(1, Kind.WRITER) + frame(FrameType.DATA, 1, b"x"), "has ended"),
        (hello() + open_frame(1) + frame(FrameType.CREDIT, 1, struct.pack("<I", 1)),
         "beyond its window"),
        (hello() + open_frame(1) + frame(FrameType.CREDIT, 1, struct.pack("<I", 0)),
         "beyond its window"),
        (hello() + open_frame(1) + attach_frame(1, [3], b"x"), "awaits no attachment"),
        (hello() + open_frame(1) + open_frame(3, service=0) + attach_frame(1, [3, 3], b"x"),
         "attached twice"),
        (hello() + open_frame(1) + open_frame(3, service=0) + attach_frame(1, [3], b""),
         "1 attachments"),
        (hello() + open_frame(1) + attach_frame(1, [], b"x"), "0 attachments"),
        (hello() + open_frame(1) + open_frame(3, service=0) + attach_frame(1, [3], b"x")
         + attach_frame(1, [3], b"y"), "awaits no attachment"),
        (hello() + open_frame(1, service=0) + attach_frame(1, [1], b"x"), "awaits no attachment"),
    ],
)  # fmt: skip
def test_what_the_protocol_forbids_fails_the_stream(stream: bytes, complaint: str) -> None:
    guest = Mux(Role.GUEST)
    with pytest.raises(MuxError, match=complaint):
        guest.receive(stream)
    assert guest.failed is not None
    with pytest.raises(MuxError, match="failed"):
        guest.receive(b"")  # for good


def test_data_beyond_the_window_fails_the_stream() -> None:
    guest = guest_after_hello()
    guest.receive(open_frame(1))
    for _ in range(WINDOW // MAX_PAYLOAD):
        guest.receive(frame(FrameType.DATA, 1, b"x" * MAX_PAYLOAD))
    with pytest.raises(MuxError, match="beyond its window"):
        guest.receive(frame(FrameType.DATA, 1, b"x"))


def test_the_peer_may_hold_only_so_many_channels() -> None:
    guest = guest_after_hello()
    guest.receive(b"".join(open_frame(1 + 2 * i) for i in range(MAX_PEER_CHANNELS)))
    with pytest.raises(MuxError, match=f"more than {MAX_PEER_CHANNELS} channels"):
        guest.receive(open_frame(1 + 2 * MAX_PEER_CHANNELS))


def test_closed_channels_no_longer_count_against_the_limit() -> None:
    host, guest = pair()
    for _ in range(MAX_PEER_CHANNELS * 2):
        channel = host.open(Kind.SOCKET, 1)
        host.close(channel)
        guest.receive(host.take_output())
        host.receive(guest.take_output())
    assert host.channels == {} and guest.channels == {}


def test_channels_awaiting_attachment_are_bounded() -> None:
    guest = guest_after_hello()
    guest.receive(
        b"".join(open_frame(1 + 2 * i, service=0) for i in range(MAX_PENDING_ATTACHMENTS))
    )
    with pytest.raises(MuxError, match="await attachment"):
        guest.receive(open_frame(1 + 2 * MAX_PENDING_ATTACHMENTS, service=0))


def test_too_many_attachments_on_one_frame_fail() -> None:
    guest = guest_after_hello()
    ids = [3 + 2 * i for i in range(MAX_ATTACHMENTS + 1)]
    guest.receive(open_frame(1) + b"".join(open_frame(i, service=0) for i in ids))
    with pytest.raises(MuxError, match="attachments"):
        guest.receive(attach_frame(1, ids, b"x"))


def test_a_version_mismatch_is_named() -> None:
    guest = Mux(Role.GUEST)
    other = frame(FrameType.HELLO, 0, struct.pack("<8sI", mux.MAGIC, 7))
    with pytest.raises(MuxError, match="version 7"):
        guest.receive(other)


def test_sending_what_was_not_opened_for_attachment_is_refused() -> None:
    host, _ = pair()
    carrier, service_channel = host.open(Kind.SOCKET, 1), host.open(Kind.SOCKET, 2)
    with pytest.raises(ValueError, match="not opened for attachment"):
        host.send(carrier, b"x", [service_channel])


def test_a_deferred_payload_is_written_by_its_owner_in_order() -> None:
    host, guest = pair()
    channel = host.open(Kind.READER)
    host.send(channel, b"copied ")
    deferred = host.send_deferred(channel, 8, source=99)
    host.send_eof(channel)
    written = b""
    while host.outbox:  # as the pump does: buffers by writev, deferred ones by splice
        first = host.outbox[0]
        piece = (
            b"spliced!"[8 - first.remaining :][:3]
            if isinstance(first, mux.Deferred)
            else bytes(first)
        )
        written += piece
        host.wrote(len(piece))
    assert deferred.remaining == 0 and host.outbox_bytes == 0
    events = guest.receive(written)
    assert data_of(events, channel) == b"copied spliced!" and events[-1] == Eof(channel)


def test_an_owner_may_move_data_itself_frame_by_frame() -> None:
    host, guest = pair()
    channel = host.open(Kind.SOCKET, 1)
    host.send(channel, b"0123456789")
    host.send_eof(channel)
    stream = host.take_output()
    moved = b""
    position = 0
    events: list[mux.Event] = []
    while position < len(stream):
        if guest.data_pending() == channel:
            count = min(3, guest.bytes_wanted())  # as a splice of part of it
            moved += stream[position : position + count]
            guest.skip(count)
        else:
            count = guest.bytes_wanted()
            events += guest.receive(stream[position : position + count])
        position += count
    assert moved == b"0123456789" and data_of(events, channel) == b""
    assert events[-1] == Eof(channel)
    guest.consumed(channel, 10)  # handed on: the window accounting still holds
    assert guest.channels[channel].receive_outstanding == 0
