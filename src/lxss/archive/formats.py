"""Archive formats: recognising a stream by its first bytes, and the external
(de)compressors lxss runs for each.

Compression is left to the standard tools (gzip, xz, zstd, bzip2): they run in
a process of their own beside the unpacker, which on a two-core machine is
faster than decompressing in Python, and they are the tools users already trust.
"""

from __future__ import annotations

import shutil
from typing import Final

TAR_BLOCK: Final = 512

# (magic, compression) — checked in order at offset 0.
_MAGIC: Final = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bzip2"),
)

EXPORT_FORMATS: Final = ("tar", "tar.gz", "tar.xz", "tar.zst")


def _tar_checksum_ok(block: bytes) -> bool:
    """A v7/ustar header whose checksum field matches its bytes (POSIX tar(5))."""
    if len(block) < TAR_BLOCK:
        return False
    field = block[148:156].split(b"\0", 1)[0].strip()
    try:
        stored = int(field or b"-1", 8)
    except ValueError:
        return False
    actual = sum(block[:148]) + 8 * 32 + sum(block[156:TAR_BLOCK])
    return stored == actual


def detect(head: bytes) -> str:
    """'gzip', 'xz', 'zstd', 'bzip2', 'tar', 'empty' or 'unknown' for a stream's first bytes.

    *head* should hold the first 512 bytes (fewer only when the stream is shorter).
    """
    if not head:
        return "empty"
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[257:262] == b"ustar" or _tar_checksum_ok(head):
        return "tar"
    return "unknown"


def decompress_command(compression: str) -> list[str]:
    commands = {
        "gzip": ["gzip", "-dc"],
        "xz": ["xz", "-dc", "-T0"],
        "zstd": ["zstd", "-dcq"],
        "bzip2": ["bzip2", "-dc"],
    }
    return _resolve(commands[compression])


def compress_command(export_format: str) -> list[str] | None:
    """The compressor for an export format (None for plain tar)."""
    commands = {
        "tar.gz": ["pigz", "-c"] if shutil.which("pigz") else ["gzip", "-c"],
        "tar.xz": ["xz", "-c", "-T0"],
        "tar.zst": ["zstd", "-cq", "-T0"],
    }
    if export_format == "tar":
        return None
    return _resolve(commands[export_format])


_PACKAGES: Final = {"xz": "xz-utils"}


def _resolve(argv: list[str]) -> list[str]:
    path = shutil.which(argv[0])
    if path is None:
        package = _PACKAGES.get(argv[0], argv[0])
        raise FileNotFoundError(f"{argv[0]} is not installed (Debian package {package})")
    return [path, *argv[1:]]
