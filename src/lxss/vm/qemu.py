"""A version 2 utility VM: QEMU booting Debian's kernel, mini_init on the system disk.

`boot_files` readies, once and cached, what every VM boots (lxss.vm.kernel,
lxss.vm.initramfs, lxss.vm.sysdisk, lxss.vm.accel); `make_document` writes the VM's
document (lxss.vm.document) for one owner; `QemuVm.start` runs QEMU on exactly that
document, as the owner and in QEMU's own seccomp sandbox, then has the first exchange
with mini_init (GuestCapabilities, EarlyConfig, InitialConfig with 4 KiB of entropy)
over the virtio-serial control port. A QEMU that ends, however, is noticed at once
(its pidfd): the links close and `running()` is false.

One virtio-serial port carries every channel, multiplexed (lxss.vm.muxlink on this
side, lxss.guest.muxport in the guest); mini_init's control and notify channels are the
first two. Distributions do not run in the VM yet (mini_init's LaunchInit still wants
a tree the service mounted), so the service offers no version 2: it still refuses
`--version 2`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from typing import Final

from lxss.aio import wait_readable, wait_reaped
from lxss.bootstrap import bootstrap_argv
from lxss.linux import userns
from lxss.linux.confine import off_loop
from lxss.protocol import messages as m
from lxss.protocol.mux import SERVICE_MINI_INIT, SERVICE_NOTIFY
from lxss.vm import accel, initramfs, kernel, sysdisk
from lxss.vm.console import Console
from lxss.vm.document import Disk, SerialPort, VmDocument, qemu_command_line
from lxss.vm.link import GuestLink
from lxss.vm.muxlink import MuxLink

log = logging.getLogger(__name__)

QEMU: Final = "/usr/bin/qemu-system-x86_64"
DOCUMENT_NAME: Final = "vm.json"
STOP_TIMEOUT: Final = 10.0
ENTROPY_BYTES: Final = 4096  # what WSL's service sends in InitialConfig
MUX_PORT: Final = "lxss.mux"  # one port, every channel multiplexed (lxss.vm.muxlink)
DEBUG_PORT: Final = "lxss.debug"
# Loaded from the modules disk at boot (beyond the initramfs's): the balloon, for memory
# given back to the host.
LATE_MODULES: Final = ("virtio_balloon",)


class QemuStartError(Exception):
    pass


@dataclass(frozen=True)
class BootFiles:
    kernel: kernel.Kernel
    initrd: str
    system_disk: str
    modules_disk: str
    verdict: accel.Verdict


def boot_files(cache_dir: str, kernel_image: str = "", modules_dir: str = "") -> BootFiles:
    """Everything a VM boots, made now where not cached (seconds the first time; the
    modules disk, tens). Blocking: call it off the event loop."""
    chosen = kernel.prepare(kernel_image or kernel.default_image(), cache_dir)
    modules = kernel.modules_directory(chosen.release, modules_dir)
    return BootFiles(
        kernel=chosen,
        initrd=initramfs.build(cache_dir, modules),
        system_disk=sysdisk.build(cache_dir),
        modules_disk=kernel.modules_disk(modules, cache_dir),
        verdict=accel.decide(chosen.path, cache_dir, QEMU),
    )


def kernel_command_line(files: BootFiles, extra: str = "") -> str:
    """The guest kernel's command line: console, no reboot on panic, the TSC rate (a
    microvm guest has no PIT to calibrate against, and under TCG its TSC is the host's),
    the lxss.* keys lxss.guest.vmboot reads, then the user's `[wsl2] kernelCommandLine`."""
    words = ["console=ttyS0", "quiet", "panic=-1", "pty.legacy_count=0", "random.trust_cpu=on"]
    if files.verdict.accelerator == "tcg" and files.verdict.tsc_khz:
        words += [f"tsc_early_khz={files.verdict.tsc_khz}", "tsc=reliable"]
    words += [f"lxss.mux={MUX_PORT}", f"lxss.debug={DEBUG_PORT}",
              f"lxss.modules={','.join(LATE_MODULES)}"]  # fmt: skip
    return " ".join(words + extra.split())


