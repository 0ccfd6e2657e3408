"""Which accelerator version 2's VMs get: KVM where a probe boot shows it works, else TCG.

Opening /dev/kvm proves little: on the machines lxss is tested on it is a nested PVM
device, which runs only PVM-enabled guest kernels and takes a stock kernel nowhere
(stuck in its decompressor, or dead of emulation failures; see docs/version2.md). So
a short boot of the very kernel the VMs will run decides: a busybox initramfs prints a
marker and powers off; KVM is used if the marker arrives within PROBE_TIMEOUT. The
verdict is cached per kernel, QEMU and /dev/kvm, with the reason `lxss --status` shows.

Also measured once here: the host's TSC rate. Under TCG the guest's rdtsc reads the
host's TSC, and a microvm guest (no PIT to calibrate against) told the rate on its
command line (tsc_early_khz) boots without calibrating at all.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import mmap
import os
import select
import stat
import subprocess
import time
from dataclasses import asdict, dataclass
from typing import Final

from lxss.vm.cpio import CpioWriter

PROBE_TIMEOUT: Final = 12.0
PROBE_MARKER: Final = b"LXSS-KVM-PROBE-OK"
KVM_DEVICE: Final = "/dev/kvm"
BUSYBOX: Final = "/bin/busybox"
_CACHE_NAME: Final = "accelerator.json"


@dataclass(frozen=True)
class Verdict:
    accelerator: str  # "kvm" | "tcg"
    reason: str
    tsc_khz: int  # 0: not measured


def _probe_initramfs() -> bytes:
    out = io.BytesIO()
    archive = CpioWriter(out)
    archive.directory("dev")
    archive.device("dev/console", stat.S_IFCHR, 5, 1)
    archive.device("dev/ttyS0", stat.S_IFCHR, 4, 64)
    with open(BUSYBOX, "rb") as f:
        archive.file("busybox", f.read(), 0o755)
    script = (
        f"#!/busybox sh\n/busybox echo {PROBE_MARKER.decode()} > /dev/ttyS0\n/busybox poweroff -f\n"
    )
    archive.file("init", script.encode(), 0o755)
    archive.close()
    return out.getvalue()


def probe_kvm(kernel: str, scratch_dir: str, qemu: str = "qemu-system-x86_64") -> tuple[bool, str]:
    """(True, why) if *kernel* boots to userspace under KVM within PROBE_TIMEOUT."""
    try:
        fd = os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return False, f"{KVM_DEVICE} cannot be opened ({e.strerror})"
    os.close(fd)
    initrd = os.path.join(scratch_dir, f".kvm-probe-{os.getpid()}.cpio")
    with open(initrd, "wb") as f:
        f.write(_probe_initramfs())
    argv = [qemu, "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
            "-M", "microvm,acpi=on", "-accel", "kvm", "-cpu", "host", "-m", "128",
            "-kernel", kernel, "-initrd", initrd, "-serial", "stdio",
            "-append", "console=ttyS0 quiet panic=-1"]  # fmt: skip
    start = time.monotonic()
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT)  # fmt: skip
    except OSError as e:
        os.unlink(initrd)
        return False, f"QEMU cannot be started for the KVM probe: {e.strerror}"
    seen = b""
    ended = False
    try:
        assert process.stdout is not None
        deadline = start + PROBE_TIMEOUT
        while PROBE_MARKER not in seen and (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([process.stdout], [], [], left)
            if not ready:
                break
            data = os.read(process.stdout.fileno(), 65536)
            if not data:
                ended = True  # QEMU closed its output: it is gone
                break
            seen = (seen + data)[-65536:]
    finally:
        process.kill()
        process.wait()
        assert process.stdout is not None
        process.stdout.close()
        os.unlink(initrd)
    took = time.monotonic() - start
    if PROBE_MARKER in seen:
        return True, f"a probe boot under KVM reached userspace in {took:.1f} s"
    last = seen.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
    how = f"QEMU ended after {took:.1f} s" if ended else f"not in {PROBE_TIMEOUT:.0f} s"
    return False, (
        f"{KVM_DEVICE} is there but a probe boot under KVM did not reach userspace ({how}; "
        f"its last words: {last[0][:160]})"
    )


def measure_tsc_khz() -> int:
    """The host's TSC rate in kHz, rdtsc against CLOCK_MONOTONIC_RAW over 50 ms (0 where
    rdtsc cannot be run)."""
    # rdtsc; shl rdx, 32; or rax, rdx; ret
    code = bytes.fromhex("0f3148c1e2204809d0c3")
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except OSError:
        return 0
    with contextlib.closing(page):
        page.write(code)
        holder = ctypes.c_char.from_buffer(page)
        try:
            rdtsc = ctypes.CFUNCTYPE(ctypes.c_uint64)(ctypes.addressof(holder))
            rates = []
            for _ in range(3):
                t0, c0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW), rdtsc()
                time.sleep(0.05)
                t1, c1 = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW), rdtsc()
                rates.append((c1 - c0) * 1_000_000 // max(1, t1 - t0))
        finally:
            del holder
    return int(sorted(rates)[1])


def _identity(kernel: str, qemu: str) -> str:
    parts = []
    for path in (kernel, KVM_DEVICE, qemu):
        try:
            status = os.stat(path)
            parts.append(f"{path}:{status.st_ino}:{status.st_mtime_ns}:{status.st_rdev}")
        except OSError:
            parts.append(f"{path}:absent")
    return " ".join(parts)


def decide(kernel: str, cache_dir: str, qemu: str = "/usr/bin/qemu-system-x86_64") -> Verdict:
    """The accelerator for *kernel*, from the cache or a probe now (seconds, once).
    Blocking: call it off the event loop."""
    cache = os.path.join(cache_dir, _CACHE_NAME)
    identity = _identity(kernel, qemu)
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        with open(cache) as f:
            stored = json.load(f)
        if stored["identity"] == identity:
            return Verdict(**stored["verdict"])
    os.makedirs(cache_dir, mode=0o755, exist_ok=True)
    works, reason = probe_kvm(kernel, cache_dir, qemu)
    verdict = Verdict("kvm" if works else "tcg", reason, measure_tsc_khz())
    temporary = f"{cache}.{os.getpid()}.tmp"
    with open(temporary, "w") as f:
        json.dump({"identity": identity, "verdict": asdict(verdict)}, f)
    os.rename(temporary, cache)
    return verdict
