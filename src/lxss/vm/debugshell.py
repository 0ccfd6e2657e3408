"""A shell in a namespace VM, outside every distribution (WSL's `wsl --debug-shell`).

Started by the service, as root, for root only: this process joins the namespaces of the
VM's boot process (nsboot: the owner's user namespace, the VM's mount, UTS, IPC, network
and cgroup namespaces, and the pid namespace mini_init is pid 1 of), becomes the VM's
root, and forks the shell there. It waits for the shell and exits with its status, so the
service owns one process whose end is the shell's.

    debugshell NSBOOT_PID GO_FD

It proceeds once the service has written a byte to GO_FD: by then it is in the VM's
cgroup, and so is the shell it forks.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from lxss.linux import syscalls as sc
from lxss.linux.children import exit_code

# Joined in this order: the user namespace first, since it owns the others.
NAMESPACES = (
    ("user", sc.CLONE_NEWUSER),
    ("mnt", sc.CLONE_NEWNS),
    ("uts", sc.CLONE_NEWUTS),
    ("ipc", sc.CLONE_NEWIPC),
    ("net", sc.CLONE_NEWNET),
    ("cgroup", sc.CLONE_NEWCGROUP),
    ("pid_for_children", sc.CLONE_NEWPID),
)
SHELLS = ("/bin/bash", "/bin/sh")
PROMPT = "lxss-vm# "


def _join(pid: int) -> None:
    # A namespace the VM shares with the host (its network, unless it has its own) is ours
    # already; joining it after the user namespace would take rights we no longer have.
    files = [
        (os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC), kind)
        for name, kind in NAMESPACES
        if os.stat(f"/proc/{pid}/ns/{name}").st_ino
        != os.stat(f"/proc/self/ns/{name.removesuffix('_for_children')}").st_ino
    ]
    try:
        for fd, kind in files:
            sc.setns(fd, kind)
    finally:
        for fd, _ in files:
            os.close(fd)
    # The VM's root: uid and gid 0 of its user namespace (the owner's mapped range).
    with contextlib.suppress(PermissionError):  # setgroups may be denied in the namespace
        os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: debugshell NSBOOT_PID GO_FD", file=sys.stderr)
        return 2
    pid, go = int(argv[0]), int(argv[1])
    if os.read(go, 1) != b"1":
        return 1  # the service changed its mind
    os.close(go)
    try:
        _join(pid)
    except OSError as e:
        print(f"lxss: cannot enter the utility VM: {e}", file=sys.stderr)
        return 255
    shell = next((s for s in SHELLS if os.access(s, os.X_OK)), SHELLS[-1])
    environment = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "TERM": os.environ.get("TERM", "dumb"),
        "PS1": PROMPT,
    }
    child = os.fork()  # the first process of ours in the VM's pid namespace
    if child == 0:
        try:
            sc.set_pdeathsig(signal.SIGKILL)  # the service ends the shell by ending us
            os.chdir("/")
            interactive = ["-i"] if os.isatty(0) else []  # a script on a pipe: no prompts
            os.execve(shell, [shell, *interactive], environment)
        except OSError as e:
            print(f"lxss: {shell}: {e.strerror}", file=sys.stderr)
        finally:
            os._exit(127)
    _, status = os.waitpid(child, 0)
    return exit_code(status)
