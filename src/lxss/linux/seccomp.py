"""The seccomp filter a distribution runs under by default, as a container's does.

A distribution is no more powerful than its owner, whatever it calls; the filter narrows
the kernel code it can reach at all, as podman's and docker's default profiles do, for
the interfaces with the longest record of kernel bugs reachable without privilege:

- io_uring (io_uring_setup, io_uring_enter, io_uring_register): EPERM;
- perf_event_open, bpf: EPERM;
- the key management calls (add_key, request_key, keyctl): EPERM;
- userfaultfd: EPERM;
- a nested user namespace (unshare or clone with CLONE_NEWUSER): EPERM; clone3, whose
  flags the filter cannot read, is ENOSYS so that the C library falls back to clone;
- on x86_64, the x32 ABI: ENOSYS.

Everything else is allowed. 32-bit x86 programs (i386 on x86_64) meet the same filter
with their own numbers; other architectures' numbers are written below for aarch64.
Installed by the distribution's init (lxss.guest.init) before it starts anything, so
every process of the distribution inherits it; init holds CAP_SYS_ADMIN in its user
namespace, which is what seccomp(2) asks in place of no_new_privs, so set-user-ID
programs keep working. `[lxss] seccomp = false` in /etc/wsl.conf leaves it out.
"""

from __future__ import annotations

import ctypes
import errno
import platform
from typing import Final

from lxss.linux import syscalls

# <linux/filter.h>, <linux/bpf_common.h>
_LD_W_ABS: Final = 0x00 | 0x00 | 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K: Final = 0x05 | 0x10 | 0x00  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K: Final = 0x05 | 0x30 | 0x00  # BPF_JMP | BPF_JGE | BPF_K
_JSET_K: Final = 0x05 | 0x40 | 0x00  # BPF_JMP | BPF_JSET | BPF_K
_RET_K: Final = 0x06 | 0x00  # BPF_RET | BPF_K

# <linux/seccomp.h>
SECCOMP_MODE_FILTER: Final = 2
PR_SET_SECCOMP: Final = 22
_RET_ALLOW: Final = 0x7FFF0000
_RET_ERRNO: Final = 0x00050000
# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]
_NR, _ARCH, _ARG0_LOW = 0, 4, 16  # args[0]'s low 32 bits (little-endian hosts)

CLONE_NEWUSER: Final = 0x10000000
_X32_SYSCALL_BIT: Final = 0x40000000

# (AUDIT_ARCH_*, {name: number}) from each architecture's unistd headers.
_TABLES: Final[dict[str, tuple[tuple[int, dict[str, int]], ...]]] = {
    "x86_64": (
        (0xC000003E, {"io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
                      "perf_event_open": 298, "bpf": 321, "add_key": 248, "request_key": 249,
                      "keyctl": 250, "userfaultfd": 323, "unshare": 272, "clone": 56,
                      "clone3": 435}),
        (0x40000003, {"io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
                      "perf_event_open": 336, "bpf": 357, "add_key": 286, "request_key": 287,
                      "keyctl": 288, "userfaultfd": 374, "unshare": 310, "clone": 120,
                      "clone3": 435}),
    ),
    "aarch64": (
        (0xC00000B7, {"io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
                      "perf_event_open": 241, "bpf": 280, "add_key": 217, "request_key": 218,
                      "keyctl": 219, "userfaultfd": 282, "unshare": 97, "clone": 220,
                      "clone3": 435}),
    ),
}  # fmt: skip
REFUSED: Final = (
    "io_uring_setup", "io_uring_enter", "io_uring_register", "perf_event_open", "bpf",
    "add_key", "request_key", "keyctl", "userfaultfd",
)  # fmt: skip


class _SockFilter(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint),
    )


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter)))


Instruction = tuple[int, int, int, int]


def _arch_block(numbers: dict[str, int], x86_64: bool) -> list[Instruction]:
    """The checks for one architecture, from loading the call's number to its verdict."""
    eperm, enosys = _RET_ERRNO | errno.EPERM, _RET_ERRNO | errno.ENOSYS
    block: list[Instruction] = [(_LD_W_ABS, 0, 0, _NR)]
    if x86_64:
        block += [(_JGE_K, 0, 1, _X32_SYSCALL_BIT), (_RET_K, 0, 0, enosys)]
    for name in REFUSED:
        block += [(_JEQ_K, 0, 1, numbers[name]), (_RET_K, 0, 0, eperm)]
    block += [(_JEQ_K, 0, 1, numbers["clone3"]), (_RET_K, 0, 0, enosys)]
    block += [
        (_JEQ_K, 1, 0, numbers["unshare"]),
        (_JEQ_K, 0, 3, numbers["clone"]),
        (_LD_W_ABS, 0, 0, _ARG0_LOW),
        (_JSET_K, 0, 1, CLONE_NEWUSER),
        (_RET_K, 0, 0, eperm),
        (_RET_K, 0, 0, _RET_ALLOW),
    ]
    return block


def program(machine: str | None = None) -> list[Instruction]:
    """The filter for *machine* (platform.machine()); empty where lxss has no table."""
    machine = machine or platform.machine()
    instructions: list[Instruction] = []
    for index, (arch, numbers) in enumerate(_TABLES.get(machine, ())):
        block = _arch_block(numbers, x86_64=machine == "x86_64" and index == 0)
        instructions += [(_LD_W_ABS, 0, 0, _ARCH), (_JEQ_K, 0, len(block), arch), *block]
    if instructions:
        instructions.append((_RET_K, 0, 0, _RET_ALLOW))  # an ABI without a table of ours
    return instructions


def install_default_filter() -> bool:
    """Install the filter on this process (and so on all it starts); False where this
    architecture has no table. Raises SyscallError when the kernel refuses it."""
    instructions = program()
    if not instructions:
        return False
    filters = (_SockFilter * len(instructions))(*(_SockFilter(*i) for i in instructions))
    fprog = _SockFprog(len(instructions), filters)
    syscalls.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog))
    return True
