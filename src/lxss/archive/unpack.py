"""Unpacking a tar stream into the current root directory.

Runs in the archive worker after it has entered the owner's user namespace and
chrooted into the new distribution's root, so "/" here *is* the distribution:
no member name or link can reach outside, whatever it says. The checks below
are about doing what tar users expect (and saying what was skipped), not about
confinement, which the kernel already provides.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Final, Self, cast

from lxss.config.osrelease import parse_os_release
from lxss.errors import LxssError
from lxss.linux.files import read_regular_file
from lxss.oci import whiteout

XATTR_PREFIX: Final = "SCHILY.xattr."
# Space kept free on the target file system, so a hostile archive cannot fill it.
SPACE_RESERVE: Final = 64 << 20
COPY_CHUNK: Final = 1 << 20
OS_RELEASE_LIMIT: Final = 1 << 16  # os-release is a few hundred bytes


class UnpackError(LxssError):
    """The archive cannot be unpacked; the message says why, for the user."""


@dataclass
class UnpackReport:
    warnings: list[str] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    skipped_devices: list[str] = field(default_factory=list)
    unmapped_owners: list[str] = field(default_factory=list)
    failed_xattrs: list[str] = field(default_factory=list)

    def summary(self) -> list[str]:
        """The warnings, with repeated kinds folded into one line each."""
        lines = list(self.warnings)
        for items, what in (
            (self.skipped_devices, "device node(s) skipped (a distribution cannot create them)"),
            (self.unmapped_owners, "file(s) kept as root: owner or group above 65535"),
            (self.failed_xattrs, "extended attribute(s) not restored"),
        ):
            if items:
                shown = ", ".join(items[:5]) + (", ..." if len(items) > 5 else "")
                lines.append(f"{len(items)} {what}: {shown}")
        return lines


def member_path(name: str) -> str | None:
    """The relative path a member lands at, or None when it names a parent directory.

    Leading slashes and "./" are dropped (as GNU tar does); "." is the root itself.
    """
    parts = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            return None
        parts.append(part)
    return "/".join(parts) or "."


def _free_bytes() -> int:
    st = os.statvfs(".")
    return st.f_bavail * st.f_frsize


def _remove_existing(path: str, keep_dir: bool) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        if keep_dir:
            return
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _ensure_parent(path: str) -> None:
    parent = os.path.dirname(path)
    if parent and not os.path.isdir(parent):
        os.makedirs(parent, 0o755, exist_ok=True)


class _ForwardOnly:
    """A stream read front to back, offered to tarfile as a seekable file.

    tarfile's stream mode ("r|") reads through a buffer of its own that joins and slices
    bytes objects 10 KiB at a time, the unpacker's largest cost after the kernel's. Its
    file mode ("r:") reads a member's data straight from the file object; all it needs of
    seek() is to move forward (to the next header, over a member's padding), which reading
    does. A backward seek would be a tarfile change this relies on: it fails loudly.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._position += len(data)
        return data

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence != os.SEEK_SET or offset < self._position:
            raise io.UnsupportedOperation(
                f"the archive is read front to back: cannot go back from {self._position} to "
                f"{offset}"
            )
        while self._position < offset and self.read(min(COPY_CHUNK, offset - self._position)):
            pass
        return self._position


class _Member(tarfile.TarInfo):
    """A TarInfo that tells the unpacker why tarfile stopped reading headers.

    After the first member, tarfile.next() takes any header it cannot read for the end
    of the archive: a corrupt header, or an archive cut short at a member's boundary,
    would import whatever came before as if that were all (GNU tar fails on the first;
    both are what a damaged download looks like). The real end is a zero block.
    """

    @classmethod
    def fromtarfile(cls, archive: tarfile.TarFile) -> Self:
        try:
            return super().fromtarfile(archive)
        except tarfile.HeaderError as e:
            archive.lxss_stopped_by = e  # type: ignore[attr-defined]
            raise


def _check_end(archive: tarfile.TarFile) -> None:
    """Refuse an archive whose members ended at anything but the end-of-archive blocks.

    tarfile's header errors are not in typeshed: they are told apart by name (EOFHeaderError
    is the zero block that ends an archive).
    """
    stopped_by = getattr(archive, "lxss_stopped_by", None)
    kind = type(stopped_by).__name__
    if kind == "InvalidHeaderError":
        raise UnpackError(f"the archive has a corrupt header ({stopped_by})")
    if kind in ("EmptyHeaderError", "TruncatedHeaderError"):
        raise UnpackError("the archive is truncated (it ends without the end-of-archive blocks)")


class Unpacker:
    """Extracts members one by one into the current directory ("/" in the worker)."""

    def __init__(
        self, stream: IO[bytes], report: UnpackReport | None = None, *, layer: bool = False
    ) -> None:
        """*layer*: the stream is one layer of a container image, applied over the tree
        already here, and its whiteout entries delete from it (lxss.oci.whiteout)."""
        self._stream = stream
        self.report = report or UnpackReport()
        self._layer = layer
        self._deferred_dirs: list[tuple[str, tarfile.TarInfo]] = []
        self._extracted: set[str] = set()

    def run(self) -> UnpackReport:
        try:
            forward = cast("IO[bytes]", _ForwardOnly(self._stream))  # all tarfile uses of it
            with tarfile.open(fileobj=forward, mode="r:", errorlevel=2, tarinfo=_Member) as archive:
                for member in self._members(archive):
                    self._extract(archive, member)
                _check_end(archive)
        except tarfile.ReadError as e:
            raise UnpackError(f"the archive is not a valid tar stream ({e})") from None
        except EOFError as e:
            raise UnpackError(f"the archive is truncated ({e})") from None
        # Directories last, deepest first: writing into them would change their times.
        for path, member in sorted(self._deferred_dirs, key=lambda item: item[0], reverse=True):
            self._apply_metadata(path, member)
        return self.report

    def _members(self, archive: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
        while True:
            try:
                member = archive.next()
            except tarfile.HeaderError as e:
                raise UnpackError(f"the archive has a corrupt header ({e})") from None
            if member is None:
                return
            yield member

    def _extract(self, archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        path = member_path(member.name)
        if path is None:
            self.report.warnings.append(f"skipped '{member.name}': path contains '..'")
            return
        if member.ischr() or member.isblk():  # not isdev(): that includes fifos
            self.report.skipped_devices.append(path)
            return
        if self._layer and path != ".":
            action = whiteout.classify(path)
            if action is not None:
                self._whiteout(*action)
                return
        if path != ".":
            try:
                _ensure_parent(path)
            except (FileExistsError, NotADirectoryError):
                # A parent is a file, a dangling or looping symlink: tar refuses these too.
                self.report.warnings.append(
                    f"skipped '{member.name}': its parent is not a directory"
                )
                return
        if member.isdir():
            if path != ".":
                _remove_existing(path, keep_dir=True)
                if not os.path.isdir(path):
                    os.mkdir(path, 0o700)
                self._extracted.add(path)
            self._deferred_dirs.append((path, member))
            return
        if path == ".":
            self.report.warnings.append("skipped a non-directory member naming the root")
            return
        _remove_existing(path, keep_dir=False)
        if member.isreg():
            self._write_file(archive, member, path)
        elif member.issym():
            os.symlink(member.linkname, path)
        elif member.islnk():
            if not self._link(member, path):
                return
        elif member.isfifo():
            os.mkfifo(path, 0o600)
        else:
            self.report.warnings.append(f"skipped '{member.name}': unsupported member type")
            return
        self.report.files += 1
        self._extracted.add(path)
        if not member.islnk():
            self._apply_metadata(path, member)

    def _whiteout(self, action: str, target: str) -> None:
        """Delete what a lower layer put at *target* ('whiteout'), or everything lower
        layers put under the directory *target* ('opaque'); entries of this layer stay."""
        if action == "ignore":
            return
        parent = os.path.dirname(target)
        # Through real directories only: a lower layer's symlink must not redirect it.
        if parent and os.path.realpath(parent) != os.path.join(os.path.realpath("."), parent):
            self.report.warnings.append(f"skipped whiteout of '{target}': a parent is a symlink")
            return
        if action == "whiteout":
            if target not in self._extracted:
                _remove_existing(target, keep_dir=False)
            return
        if os.path.isdir(target) and not os.path.islink(target):
            self._clear_lower(target)

    def _clear_lower(self, directory: str) -> None:
        for name in os.listdir(directory):
            child = name if directory == "." else f"{directory}/{name}"
            if child not in self._extracted:
                _remove_existing(child, keep_dir=False)
            elif os.path.isdir(child) and not os.path.islink(child):
                self._clear_lower(child)

    def _link(self, member: tarfile.TarInfo, path: str) -> bool:
        target = member_path(member.linkname)
        if target is None or target == ".":
            self.report.warnings.append(
                f"skipped hard link '{member.name}': target '{member.linkname}' is outside"
            )
            return False
        try:
            os.link(target, path, follow_symlinks=False)
        except FileNotFoundError:
            self.report.warnings.append(
                f"skipped hard link '{member.name}': target '{member.linkname}' is missing"
            )
            return False
        except PermissionError:  # EPERM: link(2) refuses directories
            self.report.warnings.append(
                f"skipped hard link '{member.name}': target '{member.linkname}' is a directory"
            )
            return False
        return True

    def _write_file(self, archive: tarfile.TarFile, member: tarfile.TarInfo, path: str) -> None:
        free = _free_bytes() - SPACE_RESERVE
        if member.size > free:
            raise UnpackError(
                f"'{member.name}' is {member.size} bytes, more than the {max(free, 0)} bytes "
                "free on the target file system"
            )
        source = archive.extractfile(member)
        assert source is not None
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, 0o600)
        try:
            # tarfile keeps a sparse member's (offset, size) map here; typeshed says int.
            sparse: list[tuple[int, int]] | None = member.sparse  # type: ignore[assignment]
            if sparse:
                # extractfile() yields the whole logical content, holes as zeros: read
                # past each hole and seek over it, so it stays a hole on disk.
                position = 0
                for offset, size in sparse:
                    if size == 0:
                        continue
                    if offset < position:
                        raise UnpackError(f"'{member.name}' has an unordered sparse map")
                    self._copy(source, None, offset - position)
                    os.lseek(fd, offset, os.SEEK_SET)
                    self._copy(source, fd, size)
                    position = offset + size
                os.ftruncate(fd, member.size)
            else:
                self._copy(source, fd, member.size)
        finally:
            os.close(fd)
        self.report.bytes += member.size

    @staticmethod
    def _copy(source: IO[bytes], fd: int | None, size: int) -> None:
        """Read *size* bytes of *source* and write them to *fd*, or discard them if None."""
        remaining = size
        while remaining:
            chunk = source.read(min(COPY_CHUNK, remaining))
            if not chunk:
                raise UnpackError("the archive is truncated (a file ends early)")
            remaining -= len(chunk)
            if fd is None:
                continue
            view = memoryview(chunk)
            while view:
                written = os.write(fd, view)
                view = view[written:]

    def _apply_metadata(self, path: str, member: tarfile.TarInfo) -> None:
        try:
            os.chown(path, member.uid, member.gid, follow_symlinks=False)
        except OSError as e:
            if e.errno != errno.EINVAL:  # EINVAL: the id is not mapped in our namespace
                raise
            self.report.unmapped_owners.append(path)
        if not member.issym():
            # After chown: chown clears set-user-ID and set-group-ID bits.
            os.chmod(path, member.mode & 0o7777)
        for key, value in member.pax_headers.items():
            if key.startswith(XATTR_PREFIX):
                name = key[len(XATTR_PREFIX) :]
                try:
                    os.setxattr(
                        path,
                        name,
                        value.encode("utf-8", "surrogateescape"),
                        follow_symlinks=False,
                    )
                except OSError:
                    self.report.failed_xattrs.append(f"{path} ({name})")
        try:
            os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
        except OSError:
            pass  # e.g. a symlink on a file system without lutimes: times are cosmetic


def read_os_release() -> dict[str, str]:
    """ID and VERSION_ID (and friends) of the tree at "/", as os-release(5) defines them.

    {} when neither file is a readable regular file: the archive chose what sits there,
    and a FIFO must not hang the worker (nor a device or a huge file feed it forever).
    """
    for candidate in ("etc/os-release", "usr/lib/os-release"):
        text = read_regular_file(candidate, OS_RELEASE_LIMIT)
        if text is not None:
            return parse_os_release(text)
    return {}


def looks_like_linux() -> bool:
    """WSL's test for a Linux distribution: an /etc directory or a /bin/sh."""
    return os.path.isdir("etc") or os.path.lexists("bin/sh")
