"""`cat` through version 2's multiplexer, with no VM: `python -m lxssbench.muxcat`.

The multiplexer's host end (lxss.vm.muxlink, a thread here) and guest end
(lxss.guest.muxport, a child process) are joined by a socket pair where QEMU's port
would be. This process's stdin and stdout are handed to the host end as the service
hands a client's; at the guest end `cat` runs on the pipes the multiplexer makes of
them, as a relay's program would. So every byte takes the path a version 2 program's
stdio takes, both ways, minus QEMU: client pipe, host loop, stream, guest loop, pipe,
cat, pipe, guest loop, stream, host loop, client pipe. Exits with cat's status.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

from lxss.guest.muxport import MuxPort
from lxss.protocol import messages as m
from lxss.protocol.channel import Channel
from lxss.protocol.mux import SERVICE_MINI_INIT
from lxss.vm.muxlink import MuxLink

TIMEOUT = 30.0
CAT = m.InitCreateProcess(
    rows=24, columns=80, flags=m.InitCreateProcess.STDERR_CLOSED, shell_options=0,
    default_uid=0, filename="cat", cwd="/", username=None, command_line=("cat",),
    environment=(), distribution_name="muxcat", host_cwd=None,
)  # fmt: skip


def guest(stream: socket.socket) -> int:
    """The guest's side: the multiplexer, and cat on what arrives."""
    port = MuxPort.start(stream.detach())
    channel = Channel(port.accept(SERVICE_MINI_INIT, TIMEOUT), "muxcat guest")
    port.close()
    message, fds = channel.receive(m.InitCreateProcess, timeout=TIMEOUT)
    channel.close()
    named = message.name_fds(fds)
    assert named.stdin is not None and named.stdout is not None
    cat = subprocess.Popen(["cat"], stdin=named.stdin, stdout=named.stdout)
    os.close(named.stdin)
    os.close(named.stdout)
    os.close(named.lifetime)
    code = cat.wait()
    with Channel(socket.socket(fileno=named.control), "control") as control:
        control.send(m.InitExitStatus(exit_code=code))
    # The multiplexer dies with us (as with the VM's pid 1): it ends when the host does.
    os.waitpid(port.pid, 0)
    return 0


def main() -> int:
    host_end, guest_end = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        host_end.close()
        os._exit(guest(guest_end))
    guest_end.close()
    link = MuxLink(host_end.detach(), "muxcat")
    control, control_remote = socket.socketpair()
    lifetime, lifetime_remote = socket.socketpair()
    try:
        with Channel(link.open(SERVICE_MINI_INIT), "muxcat") as channel:
            channel.send(CAT, [control_remote.fileno(), lifetime_remote.fileno(), 0, 1])
        for closable in (control_remote, lifetime_remote):
            closable.close()
        os.close(0)
        os.close(1)  # the host end holds them now: our reader sees EOF once it is done
        with Channel(control, "control") as status_channel:
            status, _ = status_channel.receive(m.InitExitStatus, timeout=float("inf"))
        deadline = time.monotonic() + TIMEOUT
        while link.pump.endpoints and time.monotonic() < deadline:
            time.sleep(0.01)  # the last of stdout still on its way
    finally:
        lifetime.close()
        asyncio.run(link.close())
        os.waitpid(pid, 0)
    return status.exit_code


if __name__ == "__main__":
    sys.exit(main())
