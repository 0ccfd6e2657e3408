"""Renaming a process for `ps`: its name (comm) and its command line.

The guest roles are forks of one interpreter whose command line is a long
bootstrap; inside a distribution, `ps` should show `lxss-init`, not that. The
command line is the memory the kernel reports between the process's
arg_start and arg_end: the strings argv points to, laid out one after the
other. Overwriting them in place (NUL-padded) is what setproctitle does; it
needs no privilege (prctl(PR_SET_MM) would need CAP_SYS_RESOURCE).
"""

from __future__ import annotations

import ctypes

from lxss.linux import syscalls


def _argv_area() -> tuple[int, int] | None:
    """(address, length) of this process's command line, from /proc/self/stat."""
    with open("/proc/self/stat", "rb") as f:
        # Fields after the ")" that ends the name start at field 3 (proc(5)).
        fields = f.read().rsplit(b")", 1)[1].split()
    start, end = int(fields[48 - 3]), int(fields[49 - 3])  # arg_start, arg_end
    if not 0 < start < end:
        return None
    return start, end - start


def set_title(title: str) -> None:
    """Show *title* as this process's name and command line."""
    syscalls.set_process_name(title)
    area = _argv_area()
    if area is None:
        return
    address, length = area
    data = title.encode()[: length - 1]
    ctypes.memmove(address, data + b"\0" * (length - len(data)), length)
