"""The initramfs of version 2: only what it takes to start mini_init.

Debian's kernel has virtio and ext4 as modules, so the initramfs carries the few that
reach the system disk (virtio-mmio, virtio-blk, ext4 and what they need, virtio-console
for the channel), a static busybox to load them and mount the disk, and /init, a short
script that does that and hands pid 1 to mini_init on the system disk's Python
(lxss.guest.vmboot). Every other module comes from the modules disk, later. The archive
is written by lxss's own cpio writer, uncompressed (under TCG, decompressing costs more
than reading), and cached per kernel release and content.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat
from typing import Final

from lxss.linux import kmod
from lxss.vm import sysdisk
from lxss.vm.cpio import CpioWriter

BUSYBOX: Final = "/bin/busybox"  # Debian's busybox-static
# The modules that reach the system disk and the channel, by name (their dependencies
# come from modules.dep).
BOOT_MODULES: Final = ("virtio_mmio", "virtio_console", "virtio_blk", "ext4")
SYSTEM_SERIAL: Final = sysdisk.LABEL  # the system disk's virtio-blk serial
DISK_WAIT_STEPS: Final = 1000  # of 10 ms: how long /init waits for the system disk

GUEST_ENTRY: Final = (
    f'import sys;sys.path.insert(0,"{sysdisk.GUEST_SOURCE}");'
    "from lxss.guest.vmboot import main;sys.exit(main(sys.argv[1:]))"
)

INIT_SCRIPT: Final = f"""#!/bin/busybox sh
# lxss's initramfs: load the boot modules, mount the system disk, start mini_init there.
b=/bin/busybox
say() {{ echo "lxss-initramfs: $*" > /dev/kmsg; }}
$b mount -t devtmpfs -o nosuid,noexec devtmpfs /dev
$b mount -t proc -o nosuid,nodev,noexec proc /proc
$b mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
for m in $($b cat /modules.load); do
    $b insmod "/modules/$m" || say "insmod $m failed"
done
disk=""
n=0
while [ -z "$disk" ]; do
    for block in /sys/block/vd*; do
        [ "$($b cat "$block/serial" 2>/dev/null)" = {SYSTEM_SERIAL} ] && disk=/dev/${{block##*/}}
    done
    [ -n "$disk" ] && break
    n=$((n + 1))
    [ $n -gt {DISK_WAIT_STEPS} ] && {{ say "no system disk (serial {SYSTEM_SERIAL})"; exit 1; }}
    $b usleep 10000
done
$b mount -t ext4 -o ro,noload "$disk" /system || {{ say "cannot mount $disk"; exit 1; }}
for m in dev proc sys; do $b mount --move /$m /system/$m; done

exec $b switch_root /system /usr/bin/python3 -I -S -c '{GUEST_ENTRY}' "$disk"
"""


def modules_for(modules_dir: str) -> list[str]:
    """The boot modules' files (relative to *modules_dir*), in load order."""
    with open(os.path.join(modules_dir, "modules.dep")) as f:
        table = kmod.parse_dependencies(f.read())
    return kmod.load_order(table, list(BOOT_MODULES))


def write(out: io.BufferedIOBase | io.BytesIO, modules_dir: str) -> None:
    """The initramfs, as a newc archive, to *out*."""
    archive = CpioWriter(out)  # type: ignore[arg-type]
    for directory in ("bin", "dev", "proc", "sys", "system", "modules"):
        archive.directory(directory)
    # The kernel opens /dev/console before running /init; devtmpfs is not mounted yet.
    archive.device("dev/console", stat.S_IFCHR, 5, 1)
    with open(BUSYBOX, "rb") as f:
        archive.file("bin/busybox", f.read(), 0o755)
    archive.file("init", INIT_SCRIPT.encode(), 0o755)
    order = modules_for(modules_dir)
    names = []
    for index, path in enumerate(order):
        name = f"{index:02d}-{os.path.basename(path)}"
        with open(os.path.join(modules_dir, path), "rb") as f:
            archive.file(f"modules/{name}", f.read())
        names.append(name)
    archive.file("modules.load", ("\n".join(names) + "\n").encode())
    archive.close()


def _key(modules_dir: str) -> str:
    digest = hashlib.sha256(INIT_SCRIPT.encode())
    for path in [BUSYBOX, *(os.path.join(modules_dir, p) for p in modules_for(modules_dir))]:
        status = os.stat(path)
        digest.update(f"{path} {status.st_size} {status.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def build(cache_dir: str, modules_dir: str) -> str:
    """The initramfs's path for the kernel whose modules are *modules_dir*, made now if
    not cached (written whole or not at all)."""
    image = os.path.join(cache_dir, f"initramfs-{_key(modules_dir)}.cpio")
    if os.path.exists(image):
        return image
    os.makedirs(cache_dir, mode=0o755, exist_ok=True)
    temporary = f"{image}.{os.getpid()}.tmp"
    try:
        with open(temporary, "wb") as f:
            write(f, modules_dir)
        os.chmod(temporary, 0o644)
        os.rename(temporary, image)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return image
