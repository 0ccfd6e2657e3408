"""Seeding the kernel's entropy pool (random(4), RNDADDENTROPY): what version 2's mini_init
does with the bytes the service sends in InitialConfig, as WSL's does. Needs
CAP_SYS_ADMIN in the initial user namespace: the VM's own kernel, never the host's."""

from __future__ import annotations

import fcntl
import os
import struct
from typing import Final

RNDADDENTROPY: Final = 0x40085203  # _IOW('R', 0x03, int[2]) in <linux/random.h>


def add_entropy(data: bytes, device: str = "/dev/random") -> None:
    """Mix *data* into the pool and credit it in full (it comes from the host's getrandom)."""
    if not data:
        return
    # struct rand_pool_info: entropy_count (bits), buf_size (bytes), then the bytes. A
    # mutable buffer, so fcntl passes it whole (an immutable one is capped at 1 KiB).
    request = bytearray(struct.pack("ii", len(data) * 8, len(data)) + data)
    fd = os.open(device, os.O_WRONLY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, RNDADDENTROPY, request, True)
    finally:
        os.close(fd)
