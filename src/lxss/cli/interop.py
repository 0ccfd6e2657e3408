"""The client's side of interop: the `lxss` client is the interop server of the session it
started (WSL: wsl.exe serving CreateNtProcess on its control channel).

The relay hands over each connection a program made to its interop socket on the control
channel (InitInteropConnection, the connection attached). The client forks a process that
serves it (lxss.host.interop) and goes back to its own loop at once, so a host program that
runs long holds nothing up. It also forks lxss-host (lxss.host.guardian) when the program
starts: it takes the channel over if the client goes first.

Lean on purpose: the client imports this at start, and everything heavy (the guest
framing, the codec) is imported by the forked processes only.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal would import enum
import _socket
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

FD_SIZE = 4
ANCILLARY_SPACE = _socket.CMSG_SPACE(8 * FD_SIZE)


def receive(sock: Any) -> tuple[bytes, list[int]]:
    """Read what the control channel has, and the descriptors that came with it."""
    data, ancillary, _, _ = sock.recvmsg(4096, ANCILLARY_SPACE, _socket.MSG_CMSG_CLOEXEC)
    fds = []
    for level, kind, payload in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % FD_SIZE
            fds += [int.from_bytes(payload[i : i + FD_SIZE], sys.byteorder)
                    for i in range(0, usable, FD_SIZE)]  # fmt: skip
    return data, fds


def _detach(keep: tuple[int, ...]) -> None:
    """In a forked child of the client: no terminal, no signal plumbing of the client's,
    no descriptor but *keep* (and /dev/null for 0-2)."""
    _signal.set_wakeup_fd(-1)
    for signum in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT,
                   _signal.SIGWINCH, _signal.SIGPIPE):  # fmt: skip
        _signal.signal(signum, _signal.SIG_DFL)
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        if fd not in keep:
            os.dup2(null, fd)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the listing's own descriptor, closed already


def serve_connection(connection: int, host_mount: str | None) -> None:
    """Serve one interop connection in a forked process; *connection* is closed here.
    *host_mount* is where its distribution shows the host's root."""
    try:
        pid = os.fork()
    except OSError:
        os.close(connection)  # the caller sees its connection end
        return
    if pid == 0:
        code = 1
        try:
            _detach((connection,))
            from lxss.host import interop

            code = interop.serve(connection, host_mount)
        finally:
            os._exit(code)
    os.close(connection)


def start_guardian(control: int) -> int | None:
    """Fork lxss-host for the session on *control*; the write end of the pipe whose end
    tells it the client is gone (the client keeps it open until it exits), or None if it
    could not be forked (interop then ends with the client)."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        return None
    if pid == 0:
        code = 1
        try:
            _detach((control, read_end))
            from lxss.host import guardian

            code = guardian.main(control, read_end, serve_connection, reap)
        finally:
            os._exit(code)
    os.close(read_end)
    return write_end


def reap() -> None:
    """The client's forked helpers that have ended (zombies otherwise, while it runs)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
