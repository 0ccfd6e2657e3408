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
OPEN_TREE_CLONE: Final = 1
MOUNT_ATTR_IDMAP: Final = 0x00100000
MOUNT_ATTR_RDONLY: Final = 0x1  # <linux/mount.h>
MOUNT_ATTR_NOSUID: Final = 0x2
MOUNT_ATTR_NODEV: Final = 0x4
MOUNT_ATTR_NOEXEC: Final = 0x8
AT_RECURSIVE: Final = 0x8000
MS_MOVE: Final = 0x2000
MOVE_MOUNT_F_EMPTY_PATH: Final = 0x00000004

# <linux/fcntl.h>
AT_FDCWD: Final = -100
AT_EMPTY_PATH: Final = 0x1000

# <linux/prctl.h>
PR_SET_PDEATHSIG: Final = 1
PR_SET_DUMPABLE: Final = 4
PR_SET_NAME: Final = 15
PR_SET_CHILD_SUBREAPER: Final = 36

# <linux/reboot.h>
LINUX_REBOOT_CMD_POWER_OFF: Final = 0x4321FEDC

# <asm/unistd_64.h> (x86_64): calls glibc 2.36 has no wrapper for. (The mount API's
# numbers are the same on every architecture.)
_NR_pivot_root: Final = 155
_NR_open_tree: Final = 428
_NR_move_mount: Final = 429
_NR_mount_setattr: Final = 442
_NR_openat2: Final = 437

# <linux/openat2.h>
RESOLVE_NO_MAGICLINKS: Final = 0x02
RESOLVE_IN_ROOT: Final = 0x10


class _OpenHow(ctypes.Structure):
    _fields_ = (("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64))


class _MountAttr(ctypes.Structure):
    """struct mount_attr (mount_setattr(2))."""

    _fields_ = (
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    )


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


def open_tree(fd: int, flags: int) -> int:
    """open_tree(fd, "", AT_EMPTY_PATH | flags | OPEN_TREE_CLOEXEC): a mount's descriptor."""
    result = _libc.syscall(
        _NR_open_tree, ctypes.c_int(fd), ctypes.c_char_p(b""),
        ctypes.c_uint(AT_EMPTY_PATH | flags | os.O_CLOEXEC),
    )  # fmt: skip
    return _check(result, "open_tree")


def mount_setattr_idmap(tree_fd: int, userns_fd: int) -> None:
    """Id-map the detached mount *tree_fd* by the user namespace *userns_fd*."""
    attr = _MountAttr(MOUNT_ATTR_IDMAP, 0, 0, userns_fd)
    result = _libc.syscall(
        _NR_mount_setattr, ctypes.c_int(tree_fd), ctypes.c_char_p(b""),
        ctypes.c_uint(AT_EMPTY_PATH), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)),
    )  # fmt: skip
    _check(result, "mount_setattr")


def mount_setattr_recursive(path: str, attr_set: int) -> None:
    """Set the MOUNT_ATTR_* flags *attr_set* on the mount at *path* and every mount below."""
    attr = _MountAttr(attr_set, 0, 0, 0)
    result = _libc.syscall(
        _NR_mount_setattr, ctypes.c_int(AT_FDCWD), ctypes.c_char_p(_bytes(path)),
        ctypes.c_uint(AT_RECURSIVE), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)),
    )  # fmt: skip
    _check(result, "mount_setattr", path)


def openat2(dir_fd: int, path: str, flags: int, resolve: int) -> int:
    """openat2(2): *path* below *dir_fd*, resolved as *resolve* says."""
    how = _OpenHow(flags | os.O_CLOEXEC, 0, resolve)
    result = _libc.syscall(
        _NR_openat2, ctypes.c_int(dir_fd), ctypes.c_char_p(_bytes(path)), ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )  # fmt: skip
    return _check(result, "openat2", path)


def setfsuid(uid: int) -> int:
    """setfsuid(2) for the calling thread alone; returns the previous fsuid."""
    return int(_libc.setfsuid(uid))


def setfsgid(gid: int) -> int:
    return int(_libc.setfsgid(gid))


def move_mount(tree_fd: int, target: str) -> None:
    """Attach the detached mount *tree_fd* at *target*."""
    result = _libc.syscall(
        _NR_move_mount, ctypes.c_int(tree_fd), ctypes.c_char_p(b""), ctypes.c_int(AT_FDCWD),
        ctypes.c_char_p(_bytes(target)), ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH),
    )  # fmt: skip
    _check(result, "move_mount", target)


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
