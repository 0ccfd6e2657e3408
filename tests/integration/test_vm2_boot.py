"""Version 2's utility VM booted for real (lxss.vm.qemu): QEMU on Debian's kernel, the
initramfs lxss writes, mini_init on the system disk reached over virtio-serial.

The backend is not offered by the service yet (`--version 2` is still refused), so these
tests drive lxss.vm.qemu directly: the document is what QEMU runs, QEMU runs as the
owner, a clean shutdown is the guest powering off, a QEMU killed from outside is noticed
at once, and nothing is left behind either way. Two boots (60 s budget each, TCG)."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lxss.vm import qemu
from lxss.vm.document import VmDocument, qemu_command_line

pytestmark = pytest.mark.vm2

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


def test_the_vm_runs_its_document_as_its_owner_and_powers_off_cleanly(
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
            status = Path(f"/proc/{vm.process.pid}/status").read_text()
            assert f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}" in status
            assert document.accelerator in ("tcg", "kvm") and document.accelerator_reason
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
