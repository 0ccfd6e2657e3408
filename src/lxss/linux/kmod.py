"""Kernel modules: their load order from modules.dep, and loading one (finit_module).

Used on the host, to pick the few modules the initramfs carries, and in version 2's
guest, to load the others from the modules disk. modules.dep (depmod(8)) lists, per
module, every module it needs, deepest last; loading them in reverse, each once, then
the module itself, is modprobe's order.
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import Final

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_NR_finit_module: Final = 313  # <asm/unistd_64.h>

# Softdeps modprobe would honour (modules.softdep): ext4 and jbd2 checksum their metadata
# with crc32c, which the crypto API finds only once a crc32c module is loaded.
SOFT_DEPENDENCIES: Final = {"ext4": ("crc32c_generic",), "jbd2": ("crc32c_generic",)}


def module_name(path: str) -> str:
    """kernel/fs/ext4/ext4.ko -> ext4 (dashes and underscores are one to the kernel)."""
    base = os.path.basename(path)
    for suffix in (".ko", ".ko.xz", ".ko.zst", ".ko.gz"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def parse_dependencies(text: str) -> dict[str, tuple[str, list[str]]]:
    """modules.dep as {name: (path, [paths of its dependencies])}."""
    table: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        path, sep, rest = line.partition(":")
        if sep and path.strip():
            table[module_name(path.strip())] = (path.strip(), rest.split())
    return table


def load_order(table: dict[str, tuple[str, list[str]]], names: list[str]) -> list[str]:
    """The paths to load, dependencies first, each once, for modules *names*; KeyError
    names a module the table does not have."""
    order: list[str] = []
    visited: set[str] = set()

    def add(name: str) -> None:
        if name in visited:
            return
        visited.add(name)
        path, dependencies = table[name]
        for soft in SOFT_DEPENDENCIES.get(name, ()):
            if soft in table:
                add(soft)
        for dependency in reversed(dependencies):
            add(module_name(dependency))
        order.append(path)

    for name in names:
        if name.replace("-", "_") not in table:
            raise KeyError(f"no kernel module {name}")
        add(name.replace("-", "_"))
    return order


def load(path: str, parameters: str = "") -> bool:
    """Load the module file *path*; False if it is loaded already (or built in)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        result = _libc.syscall(_NR_finit_module, fd, parameters.encode(), 0)
    finally:
        os.close(fd)
    if result < 0:
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            return False
        raise OSError(err, f"finit_module: {os.strerror(err)}", path)
    return True
