"""Varlink's wire format (lxss.api.wire): NUL-terminated JSON, fds beside messages,
and the limits that keep a hostile peer from making us buffer without end."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
from descriptors import is_open
from hypothesis import given
from hypothesis import strategies as st

from lxss.api import wire


@pytest.fixture
def fds() -> Iterator[list[int]]:
    """Real descriptors; whatever the test leaves open is closed afterwards."""
    opened = [os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC) for _ in range(wire.MAX_FDS + 2)]
    yield opened
    for fd in opened:
        if is_open(fd):
            os.close(fd)


def test_dumps_is_compact_ascii_with_a_nul() -> None:
    frame = wire.dumps({"method": "a.B", "parameters": {"name": "dé\u2028", "n": [1, 2.5, None]}})
    assert frame == b'{"method":"a.B","parameters":{"name":"d\\u00e9\\u2028","n":[1,2.5,null]}}\0'


def test_dumps_refuses_what_json_cannot_carry() -> None:
    with pytest.raises(TypeError, match="cannot send a bytes over Varlink"):
        wire.dumps({"x": b"raw"})
    with pytest.raises(TypeError):
        wire.dumps({"x": {1, 2}})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)  # fmt: skip


@given(st.dictionaries(st.text(), json_values, max_size=6))
def test_round_trip(message: dict[str, object]) -> None:
    frame = wire.dumps(message)
    assert frame.count(b"\0") == 1 and frame.endswith(b"\0")
    assert wire.loads(frame[:-1]) == message


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"", "not a JSON message"),
        (b"not json", "not a JSON message"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"text"', "must be a JSON object"),
        (b"{} {}", "trailing data"),
        (b'{"a": NaN}', "NaN is not valid JSON"),
        (b'{"a": Infinity}', "Infinity is not valid JSON"),
        (b"\xff\xfe{}", "not a JSON message"),
        (b"[" * 100_000, "not a JSON message"),
        (b'{"a": "\x01"}', "not a JSON message"),  # control characters must be escaped
    ],
)
def test_loads_rejects(frame: bytes, reason: str) -> None:
    with pytest.raises(wire.WireError, match=reason):
        wire.loads(frame)


def test_loads_accepts_surrounding_whitespace() -> None:
    assert wire.loads(b' \r\n{"a": 1}\t\n') == {"a": 1}


# MessageBuffer ----------------------------------------------------------------------------


def test_messages_split_and_joined_across_reads(fds: list[int]) -> None:
    buffer = wire.MessageBuffer()
    buffer.feed(b'{"a":', [fds[0]])
    assert buffer.pending and buffer.pop() is None
    buffer.feed(b'1}\0{"b":2}\0{"c"', [])
    assert buffer.pop() == (b'{"a":1}', [fds[0]])
    assert buffer.pop() == (b'{"b":2}', [])
    assert buffer.pop() is None and buffer.pending
    buffer.feed(b":3}\0", [fds[1]])
    assert buffer.pop() == (b'{"c":3}', [fds[1]])
    assert not buffer.pending


def test_fds_belong_to_the_message_they_arrive_in(fds: list[int]) -> None:
    """Fds sent with a message's first byte go with that message, even when the bytes of
    the message before it arrive in the same read."""
    buffer = wire.MessageBuffer()
    buffer.feed(b'{"first":1}\0{"sec', [])
    buffer.feed(b'ond":2}\0', [fds[0], fds[1]])
    assert buffer.pop() == (b'{"first":1}', [])
    assert buffer.pop() == (b'{"second":2}', [fds[0], fds[1]])


def test_too_long_a_message_is_refused_and_its_fds_closed(fds: list[int]) -> None:
    buffer = wire.MessageBuffer(max_message=100)
    buffer.feed(b"x" * 100, [fds[0]])
    with pytest.raises(wire.WireError, match="longer than 100 bytes"):
        buffer.feed(b"y", [fds[1]])
    assert not is_open(fds[0]) and not is_open(fds[1])
    assert not buffer.pending


def test_a_complete_message_at_the_limit_passes() -> None:
    buffer = wire.MessageBuffer(max_message=10)
    buffer.feed(b"0123456789\0", [])
    assert buffer.pop() == (b"0123456789", [])


def test_a_long_message_inside_one_read_is_refused() -> None:
    buffer = wire.MessageBuffer(max_message=10)
    with pytest.raises(wire.WireError):
        buffer.feed(b"01234567890\0", [])


def test_too_many_fds_are_refused_and_closed(fds: list[int]) -> None:
    buffer = wire.MessageBuffer()
    buffer.feed(b"{", fds[: wire.MAX_FDS])
    with pytest.raises(wire.WireError, match=f"more than {wire.MAX_FDS} file descriptors"):
        buffer.feed(b"}", fds[wire.MAX_FDS : wire.MAX_FDS + 1])
    assert not any(is_open(fd) for fd in fds[: wire.MAX_FDS + 1])
    assert is_open(fds[wire.MAX_FDS + 1])


def test_close_closes_unclaimed_fds(fds: list[int]) -> None:
    buffer = wire.MessageBuffer()
    buffer.feed(b"{}\0{", [fds[0]])
    buffer.feed(b"", [fds[1]])
    buffer.close()
    assert not is_open(fds[0]) and not is_open(fds[1])
    assert buffer.pop() is None and not buffer.pending


def test_fds_travel_over_a_real_socket(fds: list[int]) -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    received: list[int] = []
    try:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, wire.fds_to_bytes(fds[:3]))]
        left.sendmsg([wire.dumps({"method": "x"})], ancillary)
        data, ancdata, _, _ = right.recvmsg(1024, socket.CMSG_SPACE(wire.MAX_FDS * 4))
        received = wire.fds_from_ancillary(ancdata, socket.SOL_SOCKET, socket.SCM_RIGHTS)
        assert len(received) == 3
        for mine, theirs in zip(fds[:3], received, strict=True):
            assert os.path.sameopenfile(mine, theirs)
        buffer = wire.MessageBuffer()
        buffer.feed(data, received)
        assert buffer.pop() == (b'{"method":"x"}', received)
    finally:
        for fd in received:
            os.close(fd)
        left.close()
        right.close()


def test_fds_from_ancillary_ignores_other_messages_and_partial_ints() -> None:
    raw = wire.fds_to_bytes([5, 6]) + b"\x07\x00"
    ancdata = [(socket.SOL_SOCKET, 99, wire.fds_to_bytes([1])),
               (socket.SOL_SOCKET, socket.SCM_RIGHTS, raw)]  # fmt: skip
    assert wire.fds_from_ancillary(ancdata, socket.SOL_SOCKET, socket.SCM_RIGHTS) == [5, 6]
