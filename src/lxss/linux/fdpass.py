"""Descriptors passed over Unix sockets (SCM_RIGHTS, unix(7)): the ancillary data's layout.

One decoder for every receiver: the guest channels (lxss.protocol.framing) and Varlink
(lxss.api.wire). The `lxss` client imports it on its start-up path, so it imports only
sys (already loaded) and takes the socket constants from its caller.
"""

from __future__ import annotations

import sys

FD_SIZE = 4  # a descriptor in SCM_RIGHTS data is a C int


def fds_to_bytes(fds: list[int] | tuple[int, ...]) -> bytes:
    """SCM_RIGHTS data carrying *fds* (for sendmsg)."""
    return b"".join(fd.to_bytes(FD_SIZE, sys.byteorder) for fd in fds)


def fds_from_ancillary(ancdata: list[tuple[int, int, bytes]], level: int, kind: int) -> list[int]:
    """Every descriptor in recvmsg's *ancdata* messages of *level* and *kind* (SOL_SOCKET,
    SCM_RIGHTS); a trailing partial int (a truncated message) is ignored.

    The caller owns, and must close, every descriptor returned: the kernel has installed
    them in this process already.
    """
    fds: list[int] = []
    for cmsg_level, cmsg_type, data in ancdata:
        if cmsg_level == level and cmsg_type == kind:
            usable = len(data) - len(data) % FD_SIZE
            fds.extend(
                int.from_bytes(data[i : i + FD_SIZE], sys.byteorder)
                for i in range(0, usable, FD_SIZE)
            )
    return fds
