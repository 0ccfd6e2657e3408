"""One recvmsg result into the frame assembler (FrameAssembler.feed_received): the rule
both guest channel ends (protocol.channel and vm.link) follow, without a socket."""

from __future__ import annotations

import os
import socket
import sys

import pytest
from descriptors import is_open

from lxss.linux.fdpass import fds_from_ancillary, fds_to_bytes
from lxss.protocol.framing import (
    MAX_FDS_PER_MESSAGE,
    RECV_ANCILLARY_SPACE,
    ChannelClosed,
    FrameAssembler,
    ProtocolError,
    pack_header,
)


def _rights(fds: list[int]) -> list[tuple[int, int, bytes]]:
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds_to_bytes(fds))]


def _devnull() -> int:
    return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)


def test_data_and_descriptors_make_a_frame() -> None:
    fd = _devnull()
    assembler = FrameAssembler()
    frames = assembler.feed_received(pack_header(9, 20, 1) + b"\0" * 4, _rights([fd]), 0)
    assert len(frames) == 1 and frames[0].fds == (fd,)
    os.close(fd)


def test_truncated_ancillary_data_fails_the_stream_and_closes_what_came() -> None:
    fds = [_devnull(), _devnull()]
    assembler = FrameAssembler()
    with pytest.raises(ProtocolError, match=f"more than {MAX_FDS_PER_MESSAGE} descriptors"):
        assembler.feed_received(pack_header(9, 20, 1), _rights(fds), socket.MSG_CTRUNC)
    assert not any(is_open(fd) for fd in fds)
    assert assembler.failed is not None
    with pytest.raises(ProtocolError, match="stream already failed"):
        assembler.feed_received(pack_header(9, 16, 1), [], 0)


def test_end_of_file_between_frames() -> None:
    with pytest.raises(ChannelClosed, match=r"^peer closed it$"):
        FrameAssembler().feed_received(b"", [], 0)


def test_end_of_file_inside_a_frame_says_how_far_it_got() -> None:
    fd = _devnull()
    assembler = FrameAssembler()
    assembler.feed_received(pack_header(9, 20, 1) + b"\0\0", [], 0)
    with pytest.raises(ChannelClosed, match=r"middle of a message \(18 of 20 bytes received\)"):
        assembler.feed_received(b"", _rights([fd]), 0)
    assert not is_open(fd)
    assembler.close()


def test_a_bad_size_is_the_assemblers_error() -> None:
    fd = _devnull()
    with pytest.raises(ProtocolError, match="announces 4 bytes"):
        FrameAssembler().feed_received(pack_header(9, 4), _rights([fd]), 0)
    assert not is_open(fd)


def test_the_ancillary_buffer_holds_the_limit_and_no_more() -> None:
    """RECV_ANCILLARY_SPACE takes MAX_FDS_PER_MESSAGE descriptors; one more is truncated."""
    for count, truncated in ((MAX_FDS_PER_MESSAGE, False), (MAX_FDS_PER_MESSAGE + 1, True)):
        left, right = socket.socketpair()
        with left, right:
            null = _devnull()
            left.sendmsg([b"x"], _rights([null] * count))
            os.close(null)
            _, ancillary, flags, _ = right.recvmsg(16, RECV_ANCILLARY_SPACE)
            fds = fds_from_ancillary(ancillary, socket.SOL_SOCKET, socket.SCM_RIGHTS)
            for fd in fds:
                os.close(fd)
            assert bool(flags & socket.MSG_CTRUNC) == truncated
            assert len(fds) <= MAX_FDS_PER_MESSAGE


def test_fd_encoding_round_trips() -> None:
    data = fds_to_bytes([0, 7, 2**31 - 1])
    assert len(data) == 12
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, data + b"\1")]  # a partial int: ignored
    assert fds_from_ancillary(ancillary, socket.SOL_SOCKET, socket.SCM_RIGHTS) == [0, 7, 2**31 - 1]
    other = [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, data)]
    assert fds_from_ancillary(other, socket.SOL_SOCKET, socket.SCM_RIGHTS) == []
    assert int.from_bytes(data[4:8], sys.byteorder) == 7


def test_the_channel_uses_the_shared_limit() -> None:
    from lxss.protocol import channel

    assert channel.MAX_FDS_PER_MESSAGE is MAX_FDS_PER_MESSAGE
    assert channel.ChannelClosed is ChannelClosed
