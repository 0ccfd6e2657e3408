"""Guest protocol channels: sequencing rules and the blocking socket channel."""

from __future__ import annotations

import array
import gc
import math
import os
import socket
import threading
from collections.abc import Iterator, Sequence

import pytest
from descriptors import is_open

from lxss.protocol.channel import (
    MAX_FDS_PER_MESSAGE,
    Channel,
    ChannelClosed,
    ChannelState,
)
from lxss.protocol.framing import HEADER_SIZE, MessageHeader, pack_header, unpack_header
from lxss.protocol.messages import (
    InitCreateProcess,
    InitCreateSession,
    InitCreateSessionResponse,
    InitExitStatus,
    InitTerminateInstance,
    InitWindowSizeChanged,
    MiniInitInitialConfig,
    MiniInitLaunchInit,
    ProtocolError,
    ResultBool,
    ResultInt32,
    encode,
)

NONE, REQUEST, FIRST_REPLY = 0, 1, 2


def open_fds() -> set[int]:
    """Descriptors open now (the one listdir used for /proc/self/fd is closed again)."""
    listed = {int(name) for name in os.listdir("/proc/self/fd")}
    return {fd for fd in listed if is_open(fd)}


def same_file(a: int, b: int) -> bool:
    sa, sb = os.fstat(a), os.fstat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def send_raw(sock: socket.socket, data: bytes, fds: Sequence[int] = ()) -> None:
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    assert sock.sendmsg([data], ancillary) == len(data)


@pytest.fixture
def pair() -> Iterator[tuple[Channel, Channel]]:
    a, b = socket.socketpair()
    with Channel(a, "service", timeout=5.0) as left, Channel(b, "init", timeout=5.0) as right:
        yield left, right


@pytest.fixture
def raw_pair() -> Iterator[tuple[Channel, socket.socket]]:
    """A channel whose peer is a bare socket, for writing frames the channel would not."""
    a, b = socket.socketpair()
    with Channel(a, "relay", timeout=5.0) as channel, b:
        yield channel, b


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


# --- ChannelState --------------------------------------------------------------------------


def header(transaction_id: int, step: int, message_type: int = 9) -> MessageHeader:
    return MessageHeader(message_type, HEADER_SIZE + 4, transaction_id, step)


def test_plain_messages_are_numbered_from_one_per_direction() -> None:
    state = ChannelState()
    assert [state.stamp_message() for _ in range(3)] == [(1, NONE), (2, NONE), (3, NONE)]
    assert state.check_incoming(header(1, NONE))
    assert state.check_incoming(header(2, NONE))
    with pytest.raises(ProtocolError, match="InitExitStatus has sequence number 4, expected 3"):
        state.check_incoming(header(4, NONE))


def test_ignoring_sequence_numbers() -> None:
    state = ChannelState()
    state.ignore_sequence_numbers()
    assert state.check_incoming(header(17, NONE))
    assert state.check_incoming(header(0, NONE))


def test_transactions_take_ids_from_zero_and_replies_adopt_them() -> None:
    state = ChannelState()
    assert [state.begin_transaction() for _ in range(3)] == [(0, 1), (1, 1), (2, 1)]
    assert ChannelState.stamp_reply(header(41, REQUEST)) == (41, FIRST_REPLY)
    assert ChannelState.stamp_reply(header(41, FIRST_REPLY)) == (41, 3)
    with pytest.raises(ValueError, match="not part of a transaction"):
        ChannelState.stamp_reply(header(1, NONE))


def test_waiting_for_a_reply_discards_stale_messages() -> None:
    state = ChannelState()
    for _ in range(3):
        state.begin_transaction()
    awaiting = (2, FIRST_REPLY)
    assert not state.check_incoming(header(1, FIRST_REPLY), awaiting)  # an older transaction
    assert not state.check_incoming(header(0, 5), awaiting)
    assert not state.check_incoming(header(1, NONE), awaiting)  # plain, but still counted...
    with pytest.raises(ProtocolError, match="sequence number 1, expected 2"):
        state.check_incoming(header(1, NONE), awaiting)  # ...so a repeat is out of order
    assert state.check_incoming(header(2, FIRST_REPLY), awaiting)
    assert state.check_incoming(header(2, 3), (2, 3))


def test_waiting_for_a_reply_rejects_future_ids_and_wrong_steps() -> None:
    state = ChannelState()
    state.begin_transaction()
    with pytest.raises(ProtocolError, match="transaction 1, but transaction 0 is in progress"):
        state.check_incoming(header(1, FIRST_REPLY), (0, FIRST_REPLY))
    with pytest.raises(ProtocolError, match="step 3 of transaction 0, expected 2"):
        state.check_incoming(header(0, 3), (0, FIRST_REPLY))
    with pytest.raises(ProtocolError, match="step 1 of transaction 0, expected 2"):
        state.check_incoming(header(0, REQUEST), (0, FIRST_REPLY))


