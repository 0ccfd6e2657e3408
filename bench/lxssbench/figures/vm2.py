"""Version 2's utility VM on its own: QEMU start to mini_init's first message, and what an
idle VM costs the host before and after the guest gives freed memory back.

Measured through lxss.vm.qemu directly, as tests/integration/test_vm2_boot.py drives it:
the service does not offer version 2 yet (the v2-boot and v2-run figures say so), but the
VM it will run is real and its costs are these.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

from lxss.vm import qemu

from ..harness import Figure, Runner
from ..lab import Lab
from ..proc import Unavailable
from .memory import pss_kib
from .registry import Spec, figure, result

CACHE = "/var/cache/lxss/vm"
NOBODY = 65534  # QEMU runs as the VM's owner; the bench's VM belongs to nobody
FILL_MIB = 200


class _Vms:
    """Boots and stops VMs on one event loop of its own (a VM lives across two samples)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.root = Path(f"/run/lxss-bench-vm2-{os.getpid()}")
        self.vm: qemu.QemuVm | None = None
        self._files: qemu.BootFiles | None = None

    def boot(self) -> tuple[qemu.QemuVm, float]:
        if not os.path.exists(qemu.QEMU):
            raise Unavailable(f"{qemu.QEMU} is missing (./setup.sh deps installs it)")
        if self._files is None:
            try:
                self._files = qemu.boot_files(CACHE)
            except Exception as e:  # the reason is the row's
                raise Unavailable(f"version 2's boot files cannot be made: {e}") from None
        files = self._files
        self.root.mkdir(mode=0o755, exist_ok=True)
        directory = str(self.root / "vm")
        document = qemu.make_document(files, directory, 512, 1)
        started = time.monotonic()
        try:
            vm = self.loop.run_until_complete(
                qemu.QemuVm.start(document, directory, NOBODY, NOBODY, 120.0)
            )
        except qemu.QemuStartError as e:
            raise Unavailable(str(e)) from None
        return vm, time.monotonic() - started

    def run(self, vm: qemu.QemuVm, command: str) -> None:
        path = next(p.socket for p in vm.document.serial_ports if p.name == qemu.DEBUG_PORT)

        async def console() -> None:
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(f"{command}\necho LXSS-BENCH-DONE\n".encode())
            output = b""
            while b"LXSS-BENCH-DONE\n" not in output:
                chunk = await asyncio.wait_for(reader.read(65536), 120)
                if not chunk:
                    raise Unavailable(f"the VM's debug console closed during {command!r}")
                output += chunk
            writer.close()

        self.loop.run_until_complete(console())

    def stop(self, vm: qemu.QemuVm) -> None:
        self.loop.run_until_complete(vm.stop(force=False))

    def close(self) -> None:
        if self.vm is not None:
            self.stop(self.vm)
            self.vm = None
        self.loop.close()
        shutil.rmtree(self.root, ignore_errors=True)


@figure(
    "v2-vm-boot",
    "Version 2: the VM's boot (QEMU start to mini_init's GuestCapabilities)",
    unit="s",
    better="lower",
    what="lxss.vm.qemu boots Debian's kernel (PVH vmlinux, microvm, TCG or KVM as probed) "
    "with lxss's initramfs and system disk, one vCPU, 512 MiB, until mini_init's first "
    "message arrives over virtio-serial; then a clean power-off (untimed).",
)
def vm_boot(lab: Lab, spec: Spec) -> Figure:
    vms = _Vms()

    def measure() -> float:
        vm, took = vms.boot()
        vms.stop(vm)
        return took

    try:
        rows = [Runner("lxss version 2 VM", "QemuVm.start (lxss.vm.qemu)", measure, subject=True)]
        return result(spec, rows, runs=max(1, lab.settings.cold_runs // 5), warmup=0)
    finally:
        vms.close()


@figure(
    "v2-vm-memory",
    "Version 2: an idle VM's memory (PSS of QEMU), before and after reclaim",
    unit="MiB",
    better="lower",
    what=f"QEMU's PSS (guest RAM is a shared memfd, so it counts) 2 s after boot, then after "
    f"the guest wrote {FILL_MIB} MiB to a tmpfs and removed it: free page reporting "
    "(virtio-balloon) hands the freed pages back, and the host punches them out.",
)
def vm_memory(lab: Lab, spec: Spec) -> Figure:
    vms = _Vms()

    def idle() -> float:
        vms.vm, _ = vms.boot()
        time.sleep(2.0)
        return pss_kib(vms.vm.process.pid) / 1024

    def reclaimed() -> float:
        vm = vms.vm
        if vm is None:
            raise Unavailable("the idle sample's VM did not boot")
        pid = vm.process.pid
        vms.run(vm, f"dd if=/dev/zero of=/dev/shm/fill bs=1M count={FILL_MIB} 2>/dev/null")
        filled = pss_kib(pid)
        vms.run(vm, "rm /dev/shm/fill")
        deadline = time.monotonic() + 30.0
        while pss_kib(pid) > filled - (FILL_MIB * 3 // 4) * 1024 and time.monotonic() < deadline:
            time.sleep(0.25)
        value = pss_kib(pid) / 1024
        vms.stop(vm)
        vms.vm = None
        return value

    try:
        rows = [
            Runner("idle, after boot", "QEMU PSS 2 s after GuestCapabilities", idle, subject=True),
            Runner(
                f"after {FILL_MIB} MiB touched and freed",
                "dd … of=/dev/shm/fill; rm; QEMU PSS once it falls (≤ 30 s)",
                reclaimed,
            ),
        ]
        return result(spec, rows, runs=lab.settings.memory_runs, warmup=0)
    finally:
        vms.close()
