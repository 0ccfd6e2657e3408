"""Version 2's utility VM booted for real (lxss.vm.qemu): QEMU on Debian's kernel, the
initramfs lxss writes, mini_init on the system disk reached over virtio-serial.

The backend is not offered by the service yet (`--version 2` is still refused), so these
tests drive lxss.vm.qemu directly: the document is what QEMU runs, QEMU runs as the
owner, the debug console is a shell in the VM, memory the guest frees goes back to the
host (free page reporting), a clean shutdown is the guest powering off, a QEMU killed
from outside is noticed at once, a QEMU dies with the service that started it, and
nothing is left behind either way. Two boots (60 s budget each, TCG); the last test only
starts QEMU."""

from __future__ import annotations

import asyncio
import errno
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lxss.protocol import messages as m
from lxss.vm import qemu
from lxss.vm.document import VmDocument, qemu_command_line
from lxss.vm.link import GuestLink

pytestmark = pytest.mark.vm2

SRC = Path(__file__).resolve().parents[2] / "src"
CACHE = "/var/cache/lxss/vm"  # the service's own cache, machine-wide: made once
BOOT_BUDGET = 60.0


@pytest.fixture(scope="module")
def files() -> qemu.BootFiles:
    if not os.path.exists(qemu.QEMU):
        pytest.fail(f"{qemu.QEMU} is missing: ./setup.sh deps installs qemu-system-x86")
    return qemu.boot_files(CACHE)


@pytest.fixture
def place(test_users: tuple[str, str]) -> Iterator[tuple[Path, int, int]]:
    owner = pwd.getpwnam(test_users[0])
    root = Path(f"/run/lxss-test-vm2-{os.getpid()}")
    root.mkdir(mode=0o755)
    try:
        yield root / "vm2" / str(owner.pw_uid), owner.pw_uid, owner.pw_gid
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def _boot(files: qemu.BootFiles, place: tuple[Path, int, int]) -> qemu.QemuVm:
    directory, uid, gid = place
    document = qemu.make_document(files, str(directory), 512, 1)
    return await qemu.QemuVm.start(document, str(directory), uid, gid, BOOT_BUDGET)


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return True


def test_the_vm_runs_its_document_as_its_owner_gives_memory_back_and_powers_off(
    files: qemu.BootFiles, place: tuple[Path, int, int]
) -> None:
    directory, uid, _ = place

    async def scenario() -> None:
        vm = await _boot(files, place)
        try:
            assert vm.kernel_version == files.kernel.release
            document = VmDocument.from_json((directory / qemu.DOCUMENT_NAME).read_text())
            assert document == vm.document
            cmdline = Path(f"/proc/{vm.process.pid}/cmdline").read_bytes().split(b"\0")[:-1]
            assert [w.decode() for w in cmdline] == qemu_command_line(document, qemu.QEMU)
            ids = Path(f"/proc/{vm.process.pid}/status").read_text()
            assert f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}" in ids
            assert document.accelerator in ("tcg", "kvm") and document.accelerator_reason
            # The debug console: a shell as the VM's root, outside every distribution.
            status, out = await _in_vm(vm, "uname -r; cut -d' ' -f1 /proc/modules")
            assert status == 0 and out.split()[0] == files.kernel.release
            assert "virtio_balloon" in out.split()  # loaded from the modules disk
            # Memory the guest touched and freed leaves QEMU (virtio-balloon free page
            # reporting, what autoMemoryReclaim builds on).
            baseline = _qemu_resident_mib(vm.process.pid)
            status, _ = await _in_vm(vm, "dd if=/dev/zero of=/dev/shm/fill bs=1M count=200")
            assert status == 0
            filled = _qemu_resident_mib(vm.process.pid)
            assert filled >= baseline + 150, (baseline, filled)
            status, _ = await _in_vm(vm, "rm /dev/shm/fill")
            deadline = time.monotonic() + 60.0
            while (now := _qemu_resident_mib(vm.process.pid)) > filled - 150:
                assert time.monotonic() < deadline, f"QEMU kept it: {baseline} {filled} {now}"
                await asyncio.sleep(0.5)
        finally:
            await vm.stop(force=False)
        # mini_init returned when its channel closed and the guest powered off: status 0.
        assert vm.process.returncode == 0
        assert not directory.exists() and _gone(vm.process.pid)

    asyncio.run(scenario())


def test_a_qemu_killed_from_outside_is_noticed_at_once(
    files: qemu.BootFiles, place: tuple[Path, int, int]
) -> None:
    directory, _, _ = place

    async def scenario() -> None:
        vm = await _boot(files, place)
        try:
            assert vm.control is not None
            os.kill(vm.process.pid, signal.SIGKILL)
            killed = time.monotonic()
            while vm.running() or not vm.control.closed:
                assert time.monotonic() - killed < 5.0, "the VM's end went unnoticed"
                await asyncio.sleep(0.02)
        finally:
            await vm.stop(force=True)
        assert vm.process.returncode == -signal.SIGKILL
        assert not directory.exists() and _gone(vm.process.pid)

    asyncio.run(scenario())