def test_outside_a_wait_requests_pass_and_replies_must_be_late_ones() -> None:
    state = ChannelState()
    assert state.check_incoming(header(99, REQUEST))
    with pytest.raises(ProtocolError, match="transaction 0, which was never started"):
        state.check_incoming(header(0, FIRST_REPLY))
    state.begin_transaction()
    assert not state.check_incoming(header(0, FIRST_REPLY))  # its wait timed out: discarded


# --- sending and receiving -----------------------------------------------------------------


def test_round_trip(pair: tuple[Channel, Channel]) -> None:
    left, right = pair
    left.send(InitCreateSession(console_id=7))
    left.send(InitWindowSizeChanged(24, 80))
    assert right.receive(InitCreateSession) == (InitCreateSession(7), [])
    got, fds = right.receive((InitExitStatus, InitWindowSizeChanged))
    assert got == InitWindowSizeChanged(24, 80) and fds == []


def test_descriptors_arrive_with_their_own_message(
    pair: tuple[Channel, Channel], pipe: tuple[int, int]
) -> None:
    left, right = pair
    r, w = pipe
    left.send(InitCreateSessionResponse(0), [r])
    left.send(InitExitStatus(3))
    left.send(MiniInitLaunchInit("d", None, None, None, 0, 0), [w, r])
    before = open_fds()
    message, (first,) = right.receive(InitCreateSessionResponse)
    assert message.result == 0 and same_file(first, r) and not os.get_inheritable(first)
    assert right.receive(InitExitStatus) == (InitExitStatus(3), [])
    _, (second, third) = right.receive(MiniInitLaunchInit)
    assert same_file(second, w) and same_file(third, r)
    assert open_fds() - before == {first, second, third}
    for fd in (first, second, third):
        os.close(fd)


def test_create_process_descriptors_travel_in_wire_order(pair: tuple[Channel, Channel]) -> None:
    left, right = pair
    message = InitCreateProcess(24, 80, InitCreateProcess.STDIN_CONSOLE, 0, 0, "sh", None, None,
                                ("sh",), (), "debian", None)  # fmt: skip
    pipes = [os.pipe() for _ in range(3)]
    try:
        sent = [r for r, _ in pipes] + [pipes[0][1], pipes[1][1]]
        left.send(message, sent)
        got, fds = right.receive(InitCreateProcess)
        named = got.name_fds(fds)
        assert [same_file(a, b) for a, b in zip(fds, sent, strict=True)] == [True] * 5
        assert named.stdin is None and named.stdout == fds[3] and named.stderr == fds[4]
        for fd in fds:
            os.close(fd)
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)


def test_large_messages_survive_partial_sends(pair: tuple[Channel, Channel]) -> None:
    left, right = pair
    entropy = os.urandom(3 * 1024 * 1024)  # far beyond a socket buffer: many partial writes
    received: list[object] = []
    reader = threading.Thread(target=lambda: received.append(right.receive(timeout=10)))
    reader.start()
    left.send(MiniInitInitialConfig(1, entropy), timeout=10)
    reader.join(10)
    assert received == [(MiniInitInitialConfig(1, entropy), [])]


def test_send_checks_before_it_spends_a_sequence_number(
    pair: tuple[Channel, Channel], pipe: tuple[int, int]
) -> None:
    left, right = pair
    with pytest.raises(ValueError, match="InitExitStatus carries 0 descriptors, 1 given"):
        left.send(InitExitStatus(1), [pipe[0]])
    with pytest.raises(ValueError, match="'rows': 70000 is outside u16"):
        left.send(InitWindowSizeChanged(70000, 1))
    left.send(InitExitStatus(2))
    assert right.receive(InitExitStatus) == (InitExitStatus(2), [])


def test_unexpected_type_is_a_protocol_error_and_closes_descriptors(
    pair: tuple[Channel, Channel], pipe: tuple[int, int]
) -> None:
    left, right = pair
    left.send(InitCreateSessionResponse(0), [pipe[0]])
    before = open_fds()
    with pytest.raises(
        ProtocolError, match=r"channel init: expected InitExitStatus, received Init"
    ):
        right.receive(InitExitStatus)
    assert open_fds() == before


def test_descriptor_count_mismatch_closes_what_arrived(
    raw_pair: tuple[Channel, socket.socket], pipe: tuple[int, int]
) -> None:
    channel, peer = raw_pair
    send_raw(peer, encode(InitExitStatus(0), 1), [pipe[0], pipe[1]])
    before = open_fds()
    with pytest.raises(ProtocolError, match=r"relay: InitExitStatus \(type 9\): arrived with 2"):
        channel.receive()
    assert open_fds() == before


