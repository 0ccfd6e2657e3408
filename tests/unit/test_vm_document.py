"""The VM's document and QEMU's command line made from it alone (lxss.vm.document)."""

from __future__ import annotations

import dataclasses

import pytest

from lxss.guest.vmboot import kernel_arguments
from lxss.vm.document import Disk, SerialPort, Share, VmDocument, qemu_command_line
from lxss.vm.ext4 import image_size


def _document(**changes: object) -> VmDocument:
    base = VmDocument(
        kernel="/cache/vmlinux-1",
        initrd="/cache/initramfs-1.cpio",
        command_line="console=ttyS0 lxss.control=lxss.control",
        memory_mib=1024,
        processors=2,
        accelerator="tcg",
        accelerator_reason="no /dev/kvm",
        disks=(
            Disk("lxss-system", "/cache/system.ext4", "ro", "system"),
            Disk("d0123", "/var/lib/lxss/1000/a,b/ext4.img", "rw", "distribution"),
        ),
        serial_ports=(SerialPort("lxss.control", "/run/lxss/vm2/1000/control.sock"),),
        free_page_reporting=True,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _after(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv) if word == option]


def test_the_document_round_trips_through_json() -> None:
    document = _document(shares=(Share("host", "/run/x/fs.sock", "/", True),))
    assert VmDocument.from_json(document.to_json()) == document


def test_the_command_line_says_what_the_document_says() -> None:
    argv = qemu_command_line(_document(), "/usr/bin/qemu-system-x86_64")
    assert argv[0] == "/usr/bin/qemu-system-x86_64"
    assert _after(argv, "-kernel") == ["/cache/vmlinux-1"]
    assert _after(argv, "-initrd") == ["/cache/initramfs-1.cpio"]
    assert _after(argv, "-append") == ["console=ttyS0 lxss.control=lxss.control"]
    assert _after(argv, "-m") == ["1024M"] and _after(argv, "-smp") == ["2"]
    assert "-nodefaults" in argv and "-no-user-config" in argv and "-no-reboot" in argv
    assert _after(argv, "-accel") == ["tcg,thread=multi"]
    drives = _after(argv, "-drive")
    assert drives[0] == "file=/cache/system.ext4,if=none,id=disk0,format=raw,readonly=on"
    # A comma in a path is doubled, so it cannot add an option of its own.
    assert drives[1].startswith("file=/var/lib/lxss/1000/a,,b/ext4.img,")
    assert "discard=unmap" in drives[1] and "readonly" not in drives[1]
    devices = _after(argv, "-device")
    assert "virtio-blk-device,drive=disk1,serial=d0123" in devices
    assert "virtserialport,chardev=port0,name=lxss.control" in devices
    assert any("free-page-reporting=on" in d for d in devices)
    chardevs = _after(argv, "-chardev")
    assert chardevs == ["socket,id=port0,path=/run/lxss/vm2/1000/control.sock,server=on,wait=off"]


def test_kvm_and_shares_and_no_balloon() -> None:
    document = _document(
        accelerator="kvm",
        free_page_reporting=False,
        shares=(Share("hostfs", "/run/x/fs.sock", "/home/u", False),),
    )
    argv = qemu_command_line(document)
    assert _after(argv, "-accel") == ["kvm"] and _after(argv, "-cpu") == ["host"]
    assert "vhost-user-fs-device,chardev=share0,tag=hostfs" in _after(argv, "-device")
    assert not any("balloon" in d for d in _after(argv, "-device"))
    # vhost-user needs guest memory it can map: a shared memfd.
    assert any("memory-backend-memfd" in o and "share=on" in o for o in _after(argv, "-object"))


@pytest.mark.parametrize(
    "changes",
    [
        {"accelerator": "hvf"},
        {"memory_mib": 16},
        {"processors": 0},
        {"disks": (Disk("x" * 21, "/a", "ro", "system"),)},
        {"disks": (Disk("a", "/a", "ro", "system"), Disk("a", "/b", "rw", "swap"))},
        {"disks": (Disk("a", "/a", "rx", "system"),)},
        {"command_line": "console=ttyS0\nquiet"},
        {"kernel": "/a\0b"},
    ],
)
def test_a_document_qemu_would_misread_is_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        _document(**changes)


def test_the_guest_reads_only_its_own_keys_from_the_kernel_command_line() -> None:
    line = "console=ttyS0 lxss.control=lxss.control lxss.modules=a,b quiet lxss.flag"
    assert kernel_arguments(line) == {"control": "lxss.control", "modules": "a,b", "flag": ""}


def test_an_image_has_room_for_its_contents_and_metadata() -> None:
    size = image_size(100 << 20, 1000, 8 << 20)
    assert size % (1 << 20) == 0 and size >= (100 << 20) * 6 // 5 + (8 << 20)
