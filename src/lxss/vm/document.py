"""The VM's document: everything QEMU is told, as one JSON file (WSL hands HCS one).

The service writes it to the owner's runtime directory before a boot, `lxss --status`
shows it, and `qemu_command_line` turns it, and nothing else, into QEMU's argv: what
the VM is given can be read in one place, and the translation is a pure function
unit tests hold.

The machine is QEMU's microvm with ACPI (the quickest to boot under TCG, see
docs/version2.md): virtio-mmio devices, modern only (virtiofsd speaks no legacy
virtio), the ISA serial for the kernel's console, no firmware, the kernel entered at
its PVH entry.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Final

FORMAT: Final = 1
DISK_MODES: Final = ("ro", "rw")
ACCELERATORS: Final = ("tcg", "kvm")
RECLAIM_MODES: Final = ("disabled", "dropCache", "gradual")


@dataclass(frozen=True)
class Disk:
    """A virtio-blk disk; the guest finds it by *identifier* (its serial, ≤ 20 bytes)."""

    identifier: str
    path: str
    mode: str  # "ro" | "rw"
    role: str  # system | modules | distribution | swap: for people reading the document


@dataclass(frozen=True)
class Share:
    """A host directory served by a virtiofsd over vhost-user *socket*, mounted by tag."""

    tag: str
    socket: str
    path: str
    read_only: bool


@dataclass(frozen=True)
class SerialPort:
    """A virtio-serial port named *name* in the guest, a Unix socket QEMU listens on."""

    name: str
    socket: str


@dataclass(frozen=True)
class VmDocument:
    kernel: str
    initrd: str
    command_line: str
    memory_mib: int
    processors: int
    accelerator: str  # "tcg" | "kvm"
    accelerator_reason: str  # why that one: shown by lxss --status
    disks: tuple[Disk, ...] = ()
    shares: tuple[Share, ...] = ()
    serial_ports: tuple[SerialPort, ...] = ()
    networking: str = "none"  # only "none" so far: the guest has its loopback
    console_log: str = ""  # the kernel's console goes here; "": QEMU's stdout
    free_page_reporting: bool = False  # virtio-balloon hands freed pages back to the host
    format: int = FORMAT
    notes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.accelerator not in ACCELERATORS:
            raise ValueError(f"accelerator {self.accelerator!r} is not one of {ACCELERATORS}")
        if self.memory_mib < 64 or self.processors < 1:
            raise ValueError("a VM needs at least 64 MiB and one processor")
        seen: set[str] = set()
        for disk in self.disks:
            if disk.mode not in DISK_MODES:
                raise ValueError(f"disk {disk.identifier}: mode {disk.mode!r} is not ro or rw")
            if not disk.identifier or len(disk.identifier.encode()) > 20:
                raise ValueError(f"disk identifier {disk.identifier!r}: 1 to 20 bytes")
            if disk.identifier in seen:
                raise ValueError(f"two disks with the identifier {disk.identifier}")
            seen.add(disk.identifier)
        for value in _all_strings(self):
            if "\n" in value or "\0" in value:
                raise ValueError("the VM's document holds a line break or NUL")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> VmDocument:
        data = json.loads(text)
        data["disks"] = tuple(Disk(**d) for d in data.get("disks", ()))
        data["shares"] = tuple(Share(**s) for s in data.get("shares", ()))
        data["serial_ports"] = tuple(SerialPort(**p) for p in data.get("serial_ports", ()))
        return cls(**data)


def _all_strings(document: VmDocument) -> list[str]:
    found = [document.kernel, document.initrd, document.command_line, document.console_log]
    for disk in document.disks:
        found += [disk.identifier, disk.path]
    for share in document.shares:
        found += [share.tag, share.socket, share.path]
    for port in document.serial_ports:
        found += [port.name, port.socket]
    return found


def _option(value: str) -> str:
    """A value inside QEMU's comma-separated options (a comma is written twice)."""
    return value.replace(",", ",,")


def qemu_command_line(document: VmDocument, qemu: str = "qemu-system-x86_64") -> list[str]:
    """QEMU's argv for *document*, and nothing else: no defaults, no user config, no
    display, no reboot (a guest reboot ends the VM)."""
    memory = f"{document.memory_mib}M"
    argv = [
        qemu, "-name", "lxss-vm,debug-threads=on",
        "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
        # QEMU's own seccomp filter: no execve, no privilege changes, no scheduler games.
        "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        "-M", "microvm,acpi=on,memory-backend=ram",
        # memfd shared with virtiofsd (vhost-user maps guest memory); also what the balloon
        # punches freed pages out of.
        "-object", f"memory-backend-memfd,id=ram,size={memory},share=on",
        "-m", memory,
        "-smp", str(document.processors),
        "-global", "virtio-mmio.force-legacy=false",
        "-kernel", document.kernel, "-initrd", document.initrd,
        "-append", document.command_line,
    ]  # fmt: skip
    if document.accelerator == "kvm":
        argv += ["-accel", "kvm", "-cpu", "host"]
    else:
        argv += ["-accel", "tcg,thread=multi", "-cpu", "max"]
    if document.console_log:
        argv += ["-serial", f"file:{document.console_log}"]
    else:
        argv += ["-serial", "stdio"]
    for index, disk in enumerate(document.disks):
        drive = f"disk{index}"
        options = f"file={_option(disk.path)},if=none,id={drive},format=raw"
        if disk.mode == "ro":
            options += ",readonly=on"
        else:
            options += ",discard=unmap,detect-zeroes=unmap"
        serial = _option(disk.identifier)
        argv += ["-drive", options, "-device", f"virtio-blk-device,drive={drive},serial={serial}"]
    for index, share in enumerate(document.shares):
        argv += [
            "-chardev", f"socket,id=share{index},path={_option(share.socket)}",
            "-device", f"vhost-user-fs-device,chardev=share{index},tag={_option(share.tag)}",
        ]  # fmt: skip
    if document.serial_ports:
        argv += ["-device", f"virtio-serial-device,max_ports={len(document.serial_ports) + 1}"]
        for index, port in enumerate(document.serial_ports):
            argv += [
                "-chardev", f"socket,id=port{index},path={_option(port.socket)},server=on,wait=off",
                "-device", f"virtserialport,chardev=port{index},name={_option(port.name)}",
            ]  # fmt: skip
    if document.free_page_reporting:
        argv += ["-device", "virtio-balloon-device,free-page-reporting=on,deflate-on-oom=on"]
    argv += ["-device", "virtio-rng-device"]
    if document.networking != "none":
        raise ValueError(f"networking {document.networking!r} is not supported yet")
    return argv
