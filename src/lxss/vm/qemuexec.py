"""QEMU's launcher: become the VM's owner, arm death with lxssd, exec QEMU.

A QEMU must not outlive the service that owns its VM (a killed lxssd would leave VMs
nobody can reach). The parent-death signal does that, but it is cleared when a process
changes its ids, so it cannot be set before Popen's user= switch: this step, run as
root by the service, drops to the owner first, then arms it (and checks that lxssd has
not died meanwhile), then execs QEMU, which keeps it.

    qemuexec UID GID QEMU_ARGV...
"""

from __future__ import annotations

import os

from lxss.linux import userns


def main(argv: list[str]) -> int:
    uid, gid, command = int(argv[0]), int(argv[1]), argv[2:]
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    userns.die_with_parent()  # SIGKILL when lxssd dies; gone already: exit now
    os.execv(command[0], command)
