"""One bench run at a time, and what a killed run left behind.

Two runs at once would share the bench user, the podman names, the nspawn
tmpfs and the bench distributions, and each would tear down the other's. So
a run holds an exclusive lock for its whole life; while holding it, anything
bench-made that still exists can only be a leftover of a run that was killed
(SIGKILL leaves no chance to clean up) and is removed first.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from .peers.nspawn import NSPAWN_DIR, TMPFS_SOURCE
from .proc import run

LOCK: Final = Path("/run/lxss-bench.lock")
WORK_PARENT: Final = Path("/var/tmp")
WORK_PREFIX: Final = "lxss-bench."


@contextlib.contextmanager
def one_at_a_time(wait: float) -> Iterator[None]:
    """Hold the bench lock; wait up to `wait` seconds for another run to finish."""
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                if time.monotonic() >= deadline:
                    raise SystemExit(
                        f"bench/run: another bench run (pid {holder}) still holds {LOCK} "
                        f"after {wait:g} s"
                    ) from None
                if not told:
                    print(f"bench: waiting for another bench run (pid {holder})", file=sys.stderr)
                    told = True
                time.sleep(1.0)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # also releases the lock


def clear_leftovers() -> list[str]:
    """Remove what killed runs left; call only while holding the lock."""
    done = []
    for work in sorted(WORK_PARENT.glob(WORK_PREFIX + "*")):
        shutil.rmtree(work, ignore_errors=True)
        done.append(str(work))
    src = run(
        ["findmnt", "-no", "SOURCE", "--mountpoint", str(NSPAWN_DIR)], timeout=10, capture=True
    )
    if src.ok and src.stdout.strip() == TMPFS_SOURCE:
        run(["umount", str(NSPAWN_DIR)], timeout=30)
        done.append(f"tmpfs on {NSPAWN_DIR}")
    if shutil.which("podman"):
        names = run(
            ["podman", "ps", "-a", "--filter", "name=^lxssbench-", "--format", "{{.Names}}"],
            timeout=60,
            capture=True,
        ).stdout.split()
        for name in names:
            run(["podman", "rm", "--force", "--time", "0", name], timeout=60)
            done.append(f"container {name}")
        images = run(
            ["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"], timeout=60, capture=True
        ).stdout.split()
        for image in images:
            if image.startswith("localhost/lxssbench-"):
                run(["podman", "rmi", "--force", image], timeout=60)
                done.append(f"image {image}")
    return done