def make_document(
    files: BootFiles,
    directory: str,
    memory_mib: int,
    processors: int,
    command_line_extra: str = "",
    disks: tuple[Disk, ...] = (),
) -> VmDocument:
    return VmDocument(
        kernel=files.kernel.path,
        initrd=files.initrd,
        command_line=kernel_command_line(files, command_line_extra),
        memory_mib=memory_mib,
        processors=processors,
        accelerator=files.verdict.accelerator,
        accelerator_reason=files.verdict.reason,
        disks=(
            Disk(initramfs.SYSTEM_SERIAL, files.system_disk, "ro", "system"),
            Disk(kernel.MODULES_LABEL, files.modules_disk, "ro", "modules"),
            *disks,
        ),
        serial_ports=(
            SerialPort(MUX_PORT, os.path.join(directory, "mux.sock")),
            SerialPort(DEBUG_PORT, os.path.join(directory, "debug.sock")),
        ),
        free_page_reporting=True,
        notes={
            "kernel_source": files.kernel.source,
            "pvh": files.kernel.pvh,
            "release": files.kernel.release,
        },
    )


def _fresh_directory(directory: str, uid: int, gid: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(directory)
    os.makedirs(os.path.dirname(directory), 0o755, exist_ok=True)
    os.mkdir(directory, 0o700)
    os.chown(directory, uid, gid)


async def _connect(path: str, process: subprocess.Popen[bytes], deadline: float) -> socket.socket:
    """Connect to the Unix socket QEMU listens on at *path*, once it exists."""
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(path)
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
        if process.poll() is not None:
            raise QemuStartError(
                f"QEMU ended (status {process.returncode}) before its ports opened"
            )
        if time.monotonic() > deadline:
            raise QemuStartError(f"QEMU did not open {path} in time")
        await asyncio.sleep(0.02)


def spawn(
    document: VmDocument, directory: str, uid: int, gid: int, console: int
) -> subprocess.Popen[bytes]:
    """QEMU on *document*, as uid:gid in a session of its own, its output on *console*,
    killed by the kernel if the service dies (lxss.vm.qemuexec: the launcher execs
    QEMU, so the process is QEMU's)."""
    argv = bootstrap_argv("lxss.vm.qemuexec", str(uid), str(gid),
                          *qemu_command_line(document, QEMU))  # fmt: skip
    return subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=console, stderr=console, cwd=directory,
        start_new_session=True,
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C", userns.PARENT_ENV: str(os.getpid())},
    )  # fmt: skip


