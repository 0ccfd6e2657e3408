"""Version 2's channel without a VM: the multiplexer's host end (lxss.vm.muxlink) joined to
its guest end (lxss.guest.muxport) by a socket pair or a raw pty pair, as QEMU's port
would join them.

On the guest end runs a real session leader (tests/integration/mux_guest.py) with real
relays and programs; the host end speaks to it as the service does, handing it ordinary
pipes and sockets. Binary data, end of file and exit status must come through exactly,
a stalled reader must stall nobody else, and a guest that dies or breaks the protocol
must end every channel and leave nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lxss.protocol import messages as m
from lxss.protocol import mux
from lxss.protocol.channel import Channel, ChannelClosed
from lxss.protocol.mux import SERVICE_MINI_INIT
from lxss.vm.muxlink import MuxLink

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parents[1] / "src"
TIMEOUT = 60.0


@dataclass
class Guest:
    link: MuxLink
    session: Channel
    process: subprocess.Popen[bytes]
    mux_pid: int


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@contextlib.contextmanager
def joined(transport: str) -> Iterator[Guest]:
    """A guest end in a process of its own, joined to a host end here by *transport*."""
    before = _open_fds()
    argv = [sys.executable, str(HERE / "mux_guest.py")]
    environment = {**os.environ, "PYTHONPATH": str(SOURCE)}
    if transport == "socketpair":
        host_end, guest_end = socket.socketpair()
        process = subprocess.Popen([*argv, f"fd:{guest_end.fileno()}"], stdout=subprocess.PIPE,
                                   pass_fds=[guest_end.fileno()], env=environment,
                                   start_new_session=True)  # fmt: skip
        guest_end.close()
        stream = host_end.detach()
        slave = None
    else:
        stream, slave = os.openpty()
        tty.setraw(slave)
        process = subprocess.Popen([*argv, os.ttyname(slave)], stdout=subprocess.PIPE,
                                   env=environment, start_new_session=True)  # fmt: skip
    assert process.stdout is not None
    mux_pid = int(process.stdout.readline())
    if slave is not None:
        os.close(slave)  # the guest has opened its own
    link = MuxLink(stream, f"test {transport}")
    session = Channel(link.open(SERVICE_MINI_INIT), "session")
    try:
        yield Guest(link, session, process, mux_pid)
    finally:
        session.close()
        asyncio.run(link.close())
        try:
            process.wait(TIMEOUT)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # relays and programs of a failed test
            process.wait()
            process.stdout.close()
    assert _open_fds() == before, "the host end left descriptors open"


@dataclass
class Launched:
    stdin: int
    stdout: int
    stderr: int
    control: Channel
    lifetime: socket.socket

    def close(self) -> None:
        for fd in (self.stdin, self.stdout, self.stderr):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.control.close()
        self.lifetime.close()


@contextlib.contextmanager
def launch(guest: Guest, script: str) -> Iterator[Launched]:
    """`sh -c SCRIPT` in the guest, on pipes of ours, as the service launches a program."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    control, control_remote = socket.socketpair()
    lifetime, lifetime_remote = socket.socketpair()
    message = m.InitCreateProcess(
        rows=24, columns=80, flags=0, shell_options=0, default_uid=0, filename="/bin/sh",
        cwd="/", username=None, command_line=("sh", "-c", script), environment=(),
        distribution_name="mux", host_cwd=None,
    )  # fmt: skip
    remote = m.CreateProcessFds(control=control_remote.fileno(), lifetime=lifetime_remote.fileno(),
                                console=None, stdin=in_r, stdout=out_w, stderr=err_w)  # fmt: skip
    launched = Launched(in_w, out_r, err_r, Channel(control, "control"), lifetime)
    try:
        try:
            reply, _ = guest.session.transaction(
                message, m.InitCreateProcessResponse, message.order_fds(remote), timeout=TIMEOUT
            )
        finally:
            for fd in (in_r, out_w, err_w):
                os.close(fd)
            control_remote.close()
            lifetime_remote.close()
        assert reply.result == 0, reply.message
        yield launched
    finally:
        launched.close()


def exit_status(launched: Launched) -> int:
    """The program's exit status from its relay, echoed back as the client does."""
    status, _ = launched.control.receive(m.InitExitStatus, timeout=TIMEOUT)
    launched.control.send(status)
    return status.exit_code


class Collector(threading.Thread):
    """Reads a descriptor to its end in the background (closing it), hashing what came."""

    def __init__(self, fd: int, keep: bool = False) -> None:
        super().__init__(daemon=True)
        self.fd = fd
        self.keep = keep
        self.data = bytearray()
        self.digest = hashlib.sha256()
        self.count = 0
        self.start()

    def run(self) -> None:
        while chunk := os.read(self.fd, 1 << 20):
            self.digest.update(chunk)
            self.count += len(chunk)
            if self.keep:
                self.data += chunk

    def result(self) -> Collector:
        self.join(TIMEOUT)
        assert not self.is_alive(), f"descriptor {self.fd} did not reach its end"
        return self


