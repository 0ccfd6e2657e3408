"""The multiplexer's I/O: one poll loop between the stream and each channel's local end.

Both ends of a version 2 VM's channel run this loop: the host's (lxss.vm.muxlink, in a
thread of lxssd) on QEMU's chardev socket, the guest's (lxss.guest.muxport, a process
of its own) on the virtio-serial port's device. Each channel's local end is an
ordinary descriptor that its user (the service, mini_init, a relay, a program) reads
and writes as it would in version 1:

- a descriptor attached to a message (SCM_RIGHTS on a local Unix socket) is sent as a
  channel opened for attachment; at the far end a new pipe or socket pair stands for
  it, and its other end is passed on, with SCM_RIGHTS again, on the last byte of the
  same data (where lxss's receivers look for descriptors);
- a channel opened for a service is handed to that service's listener (`accept`).

Never blocking on a local descriptor is what keeps one stalled reader from stalling
the rest: the loop writes only what a descriptor takes now, keeps the rest (at most a
channel's window), and stops granting credit for that channel meanwhile. The loop
changes no flag on a descriptor another process shares: a pipe or terminal it was
given is reopened through /proc/self/fd (a description of its own, then made
non-blocking), a socket is used with MSG_DONTWAIT.

Guest roles run single-threaded after fork; this module imports only the standard
library and lxss.protocol, at the top.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import logging
import os
import select
import socket
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from lxss.linux.fdpass import fds_from_ancillary
from lxss.protocol import mux
from lxss.protocol.framing import close_fds

log = logging.getLogger(__name__)

READ_SIZE: Final = 256 * 1024  # one read of the stream
OUTBOX_HIGH: Final = 512 * 1024  # queued for the stream: local descriptors wait beyond it
IOV_MAX: Final = 1024
PEER_RECHECK: Final = 0.05  # seconds between looks at a port whose peer is not there yet
PIPE_SIZE: Final = 1024 * 1024  # for the pipes made here (the default is 64 KiB)
_ANCILLARY: Final = socket.CMSG_SPACE(mux.MAX_ATTACHMENTS * 4)
_SEND_FLAGS: Final = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL
_GONE: Final = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.EIO, errno.ENXIO)


def _relay_pipe() -> tuple[int, int] | None:
    """A pipe holding a channel's whole window, for splicing through; None if the
    pipe cannot be made that big (then bytes are copied through the loop)."""
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, mux.WINDOW) >= mux.WINDOW:
            return read_end, write_end
    except OSError:
        pass
    close_fds((read_end, write_end))
    return None


class _StreamEnded(Exception):
    """The peer went (end of file, a broken pipe): the loop's normal end."""


# accept(service, socket): the listener takes the socket (and closes it) or returns False.
Acceptor = Callable[[int, socket.socket], bool]


def classify(fd: int) -> tuple[mux.Kind, bool]:
    """The channel kind standing for descriptor *fd*, and whether it is a Unix stream
    socket (so descriptors may ride on it). A read-only descriptor is read at this end
    (READER: the far end hands on a pipe's read end), a write-only one written
    (WRITER); anything read-write (a socket, a terminal) carries both ways."""
    mode = os.fstat(fd).st_mode
    if stat.S_ISSOCK(mode):
        probe = socket.socket(fileno=fd)
        try:
            unix = probe.family == socket.AF_UNIX and probe.type == socket.SOCK_STREAM
        finally:
            probe.detach()
        return mux.Kind.SOCKET, unix
    access = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
    if access == os.O_RDONLY:
        return mux.Kind.READER, False
    if access == os.O_WRONLY:
        return mux.Kind.WRITER, False
    return mux.Kind.SOCKET, False


def private_description(fd: int) -> int:
    """A descriptor for what *fd* refers to that may be made non-blocking without
    touching anyone else's (*fd* is closed). Pipes and terminals are reopened by
    /proc/self/fd; sockets and regular files are kept (sockets are used with
    MSG_DONTWAIT, regular files never block)."""
    st = os.fstat(fd)
    if not (stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode)):
        return fd
    access = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
    flags = access | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        return os.open(f"/proc/self/fd/{fd}", flags)
    finally:
        os.close(fd)