class QemuVm:
    """A running QEMU VM; its starter owns it and must `stop` it."""

    version = 2

    def __init__(self, document: VmDocument, directory: str, process: subprocess.Popen[bytes],
                 console_fd: int) -> None:  # fmt: skip
        self.document = document
        self.directory = directory
        self.process = process
        self.mux: MuxLink | None = None
        self.control: GuestLink | None = None
        self.notify: GuestLink | None = None
        self.kernel_version = ""
        self.console = Console(console_fd, f"vm2 pid {process.pid}")
        self._pidfd = os.pidfd_open(process.pid)  # before anyone may reap it
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    def __repr__(self) -> str:
        return f"<QemuVm pid={self.process.pid} {'running' if self.running() else 'stopped'}>"

    def running(self) -> bool:
        return self.process.poll() is None

    async def _watch(self) -> None:
        """Close the links the moment QEMU ends, so whoever waits on them knows at once.
        (By the pidfd opened at the start: whoever reaps QEMU first, this still wakes.)"""
        await wait_readable(self._pidfd, None)
        self.process.poll()
        for link in (self.control, self.notify):
            if link is not None:
                link.close()

    @classmethod
    async def start(cls, document: VmDocument, directory: str, uid: int, gid: int,
                    boot_timeout: float) -> QemuVm:  # fmt: skip
        """Boot *document* as uid:gid with *directory* (made afresh, the owner's) for its
        document and sockets; raises QemuStartError leaving nothing behind."""
        await off_loop(lambda: _fresh_directory(directory, uid, gid))
        with open(os.path.join(directory, DOCUMENT_NAME), "w") as f:
            f.write(document.to_json())
        console_r, console_w = os.pipe2(os.O_CLOEXEC)
        try:
            process = spawn(document, directory, uid, gid, console_w)
        except OSError as e:
            os.close(console_r)
            await off_loop(lambda: shutil.rmtree(directory, ignore_errors=True))
            raise QemuStartError(f"QEMU cannot be started: {e}") from None
        finally:
            os.close(console_w)
        vm = cls(document, directory, process, console_r)
        try:
            await vm._first_contact(boot_timeout)
        except BaseException as e:
            last = "; ".join(vm.console.last_lines[-3:])
            await vm.stop(force=True)
            if isinstance(e, (OSError, EOFError, ValueError, TimeoutError, QemuStartError)):
                console = f" (console: {last})" if last else ""
                raise QemuStartError(
                    f"the VM did not boot: {e or type(e).__name__}{console}"
                ) from None
            raise
        return vm

    async def _first_contact(self, boot_timeout: float) -> None:
        deadline = time.monotonic() + boot_timeout
        ports = {p.name: p.socket for p in self.document.serial_ports}
        stream = await _connect(ports[MUX_PORT], self.process, deadline)
        # Nothing is sent until the guest's end has spoken: what the host writes to a port
        # the guest has not opened yet is lost (its HELLO would be).
        try:
            await wait_readable(stream.fileno(), max(0.1, deadline - time.monotonic()))
        except BaseException:
            stream.close()
            raise
        self.mux = MuxLink(stream.detach(), f"vm2 pid {self.process.pid}")
        await self.mux.wait_connected(max(0.1, deadline - time.monotonic()))
        self.control = GuestLink(self.mux.open(SERVICE_MINI_INIT), "mini_init")
        self.notify = GuestLink(self.mux.open(SERVICE_NOTIFY), "notify")
        capabilities, _ = await self.control.receive(
            (m.MiniInitGuestCapabilities,), timeout=max(0.1, deadline - time.monotonic())
        )
        assert isinstance(capabilities, m.MiniInitGuestCapabilities)
        self.kernel_version = capabilities.kernel_version or ""
        early = m.MiniInitEarlyConfig(
            hostname="localhost",
            memory_bytes=self.document.memory_mib << 20,
            processors=self.document.processors,
            flags=0,
            networking_mode=m.NetworkingMode.NONE,
        )
        result, _ = await self.control.transaction(early, m.ResultInt32)
        if result.value != 0:
            log.warning("vm2 pid %d: gns failed: %s", self.process.pid, os.strerror(result.value))
        await self.control.send(
            m.MiniInitInitialConfig(
                networking_mode=m.NetworkingMode.NONE, entropy=os.urandom(ENTROPY_BYTES)
            )
        )

    async def wait(self, timeout: float) -> bool:
        """True once QEMU has exited (and been reaped)."""
        return await wait_reaped(self.process, timeout)

    async def stop(self, force: bool) -> None:
        """Shut the VM down (the guest powers off when mini_init's channel closes; after
        STOP_TIMEOUT, or at once when *force*, QEMU is killed); afterwards nothing of it
        remains: no process, socket, document or pipe."""
        for link in (self.control, self.notify):
            if link is not None:
                link.close()
        if force or not await self.wait(STOP_TIMEOUT):
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.wait(STOP_TIMEOUT)
        self._watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watcher
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1
        if self.mux is not None:
            await self.mux.close()
        self.console.close()
        await off_loop(lambda: shutil.rmtree(self.directory, ignore_errors=True))