def test_too_many_descriptors_is_a_protocol_error(
    raw_pair: tuple[Channel, socket.socket], pipe: tuple[int, int]
) -> None:
    channel, peer = raw_pair
    send_raw(peer, encode(InitExitStatus(0), 1), [pipe[0]] * (MAX_FDS_PER_MESSAGE + 8))
    before = open_fds()
    with pytest.raises(ProtocolError, match=f"more than {MAX_FDS_PER_MESSAGE} descriptors"):
        channel.receive()
    assert open_fds() == before
    send_raw(peer, encode(InitExitStatus(0), 2))
    with pytest.raises(ProtocolError, match="relay: stream failed: more than"):
        channel.receive(timeout=0)  # fails at once, without waiting for data


def test_sequence_mismatch_and_ignoring_it(raw_pair: tuple[Channel, socket.socket]) -> None:
    channel, peer = raw_pair
    send_raw(peer, encode(InitExitStatus(0), 5))
    with pytest.raises(ProtocolError, match="channel relay: InitExitStatus has sequence number 5"):
        channel.receive()
    channel.ignore_sequence_numbers()
    send_raw(peer, encode(InitExitStatus(1), 9))
    assert channel.receive() == (InitExitStatus(1), [])


def test_malformed_body_is_a_protocol_error_and_the_channel_goes_on(
    raw_pair: tuple[Channel, socket.socket],
) -> None:
    channel, peer = raw_pair
    bad = bytearray(encode(ResultBool(True), 1))
    bad[HEADER_SIZE] = 7
    send_raw(peer, bytes(bad))
    send_raw(peer, encode(ResultBool(False), 2))
    with pytest.raises(
        ProtocolError, match=r"ResultBool \(type 76\) field 'value': bool is 7"
    ) as err:
        channel.receive()
    assert (err.value.message_type, err.value.field) == (76, "value")
    assert channel.receive() == (ResultBool(False), [])


def test_bad_frame_size_names_the_channel(raw_pair: tuple[Channel, socket.socket]) -> None:
    channel, peer = raw_pair
    send_raw(peer, pack_header(8, 4))
    with pytest.raises(
        ProtocolError, match=r"channel relay: InitCreateProcess \(type 8\) announces"
    ):
        channel.receive()
    with pytest.raises(ProtocolError, match="relay: stream failed: InitCreateProcess"):
        channel.receive(timeout=0)


# --- transactions --------------------------------------------------------------------------


def test_transaction_and_reply(pair: tuple[Channel, Channel]) -> None:
    left, right = pair

    def serve() -> None:
        for _ in range(2):
            request_header, request, _ = right.receive_with_header(InitTerminateInstance)
            right.reply(request_header, ResultBool(request.force))

    server = threading.Thread(target=serve)
    server.start()
    assert left.transaction(InitTerminateInstance(True), ResultBool) == (ResultBool(True), [])
    assert left.transaction(InitTerminateInstance(False), ResultBool) == (ResultBool(False), [])
    server.join(5)


def test_reply_adopts_the_request_id(raw_pair: tuple[Channel, socket.socket]) -> None:
    channel, peer = raw_pair
    send_raw(peer, encode(InitTerminateInstance(True), 41, REQUEST))
    request_header, _, _ = channel.receive_with_header(InitTerminateInstance)
    channel.reply(request_header, ResultBool(True))
    data = peer.recv(64)
    assert unpack_header(data) == MessageHeader(76, HEADER_SIZE + 1, 41, FIRST_REPLY)


def test_transaction_discards_stale_replies_and_closes_their_descriptors(
    raw_pair: tuple[Channel, socket.socket], pipe: tuple[int, int]
) -> None:
    channel, peer = raw_pair
    with pytest.raises(TimeoutError):
        channel.transaction(InitTerminateInstance(True), ResultBool, timeout=0.01)  # id 0
    send_raw(peer, encode(InitCreateSessionResponse(0), 0, FIRST_REPLY), [pipe[0]])  # late reply
    send_raw(peer, encode(InitExitStatus(0), 1, NONE))  # plain message: stale during a wait
    send_raw(peer, encode(ResultInt32(-2), 1, FIRST_REPLY))
    before = open_fds()
    logged: list[str] = []
    channel.log = logged.append
    reply, fds = channel.transaction(InitCreateSession(0), ResultInt32)  # id 1
    assert (reply, fds) == (ResultInt32(-2), [])
    assert open_fds() == before
    assert [line.split(" id=")[0] for line in logged] == [
        "relay: sent InitCreateSession(console_id=0)",
        "relay: discarded stale InitCreateSessionResponse",
        "relay: discarded stale InitExitStatus",
        "relay: received ResultInt32(value=-2)",
    ]


