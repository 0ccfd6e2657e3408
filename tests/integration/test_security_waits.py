"""Long waits of some users hold up no one else's VM lifetime (issue 11).

An import reads its archive from whatever the client hands over: a pipe nobody writes to
stalls it for as long as the import may take (hours). Such waits used to hold threads of
the one pool that VM starts, stops and shutdown also needed: a few stalled imports, and
every user's VM start waited behind them. Here two users stall eight imports; a third
starts, terminates and shuts down meanwhile.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import Service
from mgmt import User, shared_dir, spawn_lxss, wait_for
from security_support import ATTACKER, OTHER, user_distribution

STALLED_PER_USER = 4  # what a user may run at once (archives.py); the rest would queue


def _workers(service: Service) -> int:
    """Archive workers of *service* running now."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"lxss.archive.worker" in cmdline and b"unpack" in cmdline:
                count += 1
    return count


def test_stalled_imports_hold_up_no_one_elses_vm(
    service: Service, test_users: tuple[str, str]
) -> None:
    attacker = User.named(ATTACKER)
    stalled: list[tuple[subprocess.Popen[bytes], int]] = []
    with user_distribution(service, OTHER, "sec-wait-b") as b, shared_dir("lxss-stall-") as work:
        try:
            before = _workers(service)
            for owner, base in ((ATTACKER, Path(attacker.home)), (None, work)):
                for i in range(STALLED_PER_USER):
                    read_end, write_end = os.pipe()
                    proc = spawn_lxss(
                        service, "--import", f"stall-{i}", str(base / f"stall-{i}"), "-",
                        user=owner, stdin=read_end, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )  # fmt: skip
                    os.close(read_end)
                    stalled.append((proc, write_end))
            wait_for(lambda: _workers(service) >= before + 2 * STALLED_PER_USER, 120,
                     "the stalled imports' workers to start")  # fmt: skip
            # B's VM starts (it was not running), its distribution stops, its VM stops.
            assert b.ok("echo served", timeout=60).out == "served\n"
            service.ok("--terminate", b.name, user=OTHER, timeout=60)
            service.ok("--shutdown", user=OTHER, timeout=60)
            assert b.ok("echo again", timeout=60).out == "again\n"
        finally:
            for _, write_end in stalled:
                os.close(write_end)  # an empty archive: each import fails, cleanly
            for proc, _ in stalled:
                proc.wait(120)
