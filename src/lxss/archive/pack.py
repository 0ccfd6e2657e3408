"""Writing the tree at "/" (a distribution's root, in the archive worker) as a tar stream.

The archive re-imports identically: numeric owners (as the distribution sees
them), modes including set-id bits, hard links, symlinks, fifos and extended
attributes (as pax SCHILY.xattr records, the convention GNU tar and bsdtar
share). Names are "./path", like `tar -C root -c .`, in sorted order so two
exports of the same tree are the same bytes.

Headers are written as GNU tar writes them, so that GNU tar and bsdtar both read
them without a warning: names and values that are not UTF-8 (Linux allows any
bytes) go raw, never with the `hdrcharset=BINARY` record GNU tar does not know;
a name that is not UTF-8 but fits the ustar field goes in that field alone. A
longer one can only go raw in a `path` record, as GNU tar writes it: bsdtar then
warns that it cannot convert it, as it does for GNU tar's own archives.
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


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _number(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _block(
    name: bytes,
    kind: bytes,
    size: int,
    mode: int = 0o644,
    ids: tuple[int, int] = (0, 0),
    mtime: int = 0,
    linkname: bytes = b"",
    device: tuple[int, int] = (0, 0),
) -> bytes:
    """One ustar header block (POSIX.1-1988: magic "ustar\\0", version "00")."""
    fields = [
        name[:100].ljust(100, b"\0"),
        _number(mode, 8),
        _number(ids[0], 8),
        _number(ids[1], 8),
        _number(size, 12),
        _number(mtime, 12),
        b" " * 8,  # the checksum, counted as spaces
        kind,
        linkname[:100].ljust(100, b"\0"),
        b"ustar\x0000",
        b"\0" * 64,  # uname, gname: owners are numeric
        _number(device[0], 8),
        _number(device[1], 8),
        b"\0" * 167,  # prefix (unused: a long name goes in a record) and padding
    ]
    block = b"".join(fields)
    return block[:148] + b"%06o\0 " % sum(block) + block[156:]


def _records(records: dict[str, str]) -> bytes:
    """pax extended header records, "LENGTH keyword=value\\n", values as raw bytes."""
    body = b""
    for keyword, value in records.items():
        line = b" " + _raw(keyword) + b"=" + _raw(value) + b"\n"
        size = len(line)
        while len(str(size)) + len(line) != size:  # the length counts its own digits
            size = len(str(size)) + len(line)
        body += str(size).encode() + line
    return body


class _Member(tarfile.TarInfo):
    """A tar member whose headers carry every byte as it is (see the module docstring)."""

    def tobuf(
        self, format: int | None = None, encoding: str | None = None, errors: str = ""
    ) -> bytes:
        records = dict(self.pax_headers)
        name, linkname = _raw(self.name), _raw(self.linkname)
        for keyword, text, raw in (
            ("path", self.name, name),
            ("linkpath", self.linkname, linkname),
        ):
            if len(raw) > 100 or (not text.isascii() and _utf8(text)):
                records[keyword] = text  # raw bytes that fit stay in the field alone
        numbers = {"uid": self.uid, "gid": self.gid, "size": self.size, "mtime": int(self.mtime)}
        for keyword, value in list(numbers.items()):
            if not 0 <= value < 8 ** (11 if keyword in ("size", "mtime") else 7):
                records[keyword] = str(value)
                numbers[keyword] = 0
        head = b""
        if records:
            body = _records(records)
            padding = b"\0" * (-len(body) % tarfile.BLOCKSIZE)
            head = _block(b"././@PaxHeader", tarfile.XHDTYPE, len(body)) + body + padding
        return head + _block(
            name,
            self.type,
            numbers["size"],
            self.mode,
            (numbers["uid"], numbers["gid"]),
            numbers["mtime"],
            linkname,
            (self.devmajor, self.devminor),
        )


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
        info = _Member("./" if path == "." else path)
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
