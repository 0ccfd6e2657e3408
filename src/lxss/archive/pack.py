"""Writing the tree at "/" (a distribution's root, in the archive worker) as a tar stream.

The archive re-imports identically: numeric owners (as the distribution sees
them), modes including set-id bits, hard links, symlinks, fifos and extended
attributes (as pax SCHILY.xattr records, the convention GNU tar and bsdtar
share). Names are "./path", like `tar -C root -c .`, in sorted order so two
exports of the same tree are the same bytes.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

from lxss.archive.unpack import XATTR_PREFIX


@dataclass
class PackReport:
    warnings: list[str] = field(default_factory=list)
    files: int = 0
    bytes: int = 0


def walk(top: str = ".") -> Iterator[str]:
    """Every path below *top* (itself first), depth first, sorted, without following links."""
    yield top
    try:
        entries = sorted(os.scandir(top), key=lambda e: e.name)
    except NotADirectoryError:
        return
    for entry in entries:
        path = entry.path
        if entry.is_dir(follow_symlinks=False):
            yield from walk(path)
        else:
            yield path


def _xattrs(path: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return headers
    for name in sorted(names):
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        headers[XATTR_PREFIX + name] = value.decode("utf-8", "surrogateescape")
    return headers


class Packer:
    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self.report = PackReport()
        self._links: dict[tuple[int, int], str] = {}

    def run(self) -> PackReport:
        with tarfile.open(fileobj=self._out, mode="w|", format=tarfile.PAX_FORMAT) as archive:
            for path in walk("."):
                self._add(archive, path)
        return self.report

    def _add(self, archive: tarfile.TarFile, path: str) -> None:
        st = os.lstat(path)
        info = tarfile.TarInfo("./" if path == "." else path)
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.mtime = int(st.st_mtime)
        info.pax_headers = _xattrs(path)
        mode = st.st_mode
        key = (st.st_dev, st.st_ino)
        if not stat.S_ISDIR(mode) and st.st_nlink > 1 and key in self._links:
            info.type = tarfile.LNKTYPE
            info.linkname = self._links[key]
            archive.addfile(info)
            return
        if stat.S_ISREG(mode):
            if st.st_nlink > 1:
                self._links[key] = info.name
            info.type, info.size = tarfile.REGTYPE, st.st_size
            with open(path, "rb") as f:
                archive.addfile(info, f)
            self.report.bytes += st.st_size
        elif stat.S_ISDIR(mode):
            info.type = tarfile.DIRTYPE
            archive.addfile(info)
        elif stat.S_ISLNK(mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
            archive.addfile(info)
        elif stat.S_ISFIFO(mode):
            info.type = tarfile.FIFOTYPE
            archive.addfile(info)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            archive.addfile(info)
        else:
            self.report.warnings.append(f"skipped '{path}': sockets cannot be archived")
            return
        self.report.files += 1
