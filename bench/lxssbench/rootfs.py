"""Root filesystems the bench runs and imports: a tiny busybox one and Debian.

The busybox tree is built from the host's static busybox on every run (it
takes milliseconds). The Debian one comes from debootstrap, which downloads
about 50 MB, so its tarball is cached in /var/cache/lxss-bench/ and reused.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path
from typing import Final

from .proc import Unavailable, must

CACHE: Final = Path("/var/cache/lxss-bench")
DEBIAN_SUITE: Final = "bookworm"
DEBIAN_TARBALL: Final = CACHE / f"debian-{DEBIAN_SUITE}-minbase.tar"

OS_RELEASE: Final = """\
PRETTY_NAME="BusyBox (lxss bench)"
NAME="BusyBox"
ID=busybox
VERSION_ID={version}
"""


def build_busybox(root: Path) -> None:
    """A minimal distribution: /bin/busybox, its applets, root in /etc/passwd.

    /usr exists (empty) because systemd-nspawn refuses a tree without it.
    """
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not Path(busybox).exists():
        raise Unavailable("busybox not installed (Debian package busybox-static)")
    for d in (
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc",
        "root",
        "proc",
        "sys",
        "dev",
        "run",
        "mnt",
        "var/tmp",
        "tmp",
    ):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    (root / "var/tmp").chmod(0o1777)
    shutil.copy2(busybox, root / "bin/busybox")
    for applet in must([busybox, "--list"], timeout=10).split():
        link = root / "bin" / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    first = must([busybox], timeout=10).splitlines()[0]  # "BusyBox v1.35.0 (Debian …)"
    version = first.split()[1].lstrip("v") if len(first.split()) > 1 else "unknown"
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    (root / "etc/hostname").write_text("bench-busybox\n")
    (root / "etc/os-release").write_text(OS_RELEASE.format(version=version))


def make_tarball(root: Path, tarball: Path) -> None:
    must(["tar", "-C", str(root), "--numeric-owner", "-cf", str(tarball), "."], timeout=600)


def debian_mirror() -> str:
    """The Debian mirror apt already uses (deb822 sources first, then sources.list)."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for stanza in sources.read_text().split("\n\n"):
            fields = {}
            for line in stanza.splitlines():
                if ":" in line and not line.startswith("#"):
                    key, value = line.split(":", 1)
                    fields[key.strip()] = value.strip()
            if DEBIAN_SUITE in fields.get("Suites", "").split() and fields.get("URIs"):
                return fields["URIs"].split()[0]
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and parts[2] == DEBIAN_SUITE:
                return parts[1]
    return "http://deb.debian.org/debian"


def debian_tarball(log: Path) -> Path:
    """The cached Debian minbase tarball, built with debootstrap if absent."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        # Another bench run may be building it right now: wait for it (bounded
        # by its own timeouts) rather than debootstrapping twice.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if DEBIAN_TARBALL.exists():
            return DEBIAN_TARBALL
        if shutil.which("debootstrap") is None:
            raise Unavailable("debootstrap not installed")
        work = CACHE / f"debootstrap.{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        try:
            mirror = debian_mirror()
            with open(log, "a") as out:
                out.write(f"debootstrap --variant=minbase {DEBIAN_SUITE} {work} {mirror}\n")
            must(
                ["debootstrap", "--variant=minbase", DEBIAN_SUITE, str(work), mirror], timeout=1800
            )
            # Leave no apt lists or downloaded .debs: they are not part of a distribution.
            shutil.rmtree(work / "var/cache/apt/archives", ignore_errors=True)
            (work / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
            partial = DEBIAN_TARBALL.with_suffix(".tar.partial")
            make_tarball(work, partial)
            partial.rename(DEBIAN_TARBALL)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return DEBIAN_TARBALL
