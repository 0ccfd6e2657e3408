"""pid 1 of version 2's VM, from the initramfs's hand-over to mini_init.

The initramfs (lxss.vm.initramfs) loaded the boot modules, mounted the system disk
read-only as / and exec'd this on its Python. Here: the VM's own mounts (/run, /tmp,
devpts, cgroup2), the modules disk at /modules and the modules the command line asks
for, the debug console, then the stream multiplexer (lxss.guest.muxport) on the
virtio-serial port the command line names, the two channels the service opens on it
(mini_init's control and notify), and mini_init over them. When mini_init returns
(the service closed its channel, WSL's way of shutting a VM down), the VM powers off.

    vmboot SYSTEM_DISK
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Final

from lxss.guest.muxport import MuxPort
from lxss.linux import kmod
from lxss.linux import syscalls as sc
from lxss.protocol.mux import SERVICE_MINI_INIT, SERVICE_NOTIFY

MODULES_MOUNT: Final = "/modules"
SCRATCH: Final = "/run/lxss"
PORT_WAIT: Final = 10.0  # seconds for the ports to appear once virtio_console is loaded
DISK_WAIT: Final = 10.0
CHANNEL_WAIT: Final = 120.0  # for the host to open mini_init's channels (it boots us first)


def kernel_arguments(text: str) -> dict[str, str]:
    """The `lxss.*` keys of a kernel command line, without the prefix."""
    found = {}
    for word in text.split():
        name, _, value = word.partition("=")
        if name.startswith("lxss."):
            found[name[len("lxss.") :]] = value
    return found


def _log(text: str) -> None:
    with contextlib.suppress(OSError), open("/dev/kmsg", "w") as kmsg:
        kmsg.write(f"lxss-vmboot: {text}\n")


def _mount_basics() -> None:
    flags = sc.MS_NOSUID | sc.MS_NODEV
    sc.mount("tmpfs", "/run", "tmpfs", flags, "mode=755,size=16m")
    sc.mount("tmpfs", "/tmp", "tmpfs", flags, "mode=1777")
    os.makedirs("/dev/pts", exist_ok=True)
    sc.mount("devpts", "/dev/pts", "devpts", sc.MS_NOSUID | sc.MS_NOEXEC,
             "newinstance,ptmxmode=0666,mode=620")  # fmt: skip
    with contextlib.suppress(FileNotFoundError):
        os.unlink("/dev/ptmx")
    os.symlink("pts/ptmx", "/dev/ptmx")
    os.makedirs("/dev/shm", exist_ok=True)
    sc.mount("tmpfs", "/dev/shm", "tmpfs", flags, "mode=1777")
    sc.mount("cgroup2", "/sys/fs/cgroup", "cgroup2", flags | sc.MS_NOEXEC, "nsdelegate")


def block_device(serial: str, timeout: float) -> str:
    """/dev/vdX of the virtio disk whose serial is *serial* (the document's identifier)."""
    deadline = time.monotonic() + timeout
    while True:
        for name in sorted(os.listdir("/sys/block")):
            with contextlib.suppress(OSError), open(f"/sys/block/{name}/serial") as f:
                if f.read().strip() == serial:
                    return f"/dev/{name}"
        if time.monotonic() > deadline:
            raise FileNotFoundError(f"no disk with the identifier {serial}")
        time.sleep(0.01)


def serial_port(name: str, timeout: float) -> str:
    """/dev/vportNpM of the virtio-serial port named *name* by the VM's document."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(FileNotFoundError):
            for port in sorted(os.listdir("/sys/class/virtio-ports")):
                with (
                    contextlib.suppress(OSError),
                    open(f"/sys/class/virtio-ports/{port}/name") as f,
                ):
                    if f.read().strip() == name:
                        return f"/dev/{port}"
        if time.monotonic() > deadline:
            raise FileNotFoundError(f"no virtio-serial port named {name}")
        time.sleep(0.01)


def load_modules(names: list[str]) -> None:
    """Mount the modules disk and load *names* (with their dependencies) from it."""
    device = block_device("lxss-modules", DISK_WAIT)
    sc.mount(device, MODULES_MOUNT, "ext4", sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV,
             "noload")  # fmt: skip
    with open(os.path.join(MODULES_MOUNT, "modules.dep")) as f:
        table = kmod.parse_dependencies(f.read())
    for path in kmod.load_order(table, names):
        kmod.load(os.path.join(MODULES_MOUNT, path))


def _debug_console(port: str) -> None:
    """A root shell on *port*, outside every distribution, one after another for as long as
    the VM runs (WSL's debug console; `lxss --debug-shell`). The port is the owner's alone
    on the host (a socket in their 0700 runtime directory), and the VM is theirs."""
    device = os.open(port, os.O_RDWR | os.O_CLOEXEC)  # kept open: a closed port loses data
    if os.fork() != 0:
        os.close(device)
        return
    code = 1
    try:
        os.setsid()
        sc.set_process_name("lxss-debugcon")
        environment = {"PATH": "/usr/bin:/bin", "HOME": "/", "TERM": "dumb"}
        while True:
            shell = os.fork()
            if shell == 0:
                for target in (0, 1, 2):
                    os.dup2(device, target)
                os.execve("/usr/bin/busybox", ["sh"], environment)
            os.waitpid(shell, 0)
    finally:
        os._exit(code)


def main(argv: list[str]) -> int:
    try:
        with open("/proc/cmdline") as f:
            arguments = kernel_arguments(f.read())
        _mount_basics()
        os.makedirs(SCRATCH, mode=0o700, exist_ok=True)
        modules = [m for m in arguments.get("modules", "").split(",") if m]
        if modules:
            load_modules(modules)
        # The stream multiplexer on the port; the host opens mini_init's two channels on it.
        port = MuxPort.start(serial_port(arguments.get("mux", "lxss.mux"), PORT_WAIT))
        control = port.accept(SERVICE_MINI_INIT, CHANNEL_WAIT).detach()
        notify = port.accept(SERVICE_NOTIFY, CHANNEL_WAIT).detach()
        port.close()  # no other service's channel is taken: the rest arrive attached
        if arguments.get("debug"):
            _debug_console(serial_port(arguments["debug"], PORT_WAIT))
    except (OSError, KeyError, TimeoutError, ConnectionError) as e:
        _log(f"cannot start: {e}")
        sc.power_off()
        return 1
    from lxss.guest import mini_init

    code = 1
    try:
        code = mini_init.main(control, notify, SCRATCH, own_kernel=True)
    finally:
        _log(f"mini_init returned {code}; powering off")
        sys.stdout.flush()
        os.sync()
        sc.power_off()
    return code
