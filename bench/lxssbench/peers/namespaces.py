"""The floors: plain namespaces with util-linux and bubblewrap, no manager at all.

``unshare … chroot ROOT cmd`` is what creating a distribution's namespaces
costs at the least; ``nsenter -t PID -a cmd`` is what entering a running one
costs at the least; ``bwrap`` is the unprivileged sandbox builder Flatpak uses.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..proc import Background, Unavailable, children_of, cmdline, wait_until

UNSHARE_FLAGS = ["--mount", "--pid", "--uts", "--ipc", "--fork"]


def unshare_chroot(root: Path, *cmd: str) -> list[str]:
    return ["unshare", *UNSHARE_FLAGS, "chroot", str(root), *cmd]


def bwrap(root: Path, *cmd: str, binds: tuple[tuple[Path, str], ...] = ()) -> list[str]:
    """A new mount, pid, uts and ipc namespace over root, like unshare above."""
    argv = [
        "bwrap",
        "--ro-bind",
        str(root),
        "/",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--unshare-pid",
        "--unshare-uts",
        "--unshare-ipc",
    ]
    for src, dst in binds:
        argv += ["--ro-bind", str(src), dst]
    return [*argv, *cmd]


def check_tools(*names: str) -> None:
    for name in names:
        if shutil.which(name) is None:
            raise Unavailable(f"{name} not installed")


class Holder:
    """A running "distribution" made of bare namespaces: unshare + chroot + sleep.

    ``pid`` is the sleeping process inside the namespaces (pid 1 there), the
    target for nsenter. ``--kill-child`` makes the namespace die with unshare;
    unshare itself ignores SIGTERM while it waits for its child, and a pid 1
    ignores signals it has no handler for, so closing goes to SIGKILL quickly.
    """

    def __init__(self, root: Path, log: Path) -> None:
        check_tools("unshare", "nsenter", "chroot")
        self.bg = Background(
            ["unshare", *UNSHARE_FLAGS, "--kill-child", "chroot", str(root), "sleep", "2147483647"],
            log=log,
            grace=0.5,
        )
        try:
            inner: list[int] = []

            def started() -> bool:
                inner[:] = children_of(self.bg.pid)
                return bool(inner) and cmdline(inner[0]).startswith("sleep")

            if not wait_until(started, timeout=10):
                raise Unavailable(f"unshare did not start its namespace: {self.bg.log_tail()}")
            self.pid = inner[0]
        except BaseException:
            self.bg.close()
            raise

    def nsenter(self, *cmd: str) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-a", *cmd]

    def close(self) -> None:
        self.bg.close()

    def __enter__(self) -> Holder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
