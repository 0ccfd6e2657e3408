"""The guest kernel of version 2: Debian's linux-image-amd64, made quick to boot.

Under TCG the bzImage's own xz decompressor is the slowest part of a boot (about 6 s
to userspace, against 2 s for the same kernel entered uncompressed; see
docs/version2.md). So the kernel is decompressed here once, in Python, into the ELF
`vmlinux` it carries, and cached by the image's hash; QEMU boots that ELF through its
PVH entry note (CONFIG_PVH, which Debian's kernel has). A kernel without the note is
booted as it is, compressed, and the VM's document says so.

The bzImage layout read here is the x86 boot protocol's (Documentation/arch/x86/boot.rst):
the setup header at 0x1f1, "HdrS" at 0x202, the version string's offset at 0x20e, the
compressed payload's offset and length at 0x248/0x24c relative to the protected-mode
code, which starts after (setup_sects + 1) sectors of 512 bytes.
"""

from __future__ import annotations

import glob
import hashlib
import lzma
import os
import re
import struct
import subprocess
import zlib
from dataclasses import dataclass
from typing import Final

DEFAULT_IMAGE_LINK: Final = "/vmlinuz"  # Debian's link to the newest installed kernel
MODULES_ROOT: Final = "/lib/modules"

_ELF_MAGIC: Final = b"\x7fELF"
_XEN_ELFNOTE_PHYS32_ENTRY: Final = 18  # the PVH entry point's note (xen/interface/elfnote.h)
_PT_NOTE: Final = 4


class KernelError(Exception):
    """A kernel that cannot be used; the message says which file and why."""


@dataclass(frozen=True)
class Kernel:
    """What the VM boots: *path* (a PVH vmlinux when *pvh*, else the image as given)."""

    path: str
    release: str  # uname -r, for its modules; "" when the image does not say
    pvh: bool
    source: str  # the image it was made from


def image_release(image: bytes) -> str:
    """uname -r of a bzImage (its version string's first word), or "" when it has none."""
    if len(image) < 0x264 or image[0x202:0x206] != b"HdrS":
        return ""
    (offset,) = struct.unpack_from("<H", image, 0x20E)
    start = offset + 0x200
    end = image.find(b"\0", start, start + 256)
    if offset == 0 or end < 0:
        return ""
    words = image[start:end].decode("ascii", "replace").split()
    return words[0] if words else ""


def _payload(image: bytes) -> bytes:
    """The compressed kernel inside a bzImage."""
    if len(image) < 0x264 or image[0x202:0x206] != b"HdrS":
        raise KernelError("not a bzImage (no HdrS setup header)")
    (protocol,) = struct.unpack_from("<H", image, 0x206)
    if protocol < 0x208:
        raise KernelError(f"boot protocol {protocol:#x} is older than 2.08 (no payload fields)")
    setup_sectors = image[0x1F1] or 4
    offset, length = struct.unpack_from("<II", image, 0x248)
    start = (setup_sectors + 1) * 512 + offset
    if length == 0 or start + length > len(image):
        raise KernelError("the bzImage's payload lies outside the file")
    return image[start : start + length]


def decompress(image: bytes) -> bytes:
    """The ELF vmlinux inside *image* (a bzImage compressed with xz, gzip or zstd)."""
    if image.startswith(_ELF_MAGIC):
        return image
    payload = _payload(image)
    try:
        if payload.startswith(b"\xfd7zXZ\0"):
            # The payload ends with the decompressed size (4 bytes), past the xz stream.
            elf = lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(payload)
        elif payload.startswith(b"\x1f\x8b"):
            elf = _gunzip(payload)
        elif payload.startswith(b"\x28\xb5\x2f\xfd"):
            elf = _unzstd(payload)
        else:
            raise KernelError(f"unknown compression (payload starts {payload[:6].hex()})")
    except (lzma.LZMAError, OSError, EOFError) as e:
        raise KernelError(f"cannot decompress the kernel: {e}") from None
    if not elf.startswith(_ELF_MAGIC):
        raise KernelError("the decompressed kernel is not an ELF file")
    return elf


def _gunzip(payload: bytes) -> bytes:
    return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(payload)


