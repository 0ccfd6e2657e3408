"""The service's end of a guest channel, on asyncio.

The same codec, framing and sequencing rules (ChannelState) as the guest's
blocking Channel, and the same frame preparation (`ChannelState.prepare`: encode,
check the descriptor count, only then number; a send that fails or is cancelled
midway tears the link); only the waiting differs. One transaction at a time per
channel (as WSL's SocketChannel requires): `transaction` holds a lock.
Everything the guest sends is untrusted: malformed input raises
ProtocolError and the caller drops the channel.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TypeVar

from lxss.aio import FdWatch
from lxss.protocol.channel import ChannelClosed, ChannelState, PreparedFrame, accept_frame
from lxss.protocol.codec import TYPE_NAMES, Message
from lxss.protocol.framing import (
    RECV_ANCILLARY_SPACE,
    Frame,
    FrameAssembler,
    MessageHeader,
    ProtocolError,
    TransactionStep,
    close_fds,
)

M = TypeVar("M", bound=Message)

_CHUNK = 1 << 16


class GuestLink:
    """One channel to mini_init, a distribution's init or a session leader."""

    def __init__(self, sock: socket.socket, name: str, timeout: float = 30.0) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.name = name
        self.timeout = timeout
        self.state = ChannelState()
        self._assembler = FrameAssembler(TYPE_NAMES)
        self._frames: deque[Frame] = deque()
        self._lock = asyncio.Lock()
        self._watch = FdWatch(sock.fileno(), ChannelClosed)
        self.closed = False

    def __repr__(self) -> str:
        return f"<GuestLink {self.name!r} {'closed' if self.closed else self.sock.fileno()}>"

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def busy(self) -> bool:
        """A transaction is under way on this link."""
        return self._lock.locked()

    def peer_gone(self) -> bool:
        """True if the peer has closed its end (checked without waiting or consuming)."""
        if self.closed:
            return True
        try:
            return self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        # Unregister our fd while it is still ours. A wait left registered on a closed fd
        # would, when its number is reused (the next VM's channel), swallow the new
        # socket's registration (asyncio relabels the stale key; epoll never sees the new
        # socket) or remove it when the old wait times out.
        self._watch.close()  # before the socket: its fd number may be reused at once
        while self._frames:
            close_fds(self._frames.popleft().fds)
        self._assembler.close()
        self.sock.close()

    # Sending ---------------------------------------------------------------------

    async def _send(
        self,
        message: Message,
        fds: Sequence[int],
        stamp: Callable[[], tuple[int, int]],
        deadline: float,
    ) -> PreparedFrame:
        if self.closed:
            raise ChannelClosed(f"channel {self.name} is closed")
        frame = self.state.prepare(self.name, message, fds, stamp)  # ValueError: nothing spent
        try:
            await self._write(frame, deadline)
        except BaseException as error:  # cancelled midway too: the peer saw half a frame
            self.state.tear(frame, error)
            raise
        return frame

    async def _write(self, frame: PreparedFrame, deadline: float) -> None:
        ancillary = frame.ancillary
        view = memoryview(frame.data)
        try:
            while view:
                try:
                    sent = self.sock.sendmsg([view], ancillary)
                except BlockingIOError:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(
                            f"channel {self.name}: no room to send {frame.what} in time"
                        ) from None
                    await self._watch.wait(writing=True, timeout=remaining)
                    continue
                ancillary = []  # the fds went with the first byte
                view = view[sent:]
        except (BrokenPipeError, ConnectionResetError) as e:
            raise ChannelClosed(f"channel {self.name}: peer closed it ({e.strerror})") from None

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    async def send(self, message: Message, fds: Sequence[int] = ()) -> None:
        await self._send(message, fds, self.state.stamp_message, self._deadline(None))

    async def reply(
        self, request: MessageHeader, message: Message, fds: Sequence[int] = ()
    ) -> None:
        """Answer a transaction the guest began (see `receive_with_header`)."""
        ids = ChannelState.stamp_reply(request)
        await self._send(message, fds, lambda: ids, self._deadline(None))

    async def transaction(
        self,
        request: Message,
        reply_type: type[M],
        fds: Sequence[int] = (),
        timeout: float | None = None,
    ) -> tuple[M, list[int]]:
        """Send *request* and return its reply (and the fds that came with it: the caller's),
        the whole exchange bounded by one deadline."""
        async with self._lock:
            deadline = self._deadline(timeout)
            frame = await self._send(request, fds, self.state.begin_transaction, deadline)
            awaiting = (frame.transaction_id, TransactionStep.FIRST_REPLY)
            _, reply, reply_fds = await self._receive((reply_type,), awaiting, deadline)
            assert isinstance(reply, reply_type)
            return reply, reply_fds

    # Receiving -------------------------------------------------------------------

    async def receive(
        self, expected: tuple[type[Message], ...], timeout: float | None = None
    ) -> tuple[Message, list[int]]:
        """The next message outside any transaction (it must be one of *expected*)."""
        _, message, fds = await self._receive(expected, None, self._deadline(timeout))
        return message, fds

    async def receive_with_header(
        self, expected: tuple[type[Message], ...], timeout: float | None = None
    ) -> tuple[MessageHeader, Message, list[int]]:
        """As `receive`, with the header a reply needs."""
        return await self._receive(expected, None, self._deadline(timeout))

    async def _receive(
        self,
        expected: tuple[type[Message], ...],
        awaiting: tuple[int, int] | None,
        deadline: float,
    ) -> tuple[MessageHeader, Message, list[int]]:
        what = ", ".join(t.__name__ for t in expected)
        while True:
            frame = await self._next_frame(deadline)
            try:
                accepted = accept_frame(self.state, frame, expected, awaiting, what)
            except ProtocolError as e:
                raise ProtocolError(f"channel {self.name}: {e}") from None
            if accepted is not None:
                return accepted

    async def _next_frame(self, deadline: float) -> Frame:
        while not self._frames:
            if self.closed:
                raise ChannelClosed(f"channel {self.name} is closed")
            try:
                data, ancillary, flags, _ = self.sock.recvmsg(
                    min(self._assembler.bytes_wanted(), _CHUNK),
                    RECV_ANCILLARY_SPACE,
                    socket.MSG_CMSG_CLOEXEC,
                )
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"channel {self.name}: no answer in time") from None
                await self._watch.wait(writing=False, timeout=remaining)
                continue
            except ConnectionResetError:
                data, ancillary, flags = b"", [], 0
            try:
                self._frames.extend(self._assembler.feed_received(data, ancillary, flags))
            except ProtocolError as e:
                raise ProtocolError(f"channel {self.name}: {e}") from None
            except ChannelClosed as e:
                raise ChannelClosed(f"channel {self.name}: {e}") from None
        return self._frames.popleft()
