"""One user's utility VM and the distributions running in it (WSL's WslCoreVm).

The VM starts on demand (at a user's first launch) from the user's configuration, read
then; mini_init's notify channel reports each distribution's end (ChildExit) and, by
closing, the VM's. When no distribution runs, the VM's idle timer (vmIdleTimeout) runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Coroutine
from typing import Any, Final

from lxss.api import errors
from lxss.config.lxssconf import LxssConfig, load_lxss_config
from lxss.linux.files import read_regular_file
from lxss.protocol import messages as m
from lxss.service.instance import GUEST_ERRORS, Instance
from lxss.service.lifetime import IdleTimer
from lxss.service.locks import DistributionLocks
from lxss.service.owner import OwnerIds
from lxss.service.settings import Settings
from lxss.vm import netmodes
from lxss.vm.backend import Vm, VmBackend, VmStartError
from lxss.vm.spec import VmSpec

log = logging.getLogger(__name__)

CONFIG_LIMIT: Final = 1 << 20
DEFAULT_VM_IDLE_MS: Final = 60000


class VmManager:
    """The user's VM of one version (started when needed), its running instances and its
    idle timer. A user has one per backend: version 1 and version 2 VMs run side by side."""

    def __init__(self, ids: OwnerIds, locks: DistributionLocks, settings: Settings,
                 backend: VmBackend) -> None:  # fmt: skip
        self.ids = ids
        self.uid = ids.owner.uid
        self.locks = locks
        self.settings = settings
        self.backend = backend
        self.vm: Vm | None = None
        self.config: LxssConfig | None = None
        self.instances: dict[str, Instance] = {}
        # VM and distribution starts and stops, one at a time.
        self.lock = asyncio.Lock()
        self.debug_shells = 0  # --debug-shell sessions: they keep the VM up as instances do
        self.vm_warnings: list[str] = []  # said at every distribution start in this VM
        self._idle = IdleTimer()
        self._background: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return (
            f"<VmManager uid={self.uid} version={self.backend.version} vm={self.vm!r}"
            f" instances={len(self.instances)}>"
        )

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run *coroutine* in the background, keeping the task alive until it ends."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def vm_running(self) -> bool:
        return self.vm is not None and self.vm.running()

    def network_status(self) -> dict[str, Any]:
        """The VM's networking mode and, in Nat mode, its network and forwarded ports."""
        if self.vm is None or not self.vm.running():
            return {}
        return {"mode": self.vm.spec.networking_mode.spelling, **self.vm.network_status()}

    # Configuration ----------------------------------------------------------------

    def load_config(self) -> LxssConfig:
        """/etc/lxss.conf and the owner's ~/.lxssconfig, read at VM start (as WSL reads
        .wslconfig). The machine's memory, processors and pidsLimit (set, or their
        defaults) are ceilings a user's file cannot raise: one user must not be able to
        take the machine from the others."""
        machine_file = self.settings.machine_config
        machine_text = read_regular_file(machine_file, CONFIG_LIMIT)
        user_file = os.path.join(self.ids.owner.home, ".lxssconfig")
        # Read by root only if the user owns it and it is a plain file: a user must not make
        # the service read a file they could not read themselves.
        user_text = read_regular_file(user_file, CONFIG_LIMIT, owner_uid=self.uid, nofollow=True)
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        cpus = os.cpu_count() or 1
        config, warnings = load_lxss_config(
            machine_text, machine_file, user_text, user_file, ram, cpus
        )
        machine, _ = load_lxss_config(machine_text, machine_file, None, "", ram, cpus)
        config = dataclasses.replace(
            config,
            memory_bytes=min(config.memory_bytes, machine.memory_bytes),
            processors=min(config.processors, machine.processors),
            pids_limit=min(config.pids_limit, machine.pids_limit),
        )
        for warning in warnings:
            log.warning("uid %d: %s", self.uid, warning)
        return config

    # The VM ----------------------------------------------------------------------

    async def ensure_vm(self) -> Vm:
        """The running VM, started if need be (the caller holds `lock`)."""
        if self.vm is not None and self.vm.running():
            return self.vm
        if self.vm is not None:
            await self.vm_gone(force=True)
        self.config = config = self.load_config()
        modes = self.backend.networking_modes
        mode, network_warning = netmodes.effective_mode(config.networking_mode, modes)
        self.vm_warnings = [network_warning] if network_warning else []
        spec = VmSpec(
            owner_uid=self.uid,
            memory_bytes=config.memory_bytes,
            processors=config.processors,
            pids_limit=config.pids_limit,
            networking_mode=mode,
            localhost_forwarding=config.localhost_forwarding,
            hostname=socket.gethostname(),
            boot_timeout_s=config.kernel_boot_timeout_ms / 1000,
            distribution_start_timeout_s=config.distribution_start_timeout_ms / 1000,
        )
        started = time.monotonic()
        try:
            mapping = self.ids.run_mapping(config.root_distributions_mapped)
            self.vm = await self.backend.start(spec, mapping)
        except (VmStartError, OSError, TimeoutError) as e:
            raise errors.StartFailed(distribution="(utility VM)", reason=str(e)) from None
        log.info("uid %d: version %d utility VM started in %.0f ms", self.uid,
                 self.backend.version, (time.monotonic() - started) * 1000)  # fmt: skip
        self.spawn(self._watch_notify(self.vm))  # ends by itself when this VM's channel closes
        return self.vm

    async def _watch_notify(self, vm: Vm) -> None:
        """mini_init's notifications: a distribution's init exited (or the VM did)."""
        try:
            while True:
                message, fds = await vm.notify.receive((m.MiniInitChildExit,), timeout=float("inf"))
                for fd in fds:
                    os.close(fd)
                assert isinstance(message, m.MiniInitChildExit)
                for instance in list(self.instances.values()):
                    if instance.vm is vm and instance.vm_pid == message.child_pid:
                        self.instance_gone(instance)
        except GUEST_ERRORS:
            if self.vm is vm:
                await self.vm_gone(force=True)

    async def vm_gone(self, force: bool = False) -> None:
        """Stop the VM (if any) and forget its instances. Unforced, mini_init is asked to
        end (its channel closes) and the VM's processes end in order, leaving no zombie."""
        vm, self.vm = self.vm, None
        for instance in list(self.instances.values()):
            self.instance_gone(instance)
        if vm is not None:
            log.info("uid %d: utility VM stopped", self.uid)
            await vm.stop(force=force)

    def instance_gone(self, instance: Instance) -> None:
        if self.instances.get(instance.distribution.guid) is instance:
            del self.instances[instance.distribution.guid]
            log.info("uid %d: %s stopped", self.uid, instance.distribution.name)
        instance.close()
        self.arm_idle()

    def is_current(self, instance: Instance) -> bool:
        return self.instances.get(instance.distribution.guid) is instance

    # Idle ------------------------------------------------------------------------

    def arm_idle(self) -> None:
        """Start the VM's idle timeout if nothing keeps it up (else make sure none runs)."""
        self._idle.cancel()
        if self.instances or self.debug_shells or self.vm is None or self.locks.held():
            return
        timeout = self.config.vm_idle_timeout_ms if self.config else DEFAULT_VM_IDLE_MS
        self._idle.arm(timeout, lambda: self.spawn(self._idle_fired()))

    def cancel_idle(self) -> None:
        self._idle.cancel()

    async def _idle_fired(self) -> None:
        if not self.instances and self.vm is not None:
            async with self.lock:
                if not self.instances and not self.debug_shells:
                    await self.vm_gone()

    async def debug_shell(self, stdio: tuple[int, int, int], term: str | None) -> int:
        """A shell in the utility VM (started if need be), outside every distribution."""
        async with self.lock:
            vm = await self.ensure_vm()
            self.debug_shells += 1
        try:
            return await vm.debug_shell(stdio, term)
        finally:
            self.debug_shells -= 1
            self.arm_idle()
