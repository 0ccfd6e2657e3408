"""The client's control-channel codec (lxss.protocol.control) against the message catalogue.

The lxss client writes and reads its three control messages by hand, to start
fast; these tests hold its bytes equal to what lxss.protocol.messages encodes
and what a relay's Channel sends and accepts, so there is still one wire format.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lxss.protocol import control
from lxss.protocol.channel import Channel
from lxss.protocol.messages import (
    InitExitStatus,
    InitSignal,
    InitWindowSizeChanged,
    encode,
)

I32 = st.integers(-(2**31), 2**31 - 1)
U16 = st.integers(0, 0xFFFF)


@pytest.fixture
def relay_end() -> Iterator[tuple[socket.socket, Channel]]:
    """A socket for the client's side and a Channel for the relay's side."""
    client, relay = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    channel = Channel(relay, "control", timeout=5.0)
    try:
        yield client, channel
    finally:
        channel.close()
        client.close()


def test_type_numbers_are_the_catalogues() -> None:
    assert control.EXIT_STATUS == InitExitStatus.TYPE
    assert control.WINDOW_SIZE_CHANGED == InitWindowSizeChanged.TYPE
    assert control.SIGNAL == InitSignal.TYPE


@given(code=I32)
def test_exit_status_bytes(code: int) -> None:
    writer = control.Writer()
    assert writer.exit_status(code) == encode(InitExitStatus(exit_code=code), transaction_id=1)


@given(rows=U16, columns=U16)
def test_window_size_bytes(rows: int, columns: int) -> None:
    frame = control.Writer().window_size(rows, columns)
    assert frame == encode(InitWindowSizeChanged(rows=rows, columns=columns), transaction_id=1)


@given(signum=I32)
def test_signal_bytes(signum: int) -> None:
    frame = control.Writer().signal(signum)
    assert frame == encode(InitSignal(signal=signum), transaction_id=1)


def test_sequence_numbers_count_across_message_kinds() -> None:
    writer = control.Writer()
    frames = [
        writer.window_size(30, 100),
        writer.signal(2),
        writer.window_size(40, 120),
        writer.exit_status(130),
    ]
    expected = [
        encode(InitWindowSizeChanged(rows=30, columns=100), transaction_id=1),
        encode(InitSignal(signal=2), transaction_id=2),
        encode(InitWindowSizeChanged(rows=40, columns=120), transaction_id=3),
        encode(InitExitStatus(exit_code=130), transaction_id=4),
    ]
    assert frames == expected


def test_window_size_is_clamped_to_sixteen_bits() -> None:
    frame = control.Writer().window_size(70000, 1 << 20)
    assert frame == encode(InitWindowSizeChanged(rows=0xFFFF, columns=0xFFFF), transaction_id=1)


def test_a_relay_channel_accepts_the_clients_frames(
    relay_end: tuple[socket.socket, Channel],
) -> None:
    client, channel = relay_end
    writer = control.Writer()
    client.sendall(writer.window_size(50, 132) + writer.signal(15) + writer.exit_status(143))
    expected = (InitWindowSizeChanged, InitSignal, InitExitStatus)
    received = [channel.receive(expected)[0] for _ in range(3)]
    assert received == [
        InitWindowSizeChanged(rows=50, columns=132),
        InitSignal(signal=15),
        InitExitStatus(exit_code=143),
    ]


def test_the_reader_takes_what_a_relay_channel_sends(
    relay_end: tuple[socket.socket, Channel],
) -> None:
    client, channel = relay_end
    channel.send(InitExitStatus(exit_code=42))
    channel.send(InitExitStatus(exit_code=-1))
    reader = control.Reader()
    codes: list[int] = []
    while len(codes) < 2:
        data = client.recv(7)  # small reads: frames arrive in pieces
        assert data
        codes += reader.feed(data)
    assert codes == [42, -1]


def test_reader_reassembles_a_frame_fed_byte_by_byte() -> None:
    frame = encode(InitExitStatus(exit_code=137), transaction_id=1)
    reader = control.Reader()
    for byte in frame[:-1]:
        assert reader.feed(bytes([byte])) == []
    assert reader.feed(frame[-1:]) == [137]
    assert reader.feed(b"") == []


@given(cuts=st.lists(st.integers(0, 200), max_size=8))
def test_reader_yields_the_same_codes_however_the_stream_is_cut(cuts: list[int]) -> None:
    stream = (
        encode(InitWindowSizeChanged(rows=1, columns=2), transaction_id=1)
        + encode(InitExitStatus(exit_code=0), transaction_id=2)
        + encode(InitSignal(signal=9), transaction_id=3)
        + encode(InitExitStatus(exit_code=255), transaction_id=4)
    )
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    reader = control.Reader()
    codes: list[int] = []
    for start, end in itertools.pairwise(points):
        codes += reader.feed(stream[start:end])
    assert codes == [0, 255]


def test_reader_returns_every_code_of_one_read() -> None:
    data = encode(InitExitStatus(exit_code=1), transaction_id=1) + encode(
        InitExitStatus(exit_code=2), transaction_id=2
    )
    assert control.Reader().feed(data) == [1, 2]


@pytest.mark.parametrize("size", [0, 15, control.MAX_CONTROL_MESSAGE + 1, 0xFFFFFFFF])
def test_reader_refuses_impossible_sizes(size: int) -> None:
    header = (9).to_bytes(4, "little") + size.to_bytes(4, "little") + bytes(8)
    with pytest.raises(control.ControlError):
        control.Reader().feed(header)


def test_reader_refuses_a_truncated_exit_status() -> None:
    frame = (9).to_bytes(4, "little") + (18).to_bytes(4, "little") + bytes(8) + b"\x01\x00"
    with pytest.raises(control.ControlError):
        control.Reader().feed(frame)
