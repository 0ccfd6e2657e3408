"""The guest's side of the mux tests, as a process of its own (tests/integration/test_vm2_mux.py).

    python mux_guest.py DEVICE|fd:N

The multiplexer's guest end (lxss.guest.muxport) on DEVICE (a pty's slave) or descriptor
N, and on the channel the host opens for mini_init's service a real session leader
(lxss.guest.session_leader) serving InitCreateProcess with real relays, as in a distribution.
Prints the multiplexer's pid, then serves until the host closes the channel.
Runs in a session of its own (the test kills its relays and programs by that group).
"""

from __future__ import annotations

import os
import sys
import tty

from lxss.guest import session_leader
from lxss.guest.muxport import MuxPort
from lxss.guest.process import Context
from lxss.guest.users import UserDatabase
from lxss.protocol.mux import SERVICE_MINI_INIT


def main(argv: list[str]) -> int:
    where = argv[1]
    if where.startswith("fd:"):
        device: str | int = int(where[3:])
    else:
        device = where
        descriptor = os.open(where, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(descriptor)  # bytes as they are: no echo, no line discipline
        os.close(descriptor)
    port = MuxPort.start(device)
    print(port.pid, flush=True)
    channel = port.accept(SERVICE_MINI_INIT, 30.0)
    port.close()
    context = Context(users=UserDatabase(), conf_default_user=None, hostname="mux-test",
                      host_mount=None)  # fmt: skip
    # As init does: the session leader is a child, leading a session of its own.
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = session_leader.main(channel, context)
        finally:
            os._exit(code)
    channel.close()
    _, status = os.waitpid(pid, 0)
    # The multiplexer dies with us (as with the VM's pid 1): it ends when the host does.
    os.waitpid(port.pid, 0)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
