"""sd_notify(3), both ends: lxssd says READY=1, and whoever started it waits for that.

The starter is systemd (Type=notify), the `lxss` command that starts the service on demand,
or lxssd itself when it detaches from the terminal it was started from (its foreground
parent waits for the background service). Imported by the lean `lxss` client: the C
`_socket` module, not `socket`, and nothing else beyond os, time and lxss.readiness.
"""

from __future__ import annotations

import _socket
import os
import time

from lxss import readiness


def listener() -> tuple[_socket.socket, str]:
    """A datagram socket to receive notifications on, and its address for NOTIFY_SOCKET
    (abstract, so it leaves nothing in the file system)."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
    try:
        sock.bind(f"\0lxss-start-{os.getpid()}-{os.urandom(8).hex()}")
    except BaseException:
        sock.close()
        raise
    return sock, "@" + sock.getsockname()[1:].decode()


def send(address: str | None, state: str) -> None:
    """Tell *address* (a NOTIFY_SOCKET value; nothing when None) *state*. Best effort, as
    sd_notify is: whoever started us may be gone by the time we stop."""
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
    try:
        s.sendto(state.encode(), address)
    except OSError:
        pass
    finally:
        s.close()


def wait_ready(notify: _socket.socket, pid: int, timeout: float) -> int | None:
    """None once child *pid* sends READY=1 on *notify*; its exit code if it exits first
    (it is reaped). TimeoutError after *timeout* seconds."""
    exited = os.pidfd_open(pid)
    try:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _ = readiness.ready((notify.fileno(), exited), (), left)
            if exited in ready:
                return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            if notify.fileno() in ready and b"READY=1" in notify.recv(4096).split(b"\n"):
                return None
        raise TimeoutError(f"no READY=1 from pid {pid} within {timeout:.0f} s")
    finally:
        os.close(exited)