@dataclass(eq=False)
class Endpoint:
    """A channel's local end: what is read to send (rfd) and written with what arrives
    (wfd); one socket is both."""

    channel: int
    rfd: int | None
    wfd: int | None
    sock: socket.socket | None  # rfd and wfd's socket, used with MSG_DONTWAIT (it may be shared)
    unix: bool  # a Unix stream socket: descriptors ride along
    pending: deque[tuple[memoryview, list[int]]] = field(default_factory=deque)
    pending_bytes: int = 0
    read_done: bool = False  # end of file read, or nothing to read at this end
    peer_eof: bool = False
    detached: bool = False  # the channel is gone (its id may be reused): only draining
    # Host side, a pipe's end: bytes move by splice through this pipe of our own (read
    # end, write end), towards the stream (*deferred*: the frame they are queued as) or
    # towards the local end (*relay_bytes* of them wait in it).
    relay: tuple[int, int] | None = None
    deferred: mux.Deferred | None = None
    relay_bytes: int = 0

    def fds(self) -> set[int]:
        return {fd for fd in (self.rfd, self.wfd) if fd is not None}

    def waiting(self) -> int:
        """Bytes received for the local end and not yet written to it."""
        return self.pending_bytes + self.relay_bytes

    def sending(self) -> bool:
        """Whether bytes read from the local end still wait in the relay pipe."""
        return self.deferred is not None and self.deferred.remaining > 0

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        else:
            close_fds(self.fds())
        if self.relay is not None:
            close_fds(self.relay)
            self.relay = None
        self.rfd = self.wfd = None
        for _, fds in self.pending:
            close_fds(fds)
        self.pending.clear()


