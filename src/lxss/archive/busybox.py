"""The built-in distribution: a tiny root file system around Debian's busybox-static.

It needs no download, so a fresh machine can run its first command at once.
The tree is written as a tar stream and goes through the same import path as
any archive.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import tarfile
import time
from typing import IO, Final

BUSYBOX: Final = "/bin/busybox"

_DIRS: Final = (
    ("bin", 0o755), ("sbin", 0o755), ("usr", 0o755), ("usr/bin", 0o755), ("usr/sbin", 0o755),
    ("etc", 0o755), ("root", 0o700), ("home", 0o755), ("tmp", 0o1777), ("var", 0o755),
    ("var/tmp", 0o1777), ("var/log", 0o755), ("proc", 0o555), ("sys", 0o555), ("dev", 0o755),
    ("run", 0o755), ("mnt", 0o755),
)  # fmt: skip

_PASSWD: Final = """\
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
_GROUP: Final = """\
root:x:0:
tty:x:5:
users:x:100:
nogroup:x:65534:
"""
_PROFILE: Final = """\
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
PS1='\\u@\\h:\\w\\$ '
"""


class BusyboxMissing(FileNotFoundError):
    pass


def busybox_version(busybox: str = BUSYBOX) -> str:
    banner = subprocess.run(
        [busybox], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    match = re.search(r"BusyBox v(\d+(?:\.\d+)+)", banner)
    return match.group(1) if match else "unknown"


def applets(busybox: str = BUSYBOX) -> list[str]:
    """Install paths of every applet, relative to the root ("bin/sh", "usr/bin/awk", ...)."""
    listing = subprocess.run(
        [busybox, "--list-full"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    return sorted(line.strip().lstrip("/") for line in listing.splitlines() if line.strip())


def _os_release(version: str) -> str:
    return (
        'NAME="BusyBox"\n'
        f'PRETTY_NAME="BusyBox {version} (lxss built-in)"\n'
        "ID=busybox\n"
        f"VERSION_ID={version}\n"
        'HOME_URL="https://busybox.net/"\n'
    )


def write_rootfs(out: IO[bytes], busybox: str = BUSYBOX) -> None:
    """Write the busybox root file system as an uncompressed tar stream to *out*."""
    if not os.path.exists(busybox):
        raise BusyboxMissing(
            f"the built-in distribution needs {busybox} (Debian package busybox-static)"
        )
    version = busybox_version(busybox)
    now = int(time.time())

    def entry(name: str, kind: bytes, mode: int, **extra: object) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime = kind, mode, now
        for key, value in extra.items():
            setattr(info, key, value)
        return info

    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        archive.addfile(entry("./", tarfile.DIRTYPE, 0o755))
        for name, mode in _DIRS:
            archive.addfile(entry(f"./{name}", tarfile.DIRTYPE, mode))
        size = os.path.getsize(busybox)
        with open(busybox, "rb") as binary:
            archive.addfile(entry("./bin/busybox", tarfile.REGTYPE, 0o755, size=size), binary)
        for path in applets(busybox):
            if path != "bin/busybox":
                link = entry(f"./{path}", tarfile.SYMTYPE, 0o777, linkname="/bin/busybox")
                archive.addfile(link)
        for name, text, mode in (
            ("etc/passwd", _PASSWD, 0o644),
            ("etc/group", _GROUP, 0o644),
            ("etc/profile", _PROFILE, 0o644),
            ("etc/os-release", _os_release(version), 0o644),
        ):
            data = text.encode()
            archive.addfile(
                entry(f"./{name}", tarfile.REGTYPE, mode, size=len(data)), io.BytesIO(data)
            )