def feed(fd: int, data: bytes) -> threading.Thread:
    """Write *data* to *fd* in the background, then close it (end of file)."""

    def run() -> None:
        with contextlib.suppress(BrokenPipeError):
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view[: 1 << 20]) :]
        with contextlib.suppress(OSError):
            os.close(fd)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(("transport", "size"), [("socketpair", 32 << 20), ("pty", 1 << 20)])
def test_binary_data_end_of_file_and_exit_status_come_through_exactly(
    transport: str, size: int
) -> None:
    data = os.urandom(size)
    with joined(transport) as guest, launch(
        guest, r"cat; printf 'to stderr\000\377' >&2; exit 7"
    ) as program:  # fmt: skip
        out, err = Collector(program.stdout), Collector(program.stderr, keep=True)
        feeder = feed(program.stdin, data)
        program.stdin = -1  # the feeder closes it
        assert exit_status(program) == 7
        assert out.result().count == size
        assert out.digest.digest() == hashlib.sha256(data).digest()
        assert bytes(err.result().data) == b"to stderr\x00\xff"
        feeder.join(TIMEOUT)
        program.lifetime.settimeout(TIMEOUT)
        assert program.lifetime.recv(1) == b""  # the relay ended: its lifetime socket says so


def test_end_of_file_reaches_the_program_where_it_was_sent() -> None:
    with joined("socketpair") as guest, launch(guest, "cat; echo after-eof") as program:
        out = Collector(program.stdout, keep=True)
        os.write(program.stdin, b"\x00abc")
        os.close(program.stdin)
        program.stdin = -1
        assert exit_status(program) == 0
        assert bytes(out.result().data) == b"\x00abcafter-eof\n"


def test_a_stalled_reader_stalls_no_other_process() -> None:
    stalled_size = 8 << 20
    with joined("socketpair") as guest, launch(
        guest, f"head -c {stalled_size} /dev/zero; echo done >&2"
    ) as stalled:  # fmt: skip
        time.sleep(0.5)  # nobody reads its stdout: it fills its pipe, the channel's window
        data = os.urandom(16 << 20)
        with launch(guest, "cat") as flowing:
            out = Collector(flowing.stdout)
            feed(flowing.stdin, data)
            flowing.stdin = -1
            assert exit_status(flowing) == 0
            assert out.result().digest.digest() == hashlib.sha256(data).digest()
        waiting = [e.waiting() for e in guest.link.pump.endpoints.values()]
        assert max(waiting) <= mux.WINDOW  # at most a window of it waits on the host
        late = Collector(stalled.stdout)
        assert exit_status(stalled) == 0
        assert late.result().count == stalled_size


def test_a_reader_that_leaves_ends_the_writer_as_a_pipe_does() -> None:
    with joined("socketpair") as guest, launch(guest, "yes") as program:
        assert os.read(program.stdout, 100).startswith(b"y\n")
        os.close(program.stdout)
        program.stdout = -1
        assert exit_status(program) == 128 + signal.SIGPIPE


def test_a_guest_dying_mid_stream_ends_every_channel() -> None:
    with joined("socketpair") as guest, launch(guest, "cat") as program:
        out = Collector(program.stdout)
        feeder = feed(program.stdin, os.urandom(1 << 30))  # more than flows before the kill
        program.stdin = -1
        while out.count < (4 << 20):
            time.sleep(0.05)
        os.kill(guest.mux_pid, signal.SIGKILL)
        out.result()  # end of file, not a hang
        with pytest.raises(ChannelClosed):
            program.control.receive(m.InitExitStatus, timeout=TIMEOUT)
        feeder.join(TIMEOUT)
        assert not feeder.is_alive(), "the writer was not told the channel ended"
        deadline = time.monotonic() + TIMEOUT
        while guest.link.failure is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert guest.link.failure == "the peer closed the stream"
        with pytest.raises(ConnectionError):
            guest.link.open(SERVICE_MINI_INIT)


def test_a_guest_breaking_the_protocol_is_cut_off() -> None:
    before = _open_fds()
    host_end, hostile = socket.socketpair()
    link = MuxLink(host_end.detach(), "test hostile")
    try:
        channel = link.open(SERVICE_MINI_INIT)
        hostile.sendall(mux.frame(mux.FrameType.HELLO, 0, mux.MAGIC + bytes([1, 0, 0, 0])))
        hostile.settimeout(TIMEOUT)
        opening = mux.frame(mux.FrameType.OPEN, 1, bytes([mux.Kind.SOCKET, 1, 0, 0, 0]))
        expected = len(mux.Mux(mux.Role.HOST).take_output()) + len(opening)
        seen = b""
        while len(seen) < expected:  # the host's HELLO and its OPEN of channel 1
            seen += hostile.recv(expected - len(seen))
        assert seen.endswith(opening)
        hostile.sendall(mux.frame(mux.FrameType.DATA, 1, b"fine"))
        channel.settimeout(TIMEOUT)
        assert channel.recv(4) == b"fine"
        hostile.sendall(mux.frame(mux.FrameType.DATA, 2, b"x"))  # a channel nobody opened
        assert channel.recv(1) == b""
        channel.close()
        assert link.failure is not None and "broke the protocol" in link.failure
        assert "channel 2, which is not open" in link.failure
    finally:
        asyncio.run(link.close())
        hostile.close()
    assert _open_fds() == before
