"""Debian packages the peers need, installed once, quietly, only when missing."""

from __future__ import annotations

import os
import shutil
import sys
from typing import Final

from .proc import run

PACKAGES: Final = (
    "podman",
    "crun",
    "runc",
    "conmon",
    "catatonit",
    "uidmap",
    "slirp4netns",
    "fuse-overlayfs",  # rootless podman
    "systemd-container",  # systemd-nspawn
    "bubblewrap",
    "util-linux",  # bwrap, unshare, nsenter
    "busybox-static",  # the bench distribution's userland
    "debootstrap",  # the Debian rootfs (full mode)
    "tar",
    "gzip",
    "zstd",
    "xz-utils",
    "curl",  # the install-catalog figure's peer
    "docker-registry",  # the local registry of the oci-install figure
    "skopeo",
    "umoci",
)


def missing(packages: tuple[str, ...] = PACKAGES) -> list[str]:
    res = run(
        ["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n", *packages],
        timeout=60,
        capture=True,
    )
    installed = {ln.split()[0] for ln in res.stdout.splitlines() if ln.endswith(" installed")}
    return [p for p in packages if p not in installed]


def ensure_packages() -> list[str]:
    """Install what is missing; returns warnings (a failed install is not fatal:
    the peers that needed it report themselves unavailable)."""
    if shutil.which("dpkg-query") is None or shutil.which("apt-get") is None:
        return ["not a Debian system: packages not installed"]
    todo = missing()
    if not todo:
        return []
    print(f"bench: installing {' '.join(todo)}", file=sys.stderr)
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "DEBIAN_FRONTEND": "noninteractive",
        "LANG": "C.UTF-8",
    }
    update = run(["apt-get", "update", "-qq"], timeout=600, env=env, capture=True)
    res = run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *todo],
        timeout=1800,
        env=env,
        capture=True,
    )
    warnings = []
    if not res.ok:
        warnings.append(
            f"apt-get install {' '.join(todo)}: {res.why()}"
            + (f" (apt-get update: {update.why()})" if not update.ok else "")
        )
    still = missing(tuple(todo))
    if still and not warnings:
        warnings.append(f"still missing after apt-get install: {' '.join(still)}")
    os.sync()
    return warnings
