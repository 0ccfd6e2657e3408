"""The icon an image's /etc/wsl-distribution.conf `[shortcut] icon` names, read at install
for the distribution's desktop entry (WSL's start-menu shortcut shows it too).

Read by the archive worker inside the new tree (chrooted, with the owner's rights), so the
path cannot name anything outside it. WSL takes a Windows .ico of at most 1 MiB; Linux
desktops read PNG, SVG and XPM (the icon theme specification's formats) and, through their
image loaders, ICO, so an image made for WSL keeps its icon. Anything else, too large, or not
a regular file is left out with a warning: the entry then shows the terminal's icon.
"""

from __future__ import annotations

import os
import stat
from typing import Final

MAX_ICON: Final = 1 << 20  # bytes, as WSL's limit
FORMATS: Final = frozenset({"png", "svg", "xpm", "ico"})


def icon_format(path: str) -> str | None:
    """The format a path's extension names (``/usr/share/wsl/ubuntu.ICO`` -> ``ico``)."""
    extension = os.path.splitext(path)[1].lower().removeprefix(".")
    return extension if extension in FORMATS else None


def read_icon(path: str) -> tuple[str, bytes] | str:
    """(format, content) of the icon at absolute *path* in the current root, or a warning
    saying why there is none."""
    what = f"the shortcut icon {path!r} of /etc/wsl-distribution.conf"
    kind = icon_format(path)
    if not path.startswith("/"):
        return f"{what} is not an absolute path; the shortcut has the terminal's icon"
    if kind is None:
        return f"{what} is not a PNG, SVG, XPM or ICO file; the shortcut has the terminal's icon"
    try:
        # O_NONBLOCK: a FIFO planted there must not hold the install.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        return f"cannot read {what}: {e.strerror}; the shortcut has the terminal's icon"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return f"{what} is not a regular file; the shortcut has the terminal's icon"
        if info.st_size > MAX_ICON:
            return (f"{what} is larger than {MAX_ICON >> 20} MiB; "
                    "the shortcut has the terminal's icon")  # fmt: skip
        content = os.read(fd, MAX_ICON + 1)
    except OSError as e:
        return f"cannot read {what}: {e.strerror}; the shortcut has the terminal's icon"
    finally:
        os.close(fd)
    if len(content) > MAX_ICON:  # grew while read
        return f"{what} is larger than {MAX_ICON >> 20} MiB; the shortcut has the terminal's icon"
    return kind, content
