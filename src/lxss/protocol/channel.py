"""Guest protocol channels: WSL's sequencing rules, and a blocking channel over a Unix socket.

WSL counterpart: ``SocketChannel`` (``src/shared/inc/SocketChannel.h``). :class:`ChannelState`
holds the rules without doing I/O: messages outside transactions carry a per-direction sequence
number, and transactions pair a request with its replies by id and step. :class:`Channel` moves
frames over an ``AF_UNIX`` stream socket, descriptors riding with SCM_RIGHTS, and bounds every
wait with a deadline. Guest roles run single-threaded (sometimes after ``pivot_root``), so
everything used here is imported at the top.
"""

import array
import math
import select
import socket
import struct
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final, TypeVar, cast, overload

from lxss.protocol.codec import TYPE_NAMES
from lxss.protocol.framing import MAX_FDS_PER_MESSAGE as MAX_FDS_PER_MESSAGE  # re-exported
from lxss.protocol.framing import (
    RECV_ANCILLARY_SPACE,
    U32_MAX,
    Frame,
    FrameAssembler,
    MessageHeader,
    ProtocolError,
    TransactionStep,
    close_fds,
)
from lxss.protocol.framing import ChannelClosed as ChannelClosed  # re-exported
from lxss.protocol.messages import Message, decode, encode, type_name

M = TypeVar("M", bound=Message)

DEFAULT_TIMEOUT: Final = 30.0  # seconds; WSL's guest connections use the same bound
_CHUNK: Final = 64 * 1024  # recvmsg allocates its whole buffer up front, so ask for no more
_POLL_MAX_MS: Final = 2**31 - 1  # poll() takes an int; longer waits go round again
_ID_AND_STEP: Final = struct.Struct("<II")  # header words 3 and 4, at offset 8


class PreparedFrame:
    """One frame ready to write: its bytes, numbered, and the SCM_RIGHTS data for its first
    byte. Made by :meth:`ChannelState.prepare`, which both ends of a channel use."""

    __slots__ = ("ancillary", "data", "step", "transaction_id", "what")

    def __init__(
        self, data: bytearray, fds: Sequence[int], ids: tuple[int, int], what: str
    ) -> None:
        self.data = data
        self.ancillary = (
            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        )
        self.transaction_id, self.step = ids
        self.what = what


class ChannelState:
    """WSL's sequencing rules for one channel, without I/O (sans-IO).

    Outside transactions (step NONE) each direction numbers its messages from 1 in the id word,
    and the receiver checks the numbers unless :meth:`ignore_sequence_numbers` was called.
    A transaction's initiator takes ids 0, 1, 2... and sends its request at step REQUEST; the
    replies carry the same id at FIRST_REPLY, then counting up. The responder adopts the id
    of the request it answers. Transactions go one way at a time: a request from the peer that
    arrives while this end awaits a reply is treated like any other message with that id.
    """

    def __init__(self) -> None:
        self._sent = 0
        self._received = 0
        self._seed = 0
        self._check_sequence = True
        self.torn: str | None = None  # why no frame may be sent any more (see `tear`)

    def prepare(
        self,
        name: str,
        message: Message,
        fds: Sequence[int],
        stamp: Callable[[], tuple[int, int]],
    ) -> PreparedFrame:
        """Encode and check *message*, only then take its (id, step) words from *stamp*.

        ``ValueError`` (and no number spent) for a message the framing cannot carry or a
        descriptor count that is not the message's; ChannelClosed once a send was torn.
        """
        what = type(message).__name__
        if self.torn is not None:
            raise ChannelClosed(f"channel {name}: cannot send {what}: {self.torn}")
        if len(fds) != message.fd_count():
            raise ValueError(f"{what} carries {message.fd_count()} descriptors, {len(fds)} given")
        data = bytearray(encode(message))
        ids = stamp()
        _ID_AND_STEP.pack_into(data, 8, *ids)
        return PreparedFrame(data, fds, ids, what)

    def tear(self, frame: PreparedFrame, error: BaseException) -> None:
        """A write of *frame* failed or was cancelled: a number was spent, or half a frame
        sent, so later messages could not be read right; nothing more is sent."""
        self.torn = f"sending {frame.what} failed ({type(error).__name__})"

    def ignore_sequence_numbers(self) -> None:
        """Stop checking incoming sequence numbers, for a channel that changed hands midway."""
        self._check_sequence = False

    def stamp_message(self) -> tuple[int, int]:
        """The (id, step) words of the next message sent outside any transaction."""
        self._sent = (self._sent + 1) & U32_MAX
        return self._sent, TransactionStep.NONE

    def begin_transaction(self) -> tuple[int, int]:
        """The (id, step) words of a new transaction's request."""
        transaction_id = self._seed
        self._seed = (self._seed + 1) & U32_MAX
        return transaction_id, TransactionStep.REQUEST

    @staticmethod
    def stamp_reply(request: MessageHeader) -> tuple[int, int]:
        """The (id, step) words of the answer to ``request``; ``ValueError`` for a plain message."""
        if request.step == TransactionStep.NONE:
            raise ValueError(f"{type_name(request.type)} is not part of a transaction")
        return request.transaction_id, request.step + 1

    def check_incoming(
        self, header: MessageHeader, awaiting: tuple[int, int] | None = None
    ) -> bool:
        """Apply the rules to a received header: True to deliver it, False to discard it.

        ``awaiting`` is the (id, step) of the reply being waited for, if any. Stale messages are
        discarded: replies to transactions no longer awaited, and messages outside transactions
        that arrive while a reply is awaited. Raises :class:`ProtocolError` for a sequence
        number out of order, a reply at the wrong step, or a reply to a transaction not yet
        started.
        """
        name = type_name(header.type)
        if header.step == TransactionStep.NONE:
            self._received = (self._received + 1) & U32_MAX
            if self._check_sequence and header.transaction_id != self._received:
                raise ProtocolError(
                    f"{name} has sequence number {header.transaction_id}, "
                    f"expected {self._received}",
                    message_type=header.type,
                )
            return awaiting is None
        if awaiting is None:
            if header.step == TransactionStep.REQUEST:
                return True
            if header.transaction_id < self._seed:
                return False  # the reply to a transaction whose wait timed out
            raise ProtocolError(
                f"{name} replies to transaction {header.transaction_id}, which was never started",
                message_type=header.type,
            )
        transaction_id, step = awaiting
        if header.transaction_id < transaction_id:
            return False
        if header.transaction_id > transaction_id:
            raise ProtocolError(
                f"{name} belongs to transaction {header.transaction_id}, "
                f"but transaction {transaction_id} is in progress",
                message_type=header.type,
            )
        if header.step != step:
            raise ProtocolError(
                f"{name} is step {header.step} of transaction {transaction_id}, expected {step}",
                message_type=header.type,
            )
        return True


