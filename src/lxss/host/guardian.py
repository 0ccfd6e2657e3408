"""lxss-host: wslhost's role. It keeps a session's interop alive once its `lxss` client is
gone (WSL: wslhost.exe, which wsl.exe starts with a duplicate of its control channel).

The client forks it before it asks for the program (which may start, and the client be
killed, before the answer comes back), handing it the control channel and
the read end of a pipe only the client writes to. While the client lives, lxss-host only
waits: the client reads the channel. When the pipe ends (the client exited, or was killed),
lxss-host tells the relay (InitClientGone: the terminal hangs up, as it would have) and
serves the channel from then on: each interop connection in a process of its own, as the
client would (lxss.host.interop), and the exit status echoed for a relay that waits for it.
It exits when the relay closes the channel, which the relay does when the last process of
the session is gone. When the relay is done first, lxss-host exits at once.
"""

from __future__ import annotations

import os
import select
import socket

from lxss.linux.proctitle import set_title
from lxss.protocol import messages as m
from lxss.protocol.channel import Channel, ChannelClosed
from lxss.protocol.framing import ProtocolError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def main(control_fd: int, client_fd: int, serve: Callable[[int, str | None], None],
         reap: Callable[[], None]) -> int:  # fmt: skip
    """*serve(fd, host_mount)* takes an interop connection (ours to hand over) to a process
    of its own; *reap()* collects those that have ended."""
    set_title("lxss-host")
    control = socket.socket(fileno=control_fd)
    if not _wait_for_client(control.fileno(), client_fd):
        control.close()
        return 0
    channel = Channel(control, "control")
    channel.state.ignore_sequence_numbers()
    try:
        channel.send(m.InitClientGone(), timeout=5.0)
        while True:
            reap()
            message, fds = channel.receive(
                (m.InitInteropConnection, m.InitExitStatus), timeout=float("inf")
            )
            if isinstance(message, m.InitInteropConnection) and len(fds) == 1:
                serve(fds[0], message.host_mount)
            elif isinstance(message, m.InitExitStatus):
                channel.send(m.InitExitStatus(exit_code=message.exit_code), timeout=5.0)
            for fd in fds[1:] if isinstance(message, m.InitInteropConnection) else fds:
                os.close(fd)
    except (ChannelClosed, ProtocolError, TimeoutError, OSError):
        pass  # the relay is done: so are we
    finally:
        channel.close()
    return 0


def _wait_for_client(control_fd: int, client_fd: int) -> bool:
    """True once the client is gone while the relay still holds the channel; False when
    the relay closed it first (nothing left to serve)."""
    poller = select.poll()
    poller.register(client_fd, select.POLLIN)
    # POLLRDHUP without reading: the client reads the channel meanwhile.
    poller.register(control_fd, select.POLLRDHUP)
    while True:
        events = dict(poller.poll())
        if events.get(control_fd, 0) & (select.POLLRDHUP | select.POLLHUP | select.POLLERR):
            return False
        if client_fd in events:
            os.close(client_fd)
            return True
