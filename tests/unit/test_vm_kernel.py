"""The guest kernel (lxss.vm.kernel): a bzImage's release and payload, its ELF's PVH note,
the decompressed kernel cached once; and the boot modules' order (lxss.linux.kmod)."""

from __future__ import annotations

import gzip
import lzma
import os
import struct
from pathlib import Path

import pytest

from lxss.linux import kmod
from lxss.vm import kernel


def _elf(pvh: bool) -> bytes:
    """A 64-bit ELF with one PT_NOTE segment holding a Xen note (type 18 = PVH entry, or
    another type)."""
    note_name = b"Xen\0"
    note = struct.pack("<III", len(note_name), 4, 18 if pvh else 6) + note_name + b"\0\0\0\1"
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x20, 64)  # e_phoff
    struct.pack_into("<HH", header, 0x36, 56, 1)  # e_phentsize, e_phnum
    phdr = struct.pack("<IIQQQQQQ", 4, 0, 64 + 56, 0, 0, len(note), len(note), 4)
    return bytes(header) + phdr + note + b"\0" * 64


def _bzimage(payload: bytes, release: str = "6.1.0-99-amd64") -> bytes:
    setup_sectors = 3
    image = bytearray((setup_sectors + 1) * 512)
    image[0x1F1] = setup_sectors
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", image, 0x206, 0x20F)
    version = f"{release} (builder@example) #1 SMP".encode() + b"\0"
    struct.pack_into("<H", image, 0x20E, 0x300 - 0x200)
    image[0x300 : 0x300 + len(version)] = version
    struct.pack_into("<II", image, 0x248, 16, len(payload))
    return bytes(image) + b"\0" * 16 + payload + struct.pack("<I", 0)


@pytest.mark.parametrize("compress", [lzma.compress, gzip.compress], ids=["xz", "gzip"])
def test_the_payload_decompresses_to_the_elf(compress: object) -> None:
    elf = _elf(pvh=True)
    image = _bzimage(compress(elf))  # type: ignore[operator]
    assert kernel.image_release(image) == "6.1.0-99-amd64"
    assert kernel.decompress(image) == elf
    assert kernel.decompress(elf) == elf  # already a vmlinux


def test_the_pvh_note_is_found_only_where_it_is() -> None:
    assert kernel.has_pvh_note(_elf(pvh=True))
    assert not kernel.has_pvh_note(_elf(pvh=False))
    assert not kernel.has_pvh_note(b"\x7fELF" + b"\0" * 60)


@pytest.mark.parametrize(
    "image",
    [b"MZ" + b"\0" * 1024, _bzimage(b"\x01\x02\x03\x04\x05\x06" * 4), _bzimage(b"")],
    ids=["not-a-bzimage", "unknown-compression", "empty-payload"],
)
def test_a_kernel_that_cannot_be_used_says_why(image: bytes) -> None:
    with pytest.raises(kernel.KernelError):
        kernel.decompress(image)


def test_prepare_decompresses_once_and_keeps_a_kernel_without_pvh_as_it_is(
    tmp_path: Path,
) -> None:
    with_pvh = tmp_path / "vmlinuz-a"
    with_pvh.write_bytes(_bzimage(lzma.compress(_elf(pvh=True))))
    cache = tmp_path / "cache"
    first = kernel.prepare(str(with_pvh), str(cache))
    assert first.pvh and first.release == "6.1.0-99-amd64" and first.source == str(with_pvh)
    assert Path(first.path).read_bytes() == _elf(pvh=True)
    stamp = os.stat(first.path).st_mtime_ns
    assert kernel.prepare(str(with_pvh), str(cache)) == first
    assert os.stat(first.path).st_mtime_ns == stamp  # not made again
    without = tmp_path / "vmlinuz-b"
    without.write_bytes(_bzimage(lzma.compress(_elf(pvh=False))))
    plain = kernel.prepare(str(without), str(cache))
    assert not plain.pvh and plain.path == str(without)
    assert [p for p in os.listdir(cache) if p.endswith(".tmp")] == []


def test_an_unreadable_kernel_is_named(tmp_path: Path) -> None:
    with pytest.raises(kernel.KernelError, match="missing"):
        kernel.prepare(str(tmp_path / "missing"), str(tmp_path))


@pytest.mark.skipif(not os.path.exists("/vmlinuz"), reason="no Debian kernel installed here")
def test_debians_kernel_decompresses_to_a_pvh_elf() -> None:
    with open(os.path.realpath("/vmlinuz"), "rb") as f:
        image = f.read()
    assert kernel.image_release(image) in os.path.realpath("/vmlinuz")
    assert kernel.has_pvh_note(kernel.decompress(image))


_VIRTIO = "kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko"
MODULES_DEP = f"""\
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/lib/crc16.ko:
kernel/crypto/crc32c_generic.ko:
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/block/virtio_blk.ko: {_VIRTIO}
kernel/drivers/char/virtio_console.ko: {_VIRTIO}
kernel/drivers/char/hw_random/virtio-rng.ko: {_VIRTIO}
"""


def test_modules_load_after_what_they_need_each_once() -> None:
    table = kmod.parse_dependencies(MODULES_DEP)
    order = kmod.load_order(table, ["virtio_blk", "virtio-console", "ext4", "virtio_rng"])
    names = [kmod.module_name(p) for p in order]
    assert len(names) == len(set(names))
    assert names.index("virtio_ring") < names.index("virtio") < names.index("virtio_blk")
    assert names.index("crc32c_generic") < names.index("jbd2") < names.index("ext4")  # softdep
    assert names[-1] == "virtio_rng" and "virtio_console" in names


def test_an_unknown_module_is_named() -> None:
    with pytest.raises(KeyError, match="nosuch"):
        kmod.load_order(kmod.parse_dependencies(MODULES_DEP), ["nosuch"])