@pytest.mark.parametrize(
    ("transaction_id", "step", "match"),
    [
        (1, FIRST_REPLY, "belongs to transaction 1, but transaction 0 is in progress"),
        (0, 3, "is step 3 of transaction 0, expected 2"),
    ],
)
def test_transaction_rejects_future_ids_and_wrong_steps(
    raw_pair: tuple[Channel, socket.socket], transaction_id: int, step: int, match: str
) -> None:
    channel, peer = raw_pair
    send_raw(peer, encode(ResultBool(True), transaction_id, step))
    with pytest.raises(ProtocolError, match=f"channel relay: ResultBool {match}"):
        channel.transaction(InitTerminateInstance(True), ResultBool)


# --- time and closing ----------------------------------------------------------------------


def test_receive_timeout_names_channel_and_message(pair: tuple[Channel, Channel]) -> None:
    _, right = pair
    with pytest.raises(
        TimeoutError, match=r"channel init: timed out after 0\.05 s waiting for Init"
    ):
        right.receive(InitExitStatus, timeout=0.05)
    right.timeout = 0.01  # the channel's default applies when a call gives none
    with pytest.raises(TimeoutError, match=r"after 0\.01 s waiting for any message"):
        right.receive()
    with pytest.raises(ValueError, match="timeout must be"):
        right.receive(timeout=-1)


def test_transaction_timeout_names_the_reply(pair: tuple[Channel, Channel]) -> None:
    left, _ = pair
    with pytest.raises(TimeoutError, match=r"ResultBool \(reply to InitTerminateInstance #0\)"):
        left.transaction(InitTerminateInstance(True), ResultBool, timeout=0.02)


def test_unlimited_wait_must_be_asked_for_and_works(pair: tuple[Channel, Channel]) -> None:
    left, right = pair
    left.send(InitExitStatus(0))
    assert right.receive(timeout=math.inf) == (InitExitStatus(0), [])


def test_partial_frame_survives_a_timeout(raw_pair: tuple[Channel, socket.socket]) -> None:
    channel, peer = raw_pair
    data = encode(InitExitStatus(5), 1)
    send_raw(peer, data[:10])
    with pytest.raises(TimeoutError):
        channel.receive(timeout=0.01)
    send_raw(peer, data[10:])
    assert channel.receive() == (InitExitStatus(5), [])


def test_send_timeout_leaves_the_channel_unable_to_send(pair: tuple[Channel, Channel]) -> None:
    left, _ = pair
    big = MiniInitInitialConfig(0, bytes(1024 * 1024))
    with pytest.raises(TimeoutError, match=r"channel service: .* waiting for room to send"):
        left.send(big, timeout=0.05)
    with pytest.raises(ChannelClosed, match="cannot send InitExitStatus: sending MiniInit"):
        left.send(InitExitStatus(0))


def test_peer_closing_between_messages(raw_pair: tuple[Channel, socket.socket]) -> None:
    channel, peer = raw_pair
    peer.close()
    with pytest.raises(ChannelClosed, match="peer closed it while waiting for InitExitStatus"):
        channel.receive(InitExitStatus)
    with pytest.raises(ChannelClosed, match="InitExitStatus not sent"):
        channel.send(InitExitStatus(0))


def test_peer_closing_mid_frame(
    raw_pair: tuple[Channel, socket.socket], pipe: tuple[int, int]
) -> None:
    channel, peer = raw_pair
    before = open_fds() - {peer.fileno(), channel.fileno()}
    send_raw(peer, encode(InitCreateSessionResponse(0), 1)[:18], [pipe[0]])
    peer.close()
    with pytest.raises(ChannelClosed, match=r"middle of a message \(18 of 20 bytes received\)"):
        channel.receive()
    channel.close()  # the descriptor that came with the half frame goes with the channel
    assert open_fds() == before


def test_closed_channel(pair: tuple[Channel, Channel]) -> None:
    left, _ = pair
    assert "fd" in repr(left)
    left.close()
    left.close()
    assert left.closed and repr(left) == "<Channel 'service' closed>"
    with pytest.raises(ChannelClosed, match="channel service is closed"):
        left.send(InitExitStatus(0))
    with pytest.raises(ChannelClosed, match="channel service is closed"):
        left.receive()


def test_unclosed_channel_warns() -> None:
    a, b = socket.socketpair()
    channel = Channel(a, "leaky")
    with pytest.warns(ResourceWarning, match="unclosed <Channel 'leaky'"):
        del channel
        gc.collect()
    assert a.fileno() == -1
    b.close()


def test_only_unix_stream_sockets() -> None:
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock,
        pytest.raises(ValueError, match="channel x needs an AF_UNIX SOCK_STREAM socket"),
    ):
        Channel(sock, "x")