def accept_frame(
    state: ChannelState,
    frame: Frame,
    expected: tuple[type[Message], ...] | None,
    awaiting: tuple[int, int] | None,
    what: str,
) -> tuple[MessageHeader, Message, list[int]] | None:
    """Apply the sequencing rules to a received frame and decode it.

    None for a stale frame (its fds closed). Raises ProtocolError, with the frame's fds
    closed, for anything the rules or the codec refuse or a message not in *expected*.
    Shared by the blocking Channel and the service's asyncio end (lxss.vm.link).
    """
    fds = list(frame.fds)
    try:
        if not state.check_incoming(frame.header, awaiting):
            close_fds(fds)
            return None
        header, message = decode(frame.data, len(fds))
        if expected and not isinstance(message, expected):
            raise ProtocolError(
                f"expected {what}, received {type(message).__name__}",
                message_type=header.type,
            )
    except BaseException:
        close_fds(fds)
        raise
    return header, message, fds


class _Deadline:
    """One monotonic deadline for a whole operation, and how its expiry is reported."""

    def __init__(self, timeout: float) -> None:
        if timeout < 0 or math.isnan(timeout):
            raise ValueError(f"timeout must be a number of seconds >= 0, not {timeout!r}")
        self.timeout = timeout
        self.end = time.monotonic() + timeout

    def poll_ms(self) -> int | None:
        """Milliseconds left for poll(), rounded up; None if no limit; 0 once expired."""
        if math.isinf(self.end):
            return None
        left = self.end - time.monotonic()
        return 0 if left <= 0 else min(math.ceil(left * 1000), _POLL_MAX_MS)

    def expired(self) -> bool:
        return time.monotonic() >= self.end


def _names(expected: tuple[type[Message], ...]) -> str:
    return " or ".join(cls.__name__ for cls in expected)


