"""gns: the utility VM's network agent (WSL's gns, doc gns.md).

For now it brings up loopback when the VM has a network namespace of its own
(networking mode None) and reports how that went; with the host's network
(Mirrored, lxss's default for the namespace VM) there is nothing to set up.
Interfaces, routes and DNS come with the networking work.
"""

from __future__ import annotations

import fcntl
import socket
import struct
from typing import Final

from lxss.linux.proctitle import set_title

SIOCGIFFLAGS: Final = 0x8913  # <linux/sockios.h>
SIOCSIFFLAGS: Final = 0x8914
IFF_UP: Final = 0x1


def bring_up(interface: str) -> None:
    """Set IFF_UP on *interface* (what `ip link set dev lo up` does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH14x", interface.encode(), 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, SIOCGIFFLAGS, request))[1]
        if not flags & IFF_UP:
            fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", interface.encode(), flags | IFF_UP))


def main(networking_mode: str) -> int:
    """Run in a child of mini_init; the exit status is the result (0, or an errno)."""
    set_title("lxss-gns")
    if networking_mode != "None":
        return 0
    try:
        bring_up("lo")
    except OSError as e:
        return e.errno or 1
    return 0
