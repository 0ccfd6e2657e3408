"""mini_init's end of a version 2 VM's channel: the stream multiplexer on the port device.

The host's end is lxss.vm.muxlink. Here the multiplexer's loop (lxss.protocol.muxpump)
runs in a child of the VM's pid 1, `lxss-mux`, on the virtio-serial port's device.
Channels the host opens for a service arrive at mini_init as ordinary Unix stream
sockets (`MuxPort.accept`), passed over a socket pair (the *line*) with SCM_RIGHTS;
every descriptor the host attaches to a message on a channel becomes, here, an
ordinary pipe end or socket that mini_init, init, the session leader and the relay
use as they use version 1's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import time
from typing import Final

from lxss import readiness
from lxss.linux import syscalls as sc
from lxss.linux.fdpass import fds_from_ancillary, fds_to_bytes
from lxss.linux.fork import fork_with_socket
from lxss.protocol.framing import close_fds
from lxss.protocol.mux import Role
from lxss.protocol.muxpump import Pump

_SERVICE: Final = struct.Struct("<I")


class MuxPort:
    """The multiplexer's child (pid *pid*) and the line its accepted channels come by."""

    def __init__(self, line: socket.socket, pid: int) -> None:
        self.line = line
        self.pid = pid
        self._arrived: dict[int, list[socket.socket]] = {}

    @classmethod
    def start(cls, device: str | int) -> MuxPort:
        """Fork the multiplexer on the port at *device* (its /dev path, or a descriptor
        of a stream it takes)."""
        if isinstance(device, int):
            stream = device
        else:
            stream = os.open(device, os.O_RDWR | os.O_CLOEXEC | os.O_NOCTTY)
        try:
            pid, ours = fork_with_socket(lambda line: _serve(stream, line))
        finally:
            os.close(stream)  # the child's now
        return cls(ours, pid)

    def accept(self, service: int, timeout: float) -> socket.socket:
        """The next channel the host opens for *service* (the caller owns it); channels
        for other services wait for their own `accept`. TimeoutError after *timeout*
        seconds; ConnectionError if the multiplexer ended."""
        deadline = time.monotonic() + timeout
        while not self._arrived.get(service):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not readiness.readable(self.line.fileno(), remaining):
                raise TimeoutError(f"no channel for service {service} in {timeout:g} s")
            data, ancillary, _, _ = self.line.recvmsg(
                _SERVICE.size, socket.CMSG_SPACE(4), socket.MSG_CMSG_CLOEXEC
            )
            fds = fds_from_ancillary(ancillary, socket.SOL_SOCKET, socket.SCM_RIGHTS)
            if len(data) != _SERVICE.size or len(fds) != 1:
                close_fds(fds)
                raise ConnectionError("the multiplexer ended")
            (number,) = _SERVICE.unpack(data)
            self._arrived.setdefault(number, []).append(socket.socket(fileno=fds[0]))
        return self._arrived[service].pop(0)

    def close(self) -> None:
        """Stop taking channels (the multiplexer serves on); idempotent."""
        for waiting in self._arrived.values():
            for sock in waiting:
                sock.close()
        self._arrived.clear()
        self.line.close()


def _serve(stream: int, line: socket.socket) -> int:
    """In the child: the multiplexer, until the host's end goes."""
    sc.set_pdeathsig(signal.SIGKILL)
    with contextlib.suppress(OSError):
        sc.set_process_name("lxss-mux")

    def forward(service: int, sock: socket.socket) -> bool:
        """Hand an accepted channel to mini_init; refuse it if the line is gone or full."""
        try:
            line.sendmsg(
                [_SERVICE.pack(service)],
                [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds_to_bytes([sock.fileno()]))],
                socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL,
            )
        except OSError:
            return False
        sock.close()
        return True

    Pump(stream, Role.GUEST, "guest mux", forward, wait_for_peer=True).run()
    line.close()
    return 0