class Pump:
    """One end of the multiplexed stream and every channel's local end.

    `run` serves until the stream ends, fails or `stop` is called, and then closes
    every local end (their users see end of file), the stream and its own pipes.
    `open` may be called from any thread; everything else runs in `run`'s.
    """

    def __init__(self, stream: int, role: mux.Role, name: str, accept: Acceptor | None = None,
                 wait_for_peer: bool = False) -> None:  # fmt: skip
        """*wait_for_peer*: end of file before the peer's HELLO means it is not there yet
        (a virtio-serial port reads so until the host opens its end), not that it left."""
        os.set_blocking(stream, False)
        self.wait_for_peer = wait_for_peer
        # Splice where it saves copies: the host's pipes to and from its socket to QEMU.
        self.splicing = role == mux.Role.HOST and stat.S_ISSOCK(os.fstat(stream).st_mode)
        self.stream = stream
        self.name = name
        self.mux = mux.Mux(role)
        self.accept = accept
        self.endpoints: dict[int, Endpoint] = {}
        self.connected = threading.Event()  # the peer's HELLO arrived
        self.finished = threading.Event()
        self.failure: str | None = None  # why the stream ended, once it has
        self._unattached: dict[int, int] = {}  # channel -> its end to pass on, once attached
        # Ends whose channel the peer closed, still writing out what it sent before.
        self._draining: set[Endpoint] = set()
        self._by_fd: dict[int, list[Endpoint]] = {}
        self._requests: deque[tuple[int, socket.socket]] = deque()
        self._lock = threading.Lock()
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._buffer = bytearray(READ_SIZE)
        self.bytes_in = 0
        self.bytes_out = 0

    def __repr__(self) -> str:
        state = f"ended: {self.failure}" if self.finished.is_set() else "running"
        return f"<Pump {self.name} {len(self.endpoints)} channels {state}>"

    # Called from any thread ---------------------------------------------------------

    def open(self, service: int) -> socket.socket:
        """A Unix stream socket whose peer is *service*'s listener at the far end (as a
        vsock connection to a port). The caller owns it. ConnectionError if the stream
        has ended."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with self._lock:
            if self.finished.is_set() or self._stopping:
                ours.close()
                theirs.close()
                raise ConnectionError(f"{self.name}: the stream has ended ({self.failure})")
            self._requests.append((service, ours))
        self._wake()
        return theirs

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"!")

    # The loop ----------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._serve()
        except _StreamEnded as e:
            self.failure = str(e)
            log.info("%s: %s", self.name, self.failure)
        except mux.MuxError as e:
            self.failure = f"the peer broke the protocol: {e}"
            log.error("%s: %s", self.name, self.failure)
        except OSError as e:
            self.failure = f"{e.strerror or e}"
            log.error("%s: stream failed: %s", self.name, self.failure)
        finally:
            self._shut_down()

    def _serve(self) -> None:
        poller = select.poll()
        registered: dict[int, int] = {}
        while True:
            with self._lock:
                stopping = self._stopping
            if stopping:
                self.failure = self.failure or "stopped"
                return
            wanted = self._wanted()
            for fd in list(registered):
                if fd not in wanted:
                    poller.unregister(fd)
                    del registered[fd]
            for fd, events in wanted.items():
                if registered.get(fd) != events:
                    poller.register(fd, events)
                    registered[fd] = events
            ready = poller.poll()
            for fd, events in ready:
                if fd == self._wake_r:
                    self._take_requests()
                elif fd == self.stream:
                    if events & select.POLLOUT:
                        self._flush_stream()
                    if events & (select.POLLIN | select.POLLHUP | select.POLLERR):
                        self._read_stream()
                else:
                    self._local_ready(fd, events)
            self._flush_stream()

    def _wanted(self) -> dict[int, int]:
        """What to poll for: the stream always (it must never wait on a channel), each
        local end for reading while it has credit and the stream has room, for writing
        while bytes wait for it, and for errors (a reader gone) always."""
        wanted = {self._wake_r: select.POLLIN, self.stream: select.POLLIN}
        if self.mux.outbox:
            wanted[self.stream] |= select.POLLOUT
        room = self.mux.outbox_bytes < OUTBOX_HIGH
        self._by_fd = {}
        for endpoint in [*self.endpoints.values(), *self._draining]:
            for fd in endpoint.fds():
                self._by_fd.setdefault(fd, []).append(endpoint)
            reading = (
                endpoint.rfd is not None
                and not endpoint.read_done
                and room
                and not endpoint.sending()
                and self.mux.credit(endpoint.channel) > 0
            )
            if reading:
                assert endpoint.rfd is not None
                wanted[endpoint.rfd] = wanted.get(endpoint.rfd, 0) | select.POLLIN
            if endpoint.wfd is not None and not (endpoint.peer_eof and not endpoint.waiting()):
                watch_errors = endpoint.wfd != endpoint.rfd or endpoint.read_done
                if endpoint.waiting():
                    wanted[endpoint.wfd] = wanted.get(endpoint.wfd, 0) | select.POLLOUT
                elif watch_errors:  # POLLERR/POLLHUP come unasked
                    wanted.setdefault(endpoint.wfd, 0)
        return wanted

    def _take_requests(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)
        while True:
            with self._lock:
                if not self._requests:
                    return
                service, sock = self._requests.popleft()
            self._add_socket(self.mux.open(mux.Kind.SOCKET, service), sock, mux.Kind.SOCKET)

    def _add_socket(self, channel: int, sock: socket.socket, kind: mux.Kind) -> None:
        fd = sock.fileno()
        unix = sock.family == socket.AF_UNIX and sock.type == socket.SOCK_STREAM
        rfd = fd if kind != mux.Kind.WRITER else None
        wfd = fd if kind != mux.Kind.READER else None
        self.endpoints[channel] = Endpoint(channel, rfd, wfd, sock, unix, read_done=rfd is None)

    def _add_pipe(self, channel: int, rfd: int | None, wfd: int | None) -> None:
        relay = None
        for fd in (rfd, wfd):
            if fd is not None:
                os.set_blocking(fd, False)
                if self.splicing and stat.S_ISFIFO(os.fstat(fd).st_mode):
                    relay = _relay_pipe()
        self.endpoints[channel] = Endpoint(channel, rfd, wfd, None, False, read_done=rfd is None,
                                           relay=relay)  # fmt: skip

    # The stream ----------------------------------------------------------------------

    def _read_stream(self) -> None:
        """Read what the stream has and act on it; _StreamEnded once it has ended."""
        buffer = memoryview(self._buffer)
        if self.splicing:
            # Frame by frame, so that a DATA frame's data starts a read: then it can be
            # spliced into its channel's relay pipe, never copied through here.
            if self._splice_in():
                return
            buffer = buffer[: min(self.mux.bytes_wanted(), READ_SIZE)]
        try:
            count = os.readv(self.stream, [buffer])
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno not in _GONE:
                raise
            count = 0
        if count == 0:
            if self.wait_for_peer and not self.connected.is_set():
                time.sleep(PEER_RECHECK)  # the port polls readable meanwhile: do not spin
                return
            raise _StreamEnded("the peer closed the stream")
        self.bytes_in += count
        for event in self.mux.receive(buffer[:count]):
            self._on_event(event)

    def _splice_in(self) -> bool:
        """Splice the data of the DATA frame being received into its channel's relay
        pipe, if it has one and nothing waits before it; whether anything was done."""
        channel = self.mux.data_pending()
        endpoint = self.endpoints.get(channel) if channel is not None else None
        if endpoint is None or endpoint.relay is None or endpoint.wfd is None or endpoint.pending:
            return False
        try:
            count = os.splice(self.stream, endpoint.relay[1], self.mux.bytes_wanted(),
                              flags=os.SPLICE_F_NONBLOCK)  # fmt: skip
        except BlockingIOError:
            return False  # the relay pipe is full (pages half used): copy the rest
        except OSError as e:
            if e.errno not in _GONE:
                raise
            count = 0
        if count == 0:
            raise _StreamEnded("the peer closed the stream")
        self.bytes_in += count
        self.mux.skip(count)
        endpoint.relay_bytes += count
        self._flush_local(endpoint)
        return True

    def _flush_stream(self) -> None:
        while self.mux.outbox:
            first = self.mux.outbox[0]
            try:
                if isinstance(first, mux.Deferred):
                    written = os.splice(first.source, self.stream, first.remaining,
                                        flags=os.SPLICE_F_NONBLOCK)  # fmt: skip
                    if not written:
                        raise OSError(errno.EIO, "a relay pipe ran dry")  # a bug: say so
                else:
                    buffers = []
                    for buffer in self.mux.outbox[:IOV_MAX]:
                        if isinstance(buffer, mux.Deferred):
                            break
                        buffers.append(buffer)
                    written = os.writev(self.stream, buffers)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in _GONE:
                    raise _StreamEnded("the peer closed the stream") from None
                raise
            self.bytes_out += written
            self.mux.wrote(written)

    def _on_event(self, event: mux.Event) -> None:
        if isinstance(event, mux.Data):
            endpoint = self.endpoints.get(event.channel)
            fds = [self._unattached.pop(other) for other in event.attached]
            if endpoint is None:  # our end went meanwhile (CLOSE crossing)
                close_fds(fds)
                return
            self._write_local(endpoint, event.data, fds)
        elif isinstance(event, mux.Opened):
            self._on_opened(event)
        elif isinstance(event, mux.Eof):
            endpoint = self.endpoints.get(event.channel)
            if endpoint is not None:
                endpoint.peer_eof = True
                self._finish_writing(endpoint)
        elif isinstance(event, mux.Closed):
            # The peer sends and reads no more; what it sent before still goes out.
            endpoint = self.endpoints.pop(event.channel, None)
            if endpoint is not None:
                endpoint.detached = True
                endpoint.read_done = endpoint.peer_eof = True
                if endpoint.waiting() and endpoint.wfd is not None:
                    self._draining.add(endpoint)
                else:
                    endpoint.close()
        elif isinstance(event, mux.Hello):
            self.connected.set()

    def _on_opened(self, event: mux.Opened) -> None:
        """The peer opened a channel: make the local descriptor pair standing for it."""
        theirs: int | socket.socket
        if event.kind == mux.Kind.SOCKET:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            self._add_socket(event.channel, ours, mux.Kind.SOCKET)
        else:
            read_end, write_end = os.pipe2(os.O_CLOEXEC)
            with contextlib.suppress(OSError):  # a bigger pipe: fewer, larger writes
                fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            if event.kind == mux.Kind.READER:  # its user reads what the peer sends
                self._add_pipe(event.channel, None, write_end)
                theirs = read_end
            else:
                self._add_pipe(event.channel, read_end, None)
                theirs = write_end
        if event.service == mux.SERVICE_ATTACHMENT:
            self._unattached[event.channel] = (
                theirs.detach() if isinstance(theirs, socket.socket) else theirs
            )
            return
        offered = theirs if isinstance(theirs, socket.socket) else socket.socket(fileno=theirs)
        if self.accept is None or not self.accept(event.service, offered):
            offered.close()
            log.warning("%s: refused a channel for service %d", self.name, event.service)
            self._drop(self.endpoints[event.channel])

    # Local ends ----------------------------------------------------------------------

    def _local_ready(self, fd: int, events: int) -> None:
        for endpoint in self._by_fd.get(fd, ()):
            if fd == endpoint.wfd and endpoint.waiting() and events & select.POLLOUT:
                self._flush_local(endpoint)
            if fd not in endpoint.fds():
                continue
            if fd == endpoint.rfd and not endpoint.read_done and events & ~select.POLLOUT:
                self._read_local(endpoint)
            elif fd == endpoint.wfd and events & (select.POLLERR | select.POLLHUP):
                self._drop(endpoint)  # its reader is gone: so is the channel

    def _read_local(self, endpoint: Endpoint) -> None:
        assert endpoint.rfd is not None
        size = self.mux.credit(endpoint.channel)
        if size <= 0:
            return
        fds: list[int] = []
        try:
            if endpoint.relay is not None:
                moved = os.splice(endpoint.rfd, endpoint.relay[1], size, flags=os.SPLICE_F_NONBLOCK)
                if moved:
                    endpoint.deferred = self.mux.send_deferred(endpoint.channel, moved,
                                                               endpoint.relay[0])  # fmt: skip
                    return
                data = b""
            elif endpoint.unix:
                assert endpoint.sock is not None
                data, ancillary, flags, _ = endpoint.sock.recvmsg(
                    size, _ANCILLARY, socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC
                )
                fds = fds_from_ancillary(ancillary, socket.SOL_SOCKET, socket.SCM_RIGHTS)
                if flags & socket.MSG_CTRUNC:
                    close_fds(fds)
                    log.warning("%s: more than %d descriptors at once on channel %d",
                                self.name, mux.MAX_ATTACHMENTS, endpoint.channel)  # fmt: skip
                    self._drop(endpoint)
                    return
            elif endpoint.sock is not None:
                data = endpoint.sock.recv(size, socket.MSG_DONTWAIT)
            else:
                data = os.read(endpoint.rfd, size)
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno not in _GONE and e.errno != errno.EISDIR:
                raise
            data = b""
        if not data:
            close_fds(fds)
            endpoint.read_done = True
            self.mux.send_eof(endpoint.channel)
            self._close_if_done(endpoint)
            return
        attached = [self._attach(fd) for fd in fds]
        self.mux.send(endpoint.channel, data, attached)

    def _attach(self, fd: int) -> int:
        """A descriptor that arrived on a local socket: the channel standing for it."""
        kind, is_socket = classify(fd)
        channel = self.mux.open(kind, mux.SERVICE_ATTACHMENT)
        if is_socket:
            self._add_socket(channel, socket.socket(fileno=fd), kind)
        else:
            fd = private_description(fd)
            rfd = fd if kind != mux.Kind.WRITER else None
            wfd = fd if kind != mux.Kind.READER else None
            self._add_pipe(channel, rfd, wfd)
        return channel

    def _write_local(self, endpoint: Endpoint, data: memoryview, fds: list[int]) -> None:
        """Hand *data* (a view into the read buffer) on, or keep what does not fit now."""
        if endpoint.wfd is None:
            close_fds(fds)
            return
        if not endpoint.waiting():
            data = self._write_some(endpoint, data, fds)
            if not data or endpoint.wfd is None:
                return
        endpoint.pending.append((memoryview(bytes(data)), fds))
        endpoint.pending_bytes += len(data)

    def _write_some(self, endpoint: Endpoint, data: memoryview, fds: list[int]) -> memoryview:
        """Write what fits of *data* now; the rest. Descriptors go with the last byte."""
        assert endpoint.wfd is not None
        total = len(data)
        try:
            while data:
                sock = endpoint.sock
                if fds and len(data) == 1:
                    assert sock is not None  # descriptors are attached on Unix sockets only
                    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                    sock.sendmsg([data], ancillary, _SEND_FLAGS)
                    close_fds(fds)
                    fds.clear()
                    data = data[1:]
                    continue
                chunk = data[:-1] if fds else data
                if sock is not None:
                    written = sock.send(chunk, _SEND_FLAGS)
                else:
                    written = os.write(endpoint.wfd, chunk)
                data = data[written:]
        except BlockingIOError:
            pass
        except OSError as e:
            if e.errno not in _GONE:
                raise
            close_fds(fds)
            self._drop(endpoint)
            return data[:0]
        if not endpoint.detached:
            self.mux.consumed(endpoint.channel, total - len(data))
        return data

    def _flush_local(self, endpoint: Endpoint) -> None:
        if endpoint.relay_bytes:
            assert endpoint.relay is not None and endpoint.wfd is not None
            try:
                written = os.splice(endpoint.relay[0], endpoint.wfd, endpoint.relay_bytes,
                                    flags=os.SPLICE_F_NONBLOCK)  # fmt: skip
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno not in _GONE:
                    raise
                self._drop(endpoint)
                return
            endpoint.relay_bytes -= written
            if not endpoint.detached:
                self.mux.consumed(endpoint.channel, written)
            if endpoint.relay_bytes:
                return
        while endpoint.pending:
            data, fds = endpoint.pending[0]
            rest = self._write_some(endpoint, data, fds)
            if endpoint.wfd is None:
                return
            endpoint.pending_bytes -= len(data) - len(rest)
            if rest:
                endpoint.pending[0] = (rest, fds)
                return
            endpoint.pending.popleft()
        self._finish_writing(endpoint)

    def _finish_writing(self, endpoint: Endpoint) -> None:
        """After the peer's end of file, once everything before it is written: pass the
        end of file on (shutdown a socket, close a pipe)."""
        if not endpoint.peer_eof or endpoint.waiting() or endpoint.wfd is None:
            self._close_if_done(endpoint)
            return
        if endpoint.sock is not None:
            with contextlib.suppress(OSError):  # a peer already gone, a terminal
                endpoint.sock.shutdown(socket.SHUT_WR)
        elif endpoint.wfd != endpoint.rfd:
            os.close(endpoint.wfd)
        endpoint.wfd = None
        self._close_if_done(endpoint)

    def _close_if_done(self, endpoint: Endpoint) -> None:
        if endpoint.read_done and endpoint.wfd is None:
            self._drop(endpoint)
        elif (
            endpoint.read_done
            and endpoint.sock is None
            and endpoint.rfd
            not in (
                None,
                endpoint.wfd,
            )
        ):
            assert endpoint.rfd is not None
            os.close(endpoint.rfd)
            endpoint.rfd = None

    def _drop(self, endpoint: Endpoint) -> None:
        """Close the channel's local end and the channel (the peer closes its end)."""
        if endpoint.sending():
            self._materialize(endpoint)
        endpoint.close()
        if endpoint.detached:
            self._draining.discard(endpoint)
        else:
            self.endpoints.pop(endpoint.channel, None)
            self.mux.close(endpoint.channel)

    def _materialize(self, endpoint: Endpoint) -> None:
        """Its relay pipe is about to close: the bytes of its queued frame, announced
        already, are read out of it into the outbox."""
        deferred = endpoint.deferred
        assert deferred is not None and endpoint.relay is not None
        data = b""
        while len(data) < deferred.remaining:
            data += os.read(endpoint.relay[0], deferred.remaining - len(data))
        index = next(i for i, b in enumerate(self.mux.outbox) if b is deferred)
        self.mux.outbox[index] = data
        endpoint.deferred = None

    def _shut_down(self) -> None:
        with self._lock:
            self.finished.set()
            requests, self._requests = list(self._requests), deque()
        for _, sock in requests:
            sock.close()
        for endpoint in [*self.endpoints.values(), *self._draining]:
            self._drop(endpoint)
        close_fds(self._unattached.values())
        self._unattached.clear()
        close_fds((self._wake_r, self._wake_w, self.stream))
        self.connected.set()  # nobody waits for a HELLO that cannot come
