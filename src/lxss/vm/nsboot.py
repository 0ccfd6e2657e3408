"""Booting a namespace VM: the step between lxssd and mini_init.

What a hypervisor and a kernel do for WSL's utility VM, namespaces do here.
This process (started by the namespace backend with `spawn_mapped`) enters
the owner's user namespace, then new mount, pid, UTS, IPC and cgroup
namespaces (and a network namespace of its own unless networking is Mirrored),
and forks: the child is pid 1 of the new pid namespace — mini_init. This
process stays as its parent, so the backend owns one process whose exit is
the VM's end.

    nsboot SPEC_JSON SCRATCH CONTROL_FD NOTIFY_FD

SCRATCH is the VM's scratch directory (mini_init mounts a tmpfs of its own on it): a
boot parameter, as a kernel command line hands /init its settings. mini_init is given
nothing else: the rest of its settings come over its channel (EarlyConfig,
InitialConfig), as they do in a QEMU guest.
"""

from __future__ import annotations

import os
import resource
import signal
import sys

from lxss.guest import mini_init
from lxss.linux import syscalls as sc
from lxss.linux import userns
from lxss.linux.children import exit_code
from lxss.linux.proctitle import set_title
from lxss.vm.spec import VmSpec

NAMESPACES = (
    sc.CLONE_NEWNS | sc.CLONE_NEWPID | sc.CLONE_NEWUTS | sc.CLONE_NEWIPC | sc.CLONE_NEWCGROUP
)


PROGRAM_DESCRIPTOR_LIMIT = 1024


def _conventional_descriptor_limit() -> None:
    """Distributions start with the soft open-file limit a login session gets (1024:
    programs that use select() break above it), not the service's raised one; the hard
    limit stays, so a program may raise its own. The caller's `ulimit` values are not
    carried (docs/security.md, "Resource limits")."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, PROGRAM_DESCRIPTOR_LIMIT), hard))


def main(argv: list[str]) -> int:
    userns.die_with_parent()
    if len(argv) != 4:
        print("usage: nsboot SPEC_JSON SCRATCH CONTROL_FD NOTIFY_FD", file=sys.stderr)
        return 2
    _conventional_descriptor_limit()
    spec = VmSpec.from_json(argv[0])
    scratch, control_fd, notify_fd = argv[1], int(argv[2]), int(argv[3])
    userns.enter_user_namespace()
    # Not dumpable, whoever the owner is: distribution root must not reach the lxss roles'
    # memory, descriptors or executable through /proc (every role inherits this on fork).
    sc.set_dumpable(False)
    flags = NAMESPACES | (0 if spec.networking_mode.shares_host_network else sc.CLONE_NEWNET)
    sc.unshare(flags)
    # Nothing mounted in the VM may propagate back to the host's tree.
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    # The VM's scratch directory is ours to mount on; nobody else's tree changes.
    # Titled before the fork: mini_init's first act is mounting the VM's own /proc, in
    # which our /proc/self (that set_title reads) does not exist.
    set_title("lxss-vm")
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            sc.set_pdeathsig(signal.SIGKILL)
            code = mini_init.main(control_fd, notify_fd, scratch)
        except BaseException as e:  # pid 1 must never unwind into our caller's frames
            print(f"mini_init: fatal: {type(e).__name__}: {e}", file=sys.stderr)
        finally:
            os._exit(code)
    os.close(control_fd)
    os.close(notify_fd)
    # The service stops the VM by closing mini_init's channel; signals to us only
    # mean "go", and mini_init dies with us (its parent-death signal).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            return 1
        except InterruptedError:
            continue
    return exit_code(status)