async def _in_vm(vm: qemu.QemuVm, command: str, timeout: float = 60.0) -> tuple[int, str]:
    """Run *command* in the VM's debug console (busybox sh as the VM's root); its exit
    status and output."""
    path = next(p.socket for p in vm.document.serial_ports if p.name == qemu.DEBUG_PORT)
    reader, writer = await asyncio.open_unix_connection(path)
    marker = f"LXSS-DONE-{os.getpid()}-{time.monotonic_ns()}"
    writer.write(f"{command}\necho {marker} $?\n".encode())
    await writer.drain()
    output = b""
    try:
        while (at := output.find(marker.encode())) < 0 or b"\n" not in output[at:]:
            chunk = await asyncio.wait_for(reader.read(65536), timeout)
            assert chunk, f"the debug console closed: {output!r}"
            output += chunk
    finally:
        writer.close()
    text = output.decode(errors="replace")
    body, _, status = text.rpartition(marker)
    return int(status.split()[0]), body


def _qemu_resident_mib(pid: int) -> int:
    """QEMU's resident memory, guest RAM included (a shared memfd: RssShmem)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no Rss in smaps_rollup")


def test_a_qemu_does_not_outlive_the_service_that_started_it(
    files: qemu.BootFiles, place: tuple[Path, int, int]
) -> None:
    """The service killed (as lxssd may be): its QEMU dies with it, whatever its owner."""
    directory, uid, gid = place
    document = qemu.make_document(files, str(directory), 256, 1)
    directory.mkdir(parents=True)
    os.chown(directory, uid, gid)
    script = (
        "import sys, os, time; sys.path.insert(0, sys.argv[1])\n"
        "from lxss.vm import qemu\nfrom lxss.vm.document import VmDocument\n"
        "document = VmDocument.from_json(sys.argv[2])\n"
        "p = qemu.spawn(document, sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), 2)\n"
        "print(p.pid, flush=True); time.sleep(600)\n"
    )
    service = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", script, str(SRC), document.to_json(),
         str(directory), str(uid), str(gid)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert service.stdout is not None
        pid = int(service.stdout.readline())
        deadline = time.monotonic() + 20.0
        while Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] != qemu.QEMU.encode():
            assert time.monotonic() < deadline, "the launcher did not exec QEMU"
            time.sleep(0.05)
    finally:
        service.kill()
        service.wait()
        assert service.stdout is not None
        service.stdout.close()
    deadline = time.monotonic() + 10.0
    while not _gone(pid):
        assert time.monotonic() < deadline, f"QEMU {pid} outlived its service"
        time.sleep(0.05)


def test_descriptors_cross_the_vm_as_channels_of_the_multiplexer(
    files: qemu.BootFiles, place: tuple[Path, int, int]
) -> None:
    """A socket the service attaches to LaunchInit reaches mini_init in the guest through
    the stream multiplexer (as a socket of the guest's own), and the distribution's boot
    process speaks on it: its MapIdentity arrives here, our refusal reaches it, and its
    CreateInstanceResult comes back, all on that one descriptor."""

    async def scenario() -> None:
        vm = await _boot(files, place)
        try:
            assert vm.control is not None
            ours, theirs = socket.socketpair()
            tree_r, tree_w = os.pipe()  # no tree: the start must fail, and say so on `ours`
            launch = m.MiniInitLaunchInit(distribution_name="mux", guid="mux-test",
                                          root_path="/", hostname="mux", flags=0,
                                          default_uid=0)  # fmt: skip
            await vm.control.send(launch, [theirs.fileno(), tree_r])
            for fd in (theirs.fileno(), tree_r, tree_w):
                os.close(fd)
            theirs.detach()
            link = GuestLink(ours, "init:mux")
            try:
                expected = (m.MiniInitMapIdentity, m.MiniInitCreateInstanceResult)
                header, message, fds = await link.receive_with_header(expected, timeout=60.0)
                assert fds == []
                if isinstance(message, m.MiniInitMapIdentity):
                    refusal = m.MiniInitMapIdentityResponse(result=errno.EIO, mapped=False,
                                                            reason="no tree here")  # fmt: skip
                    await link.reply(header, refusal)
                    message, _ = await link.receive((expected[1],), timeout=60.0)
                assert isinstance(message, m.MiniInitCreateInstanceResult)
                assert message.result != 0
            finally:
                link.close()
        finally:
            await vm.stop(force=False)
        assert vm.process.returncode == 0  # mini_init served on, then powered off cleanly
        assert _gone(vm.process.pid)

    asyncio.run(scenario())
