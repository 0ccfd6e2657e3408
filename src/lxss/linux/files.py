"""Reading small files that someone else controls, without hanging on them.

A distribution's root (or its owner) decides what sits at /etc/os-release, /etc/passwd
or /etc/wsl.conf. A plain open() of a FIFO there blocks until a writer comes (forever:
init, a session leader or the archive worker would hang), a device may never end, and a
huge file costs memory. Everything here opens with O_NONBLOCK, checks with fstat that
the file is regular (and, when asked, whose it is and that it is no symlink), and reads
no more than a limit.

Guest roles import this after pivot_root: everything it needs is imported at the top.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Final

DEFAULT_LIMIT: Final = 1 << 20
"""Largest file read by default, in bytes."""

_READ_CHUNK: Final = 1 << 16
_FLAGS: Final = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


def load_regular_file(
    path: str,
    limit: int = DEFAULT_LIMIT,
    *,
    owner_uid: int | None = None,
    nofollow: bool = False,
    errors: str = "replace",
) -> str:
    """The text of the regular file at *path*, decoded as UTF-8 (*errors* as for bytes.decode).

    Raises OSError, with errno, message and *path* set, when it cannot be read or is not
    acceptable: FileNotFoundError; IsADirectoryError; EINVAL "Not a regular file" (a FIFO,
    device or socket: opening never blocks); ELOOP if *nofollow* and the path is a symlink;
    EPERM "Not owned by uid N" if *owner_uid* is given and the file is someone else's;
    EFBIG if it holds more than *limit* bytes (checked while reading too, so a file that
    grows meanwhile is still refused).
    """
    flags = _FLAGS
    if nofollow:
        flags |= os.O_NOFOLLOW
    return _load_fd(os.open(path, flags), path, limit, owner_uid, errors)


OPEN_FLAGS: Final = _FLAGS
"""How the functions here open a file (callers with an openat2 of their own use these)."""


def load_opened_file(fd: int, path: str, limit: int = DEFAULT_LIMIT) -> str:
    """load_regular_file's checks and reading for a descriptor opened with OPEN_FLAGS
    (closed here, whatever happens)."""
    return _load_fd(fd, path, limit, None, "replace")


def _load_fd(fd: int, path: str, limit: int, owner_uid: int | None, errors: str) -> str:
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "Not a regular file", path)
        if owner_uid is not None and st.st_uid != owner_uid:
            raise OSError(errno.EPERM, f"Not owned by uid {owner_uid}", path)
        if st.st_size > limit:
            raise OSError(errno.EFBIG, f"File larger than {limit} bytes", path)
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, min(_READ_CHUNK, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise OSError(errno.EFBIG, f"File larger than {limit} bytes", path)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", errors)


def read_regular_file(
    path: str,
    limit: int = DEFAULT_LIMIT,
    *,
    owner_uid: int | None = None,
    nofollow: bool = False,
    errors: str = "replace",
) -> str | None:
    """The text of the regular file at *path* (UTF-8, bad bytes handled by *errors*: replaced
    unless told otherwise), or None.

    None for anything :func:`load_regular_file` refuses: missing, unreadable, not a
    regular file (never blocking on a FIFO), a symlink when *nofollow*, not owned by
    *owner_uid* when given, or larger than *limit* bytes. For callers that fall back to
    a default whatever the reason; those that must say why call load_regular_file.
    """
    try:
        return load_regular_file(path, limit, owner_uid=owner_uid, nofollow=nofollow, errors=errors)
    except OSError:
        return None