class Channel:
    """A guest-protocol channel over a connected ``AF_UNIX`` ``SOCK_STREAM`` socket (blocking).

    The channel owns ``sock`` and closes it in :meth:`close`. Every call that waits takes a
    ``timeout`` in seconds: ``None`` means the channel's ``timeout`` (30 s unless told), and
    ``math.inf`` waits as long as it takes, which a caller must ask for explicitly. Expiry
    raises ``TimeoutError`` naming the channel and the message awaited; a peer that closed
    raises :class:`ChannelClosed`; anything malformed raises :class:`ProtocolError`.

    Descriptors received are returned to the caller, who owns them (they are close-on-exec);
    on any error after they arrived, the channel closes them before raising. Descriptors sent
    are duplicated into the peer: the caller still owns, and should close, its own copies.

    Not thread-safe: one thread (or one forked process) uses a channel at a time. ``log``, if
    set, is called with one line per message sent, received or discarded.
    """

    def __init__(
        self,
        sock: socket.socket,
        name: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
            raise ValueError(f"channel {name} needs an AF_UNIX SOCK_STREAM socket, not {sock!r}")
        # Every call below passes MSG_DONTWAIT and waits in poll(); a Python-level socket
        # timeout would add a second, hidden wait.
        sock.settimeout(None)
        self.sock = sock
        self.name = name
        self.timeout = timeout
        self.log = log
        self.state = ChannelState()
        self._assembler = FrameAssembler(TYPE_NAMES)
        self._frames: deque[Frame] = deque()
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd {self.sock.fileno()}"
        return f"<Channel {self.name!r} {state}>"

    def __enter__(self) -> "Channel":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(f"unclosed {self!r}", ResourceWarning, source=self, stacklevel=1)
            self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def fileno(self) -> int:
        """The socket's descriptor, for a caller's own poll loop."""
        return self.sock.fileno()

    def ignore_sequence_numbers(self) -> None:
        """See :meth:`ChannelState.ignore_sequence_numbers`."""
        self.state.ignore_sequence_numbers()

    def close(self) -> None:
        """Close the socket and every received descriptor not yet handed out. Idempotent."""
        if self._closed:
            return
        self._closed = True
        while self._frames:
            close_fds(self._frames.popleft().fds)
        self._assembler.close()
        self.sock.close()

    # --- sending --------------------------------------------------------------------------

    def send(self, message: Message, fds: Sequence[int] = (), timeout: float | None = None) -> None:
        """Send ``message`` outside any transaction, with ``fds`` attached.

        Raises ``ValueError`` (before anything is sent) if ``message`` does not encode or
        ``fds`` is not the number it carries.
        """
        self._send(message, fds, self.state.stamp_message, self._deadline(timeout))

    def reply(
        self,
        request_header: MessageHeader,
        message: Message,
        fds: Sequence[int] = (),
        timeout: float | None = None,
    ) -> None:
        """Answer the request whose header was received (see :meth:`receive_with_header`)."""
        stamp = ChannelState.stamp_reply(request_header)
        self._send(message, fds, lambda: stamp, self._deadline(timeout))

    def _send(
        self,
        message: Message,
        fds: Sequence[int],
        stamp: Callable[[], tuple[int, int]],
        deadline: _Deadline,
    ) -> tuple[int, int]:
        """Encode and check ``message``, only then take its (id, step) words, and write it."""
        self._check_open()
        frame = self.state.prepare(self.name, message, fds, stamp)
        try:
            self._write(frame, deadline)
        except BaseException as error:
            self.state.tear(frame, error)
            raise
        if self.log is not None:
            self.log(f"{self.name}: sent {message!r} id={frame.transaction_id} step={frame.step}"
                     f" fds={fds}")  # fmt: skip
        return frame.transaction_id, frame.step

    def _write(self, frame: PreparedFrame, deadline: _Deadline) -> None:
        """Write one frame: one sendmsg, descriptors with its first byte, then the rest."""
        ancillary, what = frame.ancillary, frame.what
        flags = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL
        view = memoryview(frame.data)
        sent = 0
        while sent < len(view):
            try:
                if sent == 0:
                    sent = self.sock.sendmsg([view], ancillary, flags)
                else:
                    sent += self.sock.send(view[sent:], flags)
            except BlockingIOError:
                self._wait(select.POLLOUT, deadline, f"room to send {what} ({sent} bytes sent)")
            except (BrokenPipeError, ConnectionResetError) as error:
                text = f"channel {self.name}: peer closed it; {what} not sent"
                raise ChannelClosed(text) from error

    # --- receiving ------------------------------------------------------------------------

    @overload
    def receive(self, expected: type[M], timeout: float | None = None) -> tuple[M, list[int]]: ...

    @overload
    def receive(
        self,
        expected: tuple[type[Message], ...] | None = None,
        timeout: float | None = None,
    ) -> tuple[Message, list[int]]: ...

    def receive(
        self,
        expected: type[Message] | tuple[type[Message], ...] | None = None,
        timeout: float | None = None,
    ) -> tuple[Message, list[int]]:
        """Receive the next message, which must be one of ``expected`` if given.

        Returns the message and its descriptors (the caller's to close). A message of another
        type raises :class:`ProtocolError`.
        """
        _, message, fds = self.receive_with_header(expected, timeout)
        return message, fds

    @overload
    def receive_with_header(
        self, expected: type[M], timeout: float | None = None
    ) -> tuple[MessageHeader, M, list[int]]: ...

    @overload
    def receive_with_header(
        self,
        expected: tuple[type[Message], ...] | None = None,
        timeout: float | None = None,
    ) -> tuple[MessageHeader, Message, list[int]]: ...

    def receive_with_header(
        self,
        expected: type[Message] | tuple[type[Message], ...] | None = None,
        timeout: float | None = None,
    ) -> tuple[MessageHeader, Message, list[int]]:
        """Like :meth:`receive`, also returning the header, which :meth:`reply` needs."""
        types = (expected,) if isinstance(expected, type) else expected
        what = _names(types) if types else "any message"
        return self._receive(types, None, self._deadline(timeout), what)

    def transaction(
        self,
        request: Message,
        reply_type: type[M],
        fds: Sequence[int] = (),
        timeout: float | None = None,
    ) -> tuple[M, list[int]]:
        """Send ``request`` and wait for its first reply, which must be a ``reply_type``.

        ``timeout`` bounds the whole exchange. Returns the reply and its descriptors (the
        caller's to close).
        """
        deadline = self._deadline(timeout)
        transaction_id, _ = self._send(request, fds, self.state.begin_transaction, deadline)
        what = f"{reply_type.__name__} (reply to {type(request).__name__} #{transaction_id})"
        awaiting = (transaction_id, TransactionStep.FIRST_REPLY)
        _, reply, reply_fds = self._receive((reply_type,), awaiting, deadline, what)
        return cast(M, reply), reply_fds

    def _receive(
        self,
        expected: tuple[type[Message], ...] | None,
        awaiting: tuple[int, int] | None,
        deadline: _Deadline,
        what: str,
    ) -> tuple[MessageHeader, Message, list[int]]:
        self._check_open()
        while True:
            frame = self._next_frame(deadline, what)
            try:
                accepted = accept_frame(self.state, frame, expected, awaiting, what)
            except ProtocolError as error:
                raise self._named(error) from None
            if accepted is None:
                self._log_frame("discarded stale", frame)
                continue
            header, message, fds = accepted
            if self.log is not None:
                self.log(
                    f"{self.name}: received {message!r} id={header.transaction_id} "
                    f"step={header.step} fds={fds}"
                )
            return header, message, fds

    def _next_frame(self, deadline: _Deadline, what: str) -> Frame:
        """Read until a whole frame is in, never past its end (later frames stay queued)."""
        while not self._frames:
            if self._assembler.failed is not None:
                raise self._named(ProtocolError(f"stream failed: {self._assembler.failed}"))
            self._wait(select.POLLIN, deadline, what)
            wanted = min(self._assembler.bytes_wanted(), _CHUNK)
            try:
                data, ancillary, flags, _ = self.sock.recvmsg(
                    wanted, RECV_ANCILLARY_SPACE, socket.MSG_CMSG_CLOEXEC | socket.MSG_DONTWAIT
                )
            except BlockingIOError:
                continue  # woken without data; poll again
            except ConnectionResetError:
                data, ancillary, flags = b"", [], 0
            try:
                self._frames.extend(self._assembler.feed_received(data, ancillary, flags))
            except ProtocolError as error:
                raise self._named(error) from None
            except ChannelClosed as closed:
                raise ChannelClosed(
                    f"channel {self.name}: {closed} while waiting for {what}"
                ) from None
        return self._frames.popleft()

    # --- shared ---------------------------------------------------------------------------

    def _deadline(self, timeout: float | None) -> _Deadline:
        return _Deadline(self.timeout if timeout is None else timeout)

    def _wait(self, events: int, deadline: _Deadline, what: str) -> None:
        """Wait until the socket is ready for ``events``, or raise ``TimeoutError``."""
        poller = select.poll()
        poller.register(self.sock.fileno(), events)
        while not poller.poll(deadline.poll_ms()):
            if deadline.expired():
                raise TimeoutError(
                    f"channel {self.name}: timed out after {deadline.timeout:g} s "
                    f"waiting for {what}"
                )

    def _check_open(self) -> None:
        if self._closed:
            raise ChannelClosed(f"channel {self.name} is closed")

    def _named(self, error: ProtocolError) -> ProtocolError:
        """The same error, its text prefixed with the channel's name."""
        return ProtocolError(
            f"channel {self.name}: {error}", message_type=error.message_type, field=error.field
        )

    def _log_frame(self, verb: str, frame: Frame) -> None:
        if self.log is not None:
            header = frame.header
            self.log(
                f"{self.name}: {verb} {type_name(header.type)} id={header.transaction_id} "
                f"step={header.step} fds={list(frame.fds)}"
            )
