"""A thin ctypes layer over the system calls Python 3.11 does not wrap.

One function per system call, prototypes declared once at import time, and every
failure raised as :class:`SyscallError`, an ``OSError`` that also names the call
(so "Operation not permitted" always says *which* operation).

Constants come from the kernel's uapi headers, named as there.
"""

from __future__ import annotations

import ctypes
import os
from typing import Final

_libc = ctypes.CDLL(None, use_errno=True)

# <linux/sched.h>
CLONE_NEWNS: Final = 0x00020000
CLONE_NEWCGROUP: Final = 0x02000000
CLONE_NEWUTS: Final = 0x04000000
CLONE_NEWIPC: Final = 0x08000000
CLONE_NEWUSER: Final = 0x10000000
CLONE_NEWPID: Final = 0x20000000
CLONE_NEWNET: Final = 0x40000000

# <linux/mount.h>
MS_RDONLY: Final = 0x1
MS_NOSUID: Final = 0x2
MS_NODEV: Final = 0x4
MS_NOEXEC: Final = 0x8
MS_REMOUNT: Final = 0x20
MS_BIND: Final = 0x1000
MS_REC: Final = 0x4000
MS_PRIVATE: Final = 1 << 18
MS_SLAVE: Final = 1 << 19
MS_SHARED: Final = 1 << 20
MNT_DETACH: Final = 0x2

# <linux/prctl.h>
PR_SET_PDEATHSIG: Final = 1
PR_SET_DUMPABLE: Final = 4
PR_SET_NAME: Final = 15
PR_SET_CHILD_SUBREAPER: Final = 36

# <linux/reboot.h>
LINUX_REBOOT_CMD_POWER_OFF: Final = 0x4321FEDC

# <asm/unistd_64.h> (x86_64): calls glibc 2.36 has no wrapper for.
_NR_pivot_root: Final = 155

_libc.unshare.argtypes = (ctypes.c_int,)
_libc.unshare.restype = ctypes.c_int
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
_libc.setns.restype = ctypes.c_int
_libc.mount.argtypes = (
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
)
_libc.mount.restype = ctypes.c_int
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
_libc.umount2.restype = ctypes.c_int
_libc.sethostname.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
_libc.sethostname.restype = ctypes.c_int
_libc.prctl.argtypes = (
    ctypes.c_int,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
)
_libc.prctl.restype = ctypes.c_int
_libc.reboot.argtypes = (ctypes.c_int,)
_libc.reboot.restype = ctypes.c_int
_libc.syscall.restype = ctypes.c_long


class SyscallError(OSError):
    """An OSError that also says which system call failed."""

    def __init__(self, syscall: str, err: int, path: str | None = None) -> None:
        super().__init__(err, f"{syscall}: {os.strerror(err)}", path)
        self.syscall = syscall


def _check(result: int, syscall: str, path: str | None = None) -> int:
    if result < 0:
        raise SyscallError(syscall, ctypes.get_errno(), path)
    return result


def _bytes(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def unshare(flags: int) -> None:
    """Move the caller into new namespaces (see unshare(2)).

    CLONE_NEWUSER and CLONE_NEWNS need a single-threaded caller.
    """
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def mount(
    source: str | None,
    target: str,
    fstype: str | None = None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    result = _libc.mount(_bytes(source), _bytes(target), _bytes(fstype), flags, _bytes(data))
    _check(result, "mount", target)


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_bytes(target), flags), "umount2", target)


def pivot_root(new_root: str, put_old: str) -> None:
    result = _libc.syscall(
        _NR_pivot_root, ctypes.c_char_p(_bytes(new_root)), ctypes.c_char_p(_bytes(put_old))
    )
    _check(result, "pivot_root", new_root)


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(option, arg2, arg3, arg4, arg5), "prctl")


def set_pdeathsig(signum: int) -> None:
    """Ask the kernel to send *signum* when the thread that forked us exits."""
    prctl(PR_SET_PDEATHSIG, signum)


def set_process_name(name: str) -> None:
    """Set the name `ps -o comm` shows (at most 15 bytes are kept)."""
    buffer = ctypes.create_string_buffer(name.encode()[:15])
    prctl(PR_SET_NAME, ctypes.addressof(buffer))


def set_child_subreaper() -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_dumpable(dumpable: bool) -> None:
    prctl(PR_SET_DUMPABLE, int(dumpable))


def power_off() -> None:
    """reboot(RB_POWER_OFF): in a pid namespace other than the first, kills every
    process of the namespace (see pid_namespaces(7))."""
    _check(_libc.reboot(LINUX_REBOOT_CMD_POWER_OFF), "reboot")
