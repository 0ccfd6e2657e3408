"""The guest protocol's header codec and frame assembler (lxss.protocol.framing)."""

from __future__ import annotations

import itertools
import os
import tracemalloc
from collections.abc import Iterator

import pytest
from descriptors import is_open
from hypothesis import given
from hypothesis import strategies as st

from lxss.protocol.framing import (
    HEADER_SIZE,
    MAX_MESSAGE_SIZE,
    Frame,
    FrameAssembler,
    MessageHeader,
    ProtocolError,
    TransactionStep,
    close_fds,
    pack_header,
    unpack_header,
)


def frame(message_type: int, body: bytes = b"", transaction_id: int = 0, step: int = 0) -> bytes:
    return pack_header(message_type, HEADER_SIZE + len(body), transaction_id, step) + body


@pytest.fixture
def devnull_fds() -> Iterator[list[int]]:
    """Three real descriptors; whatever the test leaves open is closed afterwards."""
    fds = [os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC) for _ in range(3)]
    yield fds
    close_fds(fd for fd in fds if is_open(fd))


def test_constants_match_wsl() -> None:
    assert HEADER_SIZE == 16
    assert MAX_MESSAGE_SIZE == 16 * 1024 * 1024
    assert (TransactionStep.NONE, TransactionStep.REQUEST, TransactionStep.FIRST_REPLY) == (0, 1, 2)


def test_header_is_four_little_endian_words() -> None:
    data = pack_header(8, 0x20, 0x01020304, 1)
    assert data == bytes.fromhex("08000000200000000403020101000000")
    assert unpack_header(data) == MessageHeader(type=8, size=32, transaction_id=0x01020304, step=1)


@pytest.mark.parametrize("words", [(-1, 16, 0, 0), (1, 2**32, 0, 0), (1, 16, 0, -3)])
def test_pack_header_rejects_words_outside_u32(words: tuple[int, int, int, int]) -> None:
    with pytest.raises(ValueError, match="unsigned 32-bit"):
        pack_header(*words)


def test_unpack_header_needs_sixteen_bytes() -> None:
    with pytest.raises(ProtocolError, match="truncated: 15 of 16"):
        unpack_header(bytes(15))


@pytest.mark.parametrize("size", [0, 15, MAX_MESSAGE_SIZE + 1, 2**32 - 1])
def test_unpack_header_rejects_impossible_sizes(size: int) -> None:
    with pytest.raises(ProtocolError, match=f"announces {size} bytes") as caught:
        unpack_header(pack_header(77, size))
    assert caught.value.message_type == 77
    assert isinstance(caught.value, ValueError)


def test_extreme_legal_sizes_are_accepted() -> None:
    assert unpack_header(pack_header(1, HEADER_SIZE)).size == HEADER_SIZE
    assert unpack_header(pack_header(1, MAX_MESSAGE_SIZE)).size == MAX_MESSAGE_SIZE


def test_one_chunk_one_frame() -> None:
    data = frame(9, b"\x01\x00\x00\x00", 1)
    (got,) = FrameAssembler().feed(data)
    assert got == Frame(MessageHeader(9, 20, 1, 0), data, ())
    assert got.body == b"\x01\x00\x00\x00"


def test_header_only_frame() -> None:
    data = frame(76)
    assert FrameAssembler().feed(data) == [Frame(MessageHeader(76, 16, 0, 0), data, ())]


def test_byte_by_byte_and_bytes_wanted() -> None:
    data = frame(10, b"\x18\x00\x50\x00")
    assembler = FrameAssembler()
    wanted = []
    for index, byte in enumerate(data):
        wanted.append(assembler.bytes_wanted())
        frames = assembler.feed(bytes([byte]))
        assert frames == ([] if index < len(data) - 1 else [Frame(unpack_header(data), data, ())])
    assert wanted == [*range(16, 0, -1), *range(4, 0, -1)]
    assert assembler.buffered == 0 and assembler.expected_size is None


def test_several_frames_in_one_chunk() -> None:
    first, second, third = frame(9, b"abcd", 1), frame(76, b"\x01", 2), frame(120, b"wxyz", 3)
    frames = FrameAssembler().feed(first + second + third[:5])
    assert [f.data for f in frames] == [first, second]


