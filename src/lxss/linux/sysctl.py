"""Kernel parameters under /proc/sys, by their sysctl(8) names ("net.ipv4.ip_forward").

Those under net.* are the calling thread's network namespace's.
"""

from __future__ import annotations

import os

PROC_SYS = "/proc/sys"


def path_of(name: str) -> str:
    """The file for *name*; a dotted name of plain words only (an interface name keeps its
    own dots nowhere here: lxss's interfaces have none)."""
    parts = name.split(".")
    if not all(p and p not in (".", "..") and "/" not in p for p in parts):
        raise ValueError(f"not a sysctl name: {name!r}")
    return os.path.join(PROC_SYS, *parts)


def read(name: str) -> str:
    with open(path_of(name), encoding="ascii") as f:
        return f.read().strip()


def write(name: str, value: str) -> None:
    with open(path_of(name), "w", encoding="ascii") as f:
        f.write(value + "\n")
