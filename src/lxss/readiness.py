"""Waiting for descriptors to be ready, whatever their numbers.

select(2) takes only descriptors below FD_SETSIZE (1024): a process holding more (lxssd
with many clients, a client started with many descriptors open) gets "filedescriptor out
of range in select()". poll(2) has no such limit, so every blocking wait of lxss's goes
through here (the service's event loop is asyncio's, on epoll). Imported by the lean
`lxss` client: nothing beyond errno, math and select.
"""

from __future__ import annotations

import errno
import math
import select
from collections.abc import Collection

# What select() would call readable or writable: a hang-up or an error is, so that the
# next read or write says what happened.
_READABLE = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR
_WRITABLE = select.POLLOUT | select.POLLHUP | select.POLLERR


def ready(
    read: Collection[int] = (), write: Collection[int] = (), timeout: float | None = None
) -> tuple[list[int], list[int]]:
    """(readable, writable) among *read* and *write*, once any is, or both empty after
    *timeout* seconds (None: no limit). As select.select, for any descriptor number; a
    closed descriptor raises EBADF as select does."""
    poller = select.poll()
    masks: dict[int, int] = {}
    for fd in read:
        masks[fd] = masks.get(fd, 0) | select.POLLIN | select.POLLPRI
    for fd in write:
        masks[fd] = masks.get(fd, 0) | select.POLLOUT
    for fd, mask in masks.items():
        poller.register(fd, mask)
    events = poller.poll(None if timeout is None else math.ceil(max(0.0, timeout) * 1000))
    readable, writable = [], []
    for fd, event in events:
        if event & select.POLLNVAL:
            raise OSError(errno.EBADF, f"descriptor {fd} is not open")
        if fd in read and event & _READABLE:
            readable.append(fd)
        if fd in write and event & _WRITABLE:
            writable.append(fd)
    return readable, writable


def readable(fd: int, timeout: float | None = None) -> bool:
    """Whether *fd* became readable (or hung up) within *timeout* seconds."""
    return bool(ready((fd,), (), timeout)[0])
