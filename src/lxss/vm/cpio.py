"""A writer of the newc ("070701") cpio format, the one the kernel unpacks an initramfs from.

Pure: records go to any binary file object, nothing is read from the host here (the
caller hands each file's bytes). The kernel's reader (init/initramfs.c) wants, per
record, a 110-byte ASCII header of hex fields, the NUL-terminated name, padding to 4
bytes, the data, padding to 4 bytes; the archive ends with a record named TRAILER!!!.
"""

from __future__ import annotations

import stat
from typing import BinaryIO, Final

MAGIC: Final = b"070701"
TRAILER: Final = "TRAILER!!!"


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


class CpioWriter:
    """Writes one archive to *out*; `close` adds the trailer (the caller owns *out*)."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._inode = 1
        self._names: set[str] = set()
        self.closed = False

    def _record(self, name: str, mode: int, data: bytes = b"", *, rdev: tuple[int, int] = (0, 0),
                nlink: int = 1, mtime: int = 0) -> None:  # fmt: skip
        if self.closed:
            raise ValueError("the archive is closed")
        if name != TRAILER:
            name = name.strip("/")
            if not name or name in self._names or "\0" in name or ".." in name.split("/"):
                raise ValueError(f"bad or repeated cpio member name {name!r}")
            self._names.add(name)
        encoded = name.encode() + b"\0"
        fields = (
            self._inode, mode, 0, 0, nlink, mtime, len(data), 0, 0, rdev[0], rdev[1],
            len(encoded), 0,
        )  # fmt: skip
        self._inode += 1
        header = MAGIC + b"".join(b"%08X" % value for value in fields)
        self._out.write(header + encoded + _pad(len(header) + len(encoded)))
        self._out.write(data + _pad(len(data)))

    def directory(self, name: str, mode: int = 0o755) -> None:
        self._record(name, stat.S_IFDIR | mode, nlink=2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._record(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._record(name, stat.S_IFLNK | 0o777, target.encode())

    def device(self, name: str, kind: int, major: int, minor: int, mode: int = 0o600) -> None:
        """A device node; *kind* is stat.S_IFCHR or stat.S_IFBLK."""
        if kind not in (stat.S_IFCHR, stat.S_IFBLK):
            raise ValueError("a device is a character or a block device")
        self._record(name, kind | mode, rdev=(major, minor))

    def close(self) -> None:
        if not self.closed:
            self._record(TRAILER, 0, nlink=1)
            self.closed = True
