"""ext4 images made from a directory with mke2fs -d: the disks of version 2.

The system disk, the modules disk and a distribution's disk are all made this way:
sparse files (mke2fs writes only the blocks it uses), sized for their contents plus
room. Read-only disks get no journal; a distribution's keeps one and is mounted with
`discard`, so blocks its files free go back to the host (WSL's sparseVhd).
"""

from __future__ import annotations

import os
import subprocess
from typing import Final

MKE2FS: Final = "/sbin/mke2fs"
BUILD_TIMEOUT: Final = 600.0
_BLOCK: Final = 4096


class ImageError(Exception):
    """mke2fs failed; the message carries its own words."""


def tree_size(directory: str) -> tuple[int, int]:
    """(bytes in blocks, entries) under *directory*, not following links or other mounts."""
    total, entries = 0, 0
    device = os.lstat(directory).st_dev
    for root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if os.lstat(os.path.join(root, d)).st_dev == device]
        for name in dirs + files:
            status = os.lstat(os.path.join(root, name))
            total += (status.st_size + _BLOCK - 1) // _BLOCK * _BLOCK
            entries += 1
    return total, entries


def image_size(content_bytes: int, entries: int, spare_bytes: int) -> int:
    """Bytes for an image holding *content_bytes* in *entries* files with *spare_bytes* free:
    a fifth more for metadata (inode tables, directories, a journal's share), rounded up
    to a MiB."""
    mib = 1 << 20
    wanted = content_bytes * 6 // 5 + entries * 512 + spare_bytes + 16 * mib
    return (wanted + mib - 1) // mib * mib


def make_image(
    directory: str, image: str, label: str, size: int, *, journal: bool, inodes: int = 0
) -> None:
    """Write *image* (created here, sparse) holding *directory*'s tree as it is (owners and
    modes as stat shows them to this process), or raise ImageError leaving no image."""
    features = "^has_journal" if not journal else "has_journal"
    argv = [MKE2FS, "-q", "-F", "-t", "ext4", "-O", features, "-L", label, "-m", "0",
            "-E", "root_owner=0:0,discard", "-d", directory]  # fmt: skip
    if inodes:
        argv += ["-N", str(inodes)]
    argv += [image, f"{size // 1024}k"]
    try:
        done = subprocess.run(
            argv, capture_output=True, timeout=BUILD_TIMEOUT, check=False,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        done = None
    if done is None or done.returncode != 0:
        words = "timed out" if done is None else done.stderr.decode(errors="replace").strip()
        try:
            os.unlink(image)
        except FileNotFoundError:
            pass
        raise ImageError(f"mke2fs could not make {image}: {words}")
