"""systemd-nspawn on the bench's busybox tree, without systemd as pid 1.

Found by trying on a machine where pid 1 is not systemd:

- With only ``--register=no``, nspawn still asks systemd over the system bus
  for a transient scope ("Failed to open system bus", and with a
  ``dbus-daemon --system`` running: "Failed to allocate scope: Launch helper
  exited with unknown return code 1"). ``--keep-unit`` makes it stay in the
  caller's own cgroup instead, and then no bus is needed at all.
- On exit nspawn empties /run/systemd/nspawn/propagate/NAME and refuses when
  that is not on tmpfs ("Attempted to remove disk file system …"), so the
  bench mounts a tmpfs there for the run unless one is already mounted.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Final

from ..proc import Unavailable, must, run

NSPAWN_DIR: Final = Path("/run/systemd/nspawn")
TMPFS_SOURCE: Final = "lxss-bench"  # the mount's source name marks it as the bench's


def _is_tmpfs_mountpoint(path: Path) -> bool:
    res = run(["findmnt", "-no", "FSTYPE", "--mountpoint", str(path)], timeout=10, capture=True)
    return res.ok and res.stdout.strip() == "tmpfs"


class Nspawn:
    def __init__(self, root: Path) -> None:
        if shutil.which("systemd-nspawn") is None:
            raise Unavailable("systemd-nspawn not installed (Debian package systemd-container)")
        self.root = root
        self.notes = ["--keep-unit: no scope from systemd, so no system D-Bus is needed"]
        self._made: list[Path] = []
        self._mounted = False
        try:
            if not _is_tmpfs_mountpoint(NSPAWN_DIR):
                for d in (NSPAWN_DIR.parent, NSPAWN_DIR):
                    if not d.exists():
                        d.mkdir(mode=0o755)
                        self._made.append(d)
                must(
                    [
                        "mount",
                        "-t",
                        "tmpfs",
                        "-o",
                        "mode=0755,size=16m",
                        TMPFS_SOURCE,
                        str(NSPAWN_DIR),
                    ],
                    timeout=10,
                )
                self._mounted = True
                self.notes.append(f"tmpfs mounted on {NSPAWN_DIR} for the run")
            res = run(self.command("true"), timeout=60, capture=True)
            if not res.ok:
                raise Unavailable(f"systemd-nspawn: {res.why()}")
        except BaseException:
            self.close()
            raise

    def command(self, *cmd: str) -> list[str]:
        return [
            "systemd-nspawn",
            "--register=no",
            "--keep-unit",
            "--quiet",
            "--console=pipe",
            "-D",
            str(self.root),
            *cmd,
        ]

    def close(self) -> None:
        if self._mounted:
            run(["umount", str(NSPAWN_DIR)], timeout=30)
            self._mounted = False
        for d in reversed(self._made):
            shutil.rmtree(d, ignore_errors=True)
        self._made.clear()

    def __enter__(self) -> Nspawn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