def test_descriptors_belong_to_the_frame_holding_the_last_byte(devnull_fds: list[int]) -> None:
    # What the kernel does: a read may start with the tail of an earlier frame, and ends right
    # after the segment that carried descriptors, which starts at the next frame's first byte.
    first, second = frame(9, b"abcd", 1), frame(3, b"\x00\x00\x00\x00", 2)
    assembler = FrameAssembler()
    assert assembler.feed(first[:10]) == []
    frames = assembler.feed(first[10:] + second[:8], devnull_fds[:1])
    assert [(f.data, f.fds) for f in frames] == [(first, ())]
    (last,) = assembler.feed(second[8:])
    assert last.fds == (devnull_fds[0],)


def test_descriptors_of_a_chunk_ending_on_a_frame_boundary(devnull_fds: list[int]) -> None:
    data = frame(29, b"x" * 30)
    assembler = FrameAssembler()
    assert assembler.feed(data[:3], devnull_fds[:1]) == []
    assert assembler.feed(data[3:20], devnull_fds[1:2]) == []
    (got,) = assembler.feed(data[20:], devnull_fds[2:])
    assert got.fds == tuple(devnull_fds)


def test_empty_chunk_with_descriptors_joins_the_frame_in_progress(devnull_fds: list[int]) -> None:
    data = frame(3, b"\x00" * 4)
    assembler = FrameAssembler()
    assert assembler.feed(b"", devnull_fds[:1]) == []
    (got,) = assembler.feed(data)
    assert got.fds == (devnull_fds[0],)


def test_announced_size_is_never_allocated_before_it_arrives() -> None:
    assembler = FrameAssembler()
    tracemalloc.start()
    try:
        frames = assembler.feed(pack_header(8, MAX_MESSAGE_SIZE) + b"only four")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert frames == []
    assert assembler.buffered == 25 and assembler.expected_size == MAX_MESSAGE_SIZE
    assert assembler.bytes_wanted() == MAX_MESSAGE_SIZE - 25
    assert peak < 64 * 1024


def test_bad_size_closes_every_descriptor_and_fails_for_good(devnull_fds: list[int]) -> None:
    good = frame(9, b"abcd")
    assembler = FrameAssembler()
    assert assembler.feed(b"", devnull_fds[:1]) == []
    with pytest.raises(ProtocolError, match="announces 3 bytes"):
        # The good frame completes in this chunk before the bad header: its descriptor too.
        assembler.feed(good + pack_header(5, 3), devnull_fds[1:2])
    assert not is_open(devnull_fds[0]) and not is_open(devnull_fds[1])
    with pytest.raises(ProtocolError, match="already failed"):
        assembler.feed(good, devnull_fds[2:])
    assert not is_open(devnull_fds[2])


def test_close_closes_descriptors_of_an_unfinished_frame(devnull_fds: list[int]) -> None:
    assembler = FrameAssembler()
    assembler.feed(frame(3, b"\x00" * 4)[:7], devnull_fds[:2])
    assert assembler.buffered == 7
    assembler.close()
    assembler.close()
    assert not is_open(devnull_fds[0]) and not is_open(devnull_fds[1])
    assert assembler.buffered == 0


def test_close_fds_carries_on_past_bad_descriptors(devnull_fds: list[int]) -> None:
    close_fds([devnull_fds[0], -1, devnull_fds[0], devnull_fds[1]])
    assert not is_open(devnull_fds[0]) and not is_open(devnull_fds[1])


_bodies = st.lists(st.tuples(st.integers(0, 200), st.binary(max_size=40)), max_size=6)


@given(bodies=_bodies, cuts=st.lists(st.integers(0, 400), max_size=12))
def test_any_chunking_yields_the_same_frames(
    bodies: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    frames = [frame(message_type, body, index) for index, (message_type, body) in enumerate(bodies)]
    stream = b"".join(frames)
    points = sorted({min(cut, len(stream)) for cut in cuts} | {0, len(stream)})
    assembler = FrameAssembler()
    got: list[bytes] = []
    for start, end in itertools.pairwise(points):
        got.extend(f.data for f in assembler.feed(stream[start:end]))
    assert got == frames
    assert assembler.buffered == 0


@given(st.lists(st.binary(max_size=64), max_size=8))
def test_arbitrary_bytes_give_frames_or_protocol_error(chunks: list[bytes]) -> None:
    assembler = FrameAssembler()
    try:
        for chunk in chunks:
            for got in assembler.feed(chunk):
                assert HEADER_SIZE <= got.header.size == len(got.data) <= MAX_MESSAGE_SIZE
    except ProtocolError:
        pass
    finally:
        assembler.close()