def _unzstd(payload: bytes) -> bytes:
    """zstd through Debian's zstd command (Python 3.11 has no zstd module)."""
    try:
        done = subprocess.run(
            ["zstd", "-dcq"], input=payload, capture_output=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise KernelError(f"cannot run zstd for a zstd-compressed kernel: {e}") from None
    # zstd stops at the end of the frame but complains about the size trailer after it.
    if not done.stdout:
        raise KernelError(f"zstd failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def has_pvh_note(elf: bytes) -> bool:
    """True if the 64-bit ELF *elf* has the PVH entry note QEMU needs to boot it directly."""
    if len(elf) < 64 or elf[4] != 2 or elf[5] != 1:  # ELFCLASS64, little-endian
        return False
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for index in range(phnum):
        at = phoff + index * phentsize
        if at + 56 > len(elf):
            return False
        kind, _flags, offset, _va, _pa, size = struct.unpack_from("<IIQQQQ", elf, at)
        if kind == _PT_NOTE and _note_present(elf[offset : offset + size]):
            return True
    return False


def _note_present(notes: bytes) -> bool:
    at = 0
    while at + 12 <= len(notes):
        namesz, descsz, kind = struct.unpack_from("<III", notes, at)
        name = notes[at + 12 : at + 12 + namesz].rstrip(b"\0")
        if kind == _XEN_ELFNOTE_PHYS32_ENTRY and name == b"Xen":
            return True
        at += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def default_image() -> str:
    """The host's own Debian kernel: /vmlinuz, else the newest /boot/vmlinuz-*."""
    if os.path.exists(DEFAULT_IMAGE_LINK):
        return os.path.realpath(DEFAULT_IMAGE_LINK)
    images = sorted(glob.glob("/boot/vmlinuz-*"), key=_version_key)
    if not images:
        raise KernelError(
            "no kernel for version 2: install linux-image-amd64 (./setup.sh deps does) "
            "or name one with [wsl2] kernel in ~/.lxssconfig"
        )
    return images[-1]


def _version_key(path: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def prepare(image_path: str, cache_dir: str) -> Kernel:
    """The bootable kernel for *image_path*: its PVH vmlinux, decompressed once into
    *cache_dir* (named by the image's hash, written whole or not at all), or the image
    itself when it has no PVH entry. Blocking: call it off the event loop."""
    try:
        with open(image_path, "rb") as f:
            image = f.read()
    except OSError as e:
        raise KernelError(f"cannot read the kernel {image_path}: {e.strerror}") from None
    release = image_release(image)
    digest = hashlib.sha256(image).hexdigest()[:32]
    cached = os.path.join(cache_dir, f"vmlinux-{digest}")
    if os.path.exists(cached):
        return Kernel(cached, release, True, image_path)
    if os.path.exists(cached + ".nopvh"):
        return Kernel(image_path, release, False, image_path)
    elf = decompress(image)
    os.makedirs(cache_dir, mode=0o755, exist_ok=True)
    if not has_pvh_note(elf):
        with open(cached + ".nopvh", "w"):
            pass
        return Kernel(image_path, release, False, image_path)
    temporary = f"{cached}.{os.getpid()}.tmp"
    try:
        with open(temporary, "wb") as f:
            f.write(elf)
        os.chmod(temporary, 0o644)
        os.rename(temporary, cached)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return Kernel(cached, release, True, image_path)


def modules_directory(release: str, override: str = "") -> str:
    """The modules tree for *release* (or the `[wsl2] kernelModules` directory)."""
    path = override or os.path.join(MODULES_ROOT, release)
    if not release and not override:
        raise KernelError("the kernel does not say its release; name its modules with "
                          "[wsl2] kernelModules")  # fmt: skip
    if not os.path.isfile(os.path.join(path, "modules.dep")):
        raise KernelError(f"no kernel modules at {path} (no modules.dep there)")
    return path


MODULES_LABEL: Final = "lxss-modules"


def modules_disk(modules_dir: str, cache_dir: str) -> str:
    """A read-only ext4 disk of *modules_dir* (WSL's modules VHD), made once per tree.
    Blocking: call it off the event loop."""
    from lxss.vm import ext4

    status = os.stat(os.path.join(modules_dir, "modules.dep"))
    digest = hashlib.sha256(f"{os.path.realpath(modules_dir)} {status.st_mtime_ns}".encode())
    image = os.path.join(cache_dir, f"modules-{digest.hexdigest()[:24]}.ext4")
    if os.path.exists(image):
        return image
    os.makedirs(cache_dir, mode=0o755, exist_ok=True)
    content, entries = ext4.tree_size(modules_dir)
    temporary = f"{image}.{os.getpid()}.tmp"
    ext4.make_image(modules_dir, temporary, MODULES_LABEL,
                    ext4.image_size(content, entries, 1 << 20), journal=False)  # fmt: skip
    os.chmod(temporary, 0o644)
    os.rename(temporary, image)
    return image
