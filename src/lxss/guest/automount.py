"""[automount] root and options: where the host's files appear, and how (WSL: the DrvFs
mounts under automount.root, /mnt/c and the rest; documentation: wsl-config.md).

WSL mounts each Windows drive at root + letter; lxss has one host, the host's root file
system, at root + "host" (`/mnt/host` by default). mini_init binds it at /mnt/host before
the distribution's /etc/wsl.conf is read; init moves it to the configured root here.

`options` are DrvFs mount options in WSL. Those that mean something for a bind mount of the
host's tree are applied to it and everything below: `ro`, `noexec`, `nodev`, `nosuid` (and
`rw`, `exec`, the defaults). DrvFs's own (`uid`, `gid`, `umask`, `fmask`, `dmask`,
`metadata`, `case`) do not: host files keep their real owners and modes, shown through the
distribution's id mapping (the owner's are the default user's). They are accepted with a
warning; anything else is warned about as unknown. Nothing here stops the distribution.
"""

from __future__ import annotations

import contextlib
import os
from typing import Final

from lxss.linux import syscalls as sc

HOST_NAME: Final = "host"  # the host's root is root + this, as a drive is root + its letter
APPLIED: Final = {
    "ro": sc.MOUNT_ATTR_RDONLY,
    "noexec": sc.MOUNT_ATTR_NOEXEC,
    "nodev": sc.MOUNT_ATTR_NODEV,
    "nosuid": sc.MOUNT_ATTR_NOSUID,
    "rw": 0,
    "exec": 0,
}
DRVFS_ONLY: Final = frozenset({"uid", "gid", "umask", "fmask", "dmask", "metadata", "case"})


def mount_point(root: str) -> str:
    """Where the host's root appears for an [automount] root (which ends in "/")."""
    return f"{root}{HOST_NAME}"


def parse_options(text: str | None) -> tuple[int, list[str]]:
    """The MOUNT_ATTR_* flags *text* asks for, and warnings for what it asks in vain."""
    flags = 0
    warnings = []
    for option in (text or "").split(","):
        option = option.strip()
        name = option.partition("=")[0]
        if not option:
            continue
        if option in APPLIED:
            flags |= APPLIED[option]
        elif name in DRVFS_ONLY:
            warnings.append(
                f"[automount] options: {option} does not apply to the host mount (the host's "
                "files keep their owners and modes)"
            )
        else:
            warnings.append(f"[automount] options: unknown option {option!r}, ignored")
    return flags, warnings


def apply(current: str, root: str, options: str | None) -> tuple[str, list[str]]:
    """Move the host mount from *current* to *root*'s place and apply *options*; where it is
    now, and warnings for the user (a move that fails leaves it where it was)."""
    warnings: list[str] = []
    target = mount_point(root)
    if target != current:
        try:
            os.makedirs(target, 0o755, exist_ok=True)
            sc.mount(current, target, None, sc.MS_MOVE)
        except OSError as e:
            warnings.append(f"[automount] root {root}: cannot mount the host there ({e}); "
                            f"it stays at {current}")  # fmt: skip
        else:
            with contextlib.suppress(OSError):
                os.rmdir(current)  # the empty mount point lxss made (not one with files)
            current = target
    flags, option_warnings = parse_options(options)
    warnings += option_warnings
    if flags:
        try:
            sc.mount_setattr_recursive(current, flags)
        except OSError as e:
            warnings.append(f"[automount] options {options}: not applied ({e})")
    return current, warnings
