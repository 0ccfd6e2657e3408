"""The running side of a user session: launching processes and ending distributions
(WSL's LxssUserSessionImpl::CreateLxProcess and TerminateDistribution, with its
LifetimeManager's idle rules).

- `create_process` starts the VM and the distribution on demand (lxss.service.vm_manager,
  lxss.service.instance), then asks the console's session leader for a relay. A
  distribution is busy while any relay lives, and its idle timer (instanceIdleTimeout)
  runs only when none does.
- A distribution that ends (TerminateInstance, `reboot -f` inside, a crash) is reported
  by mini_init's ChildExit; when no distribution runs, the VM's idle timer runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Coroutine
from typing import Any, Final

from lxss.api import errors
from lxss.protocol import messages as m
from lxss.service import firstrun, locations
from lxss.service.instance import GUEST_ERRORS, Instance, start_instance
from lxss.service.launch import (
    LaunchFds,
    LaunchRequest,
    bounded_warnings,
    check_encodable,
    check_fds,
    process_message,
)
from lxss.service.locks import DistributionLocks
from lxss.service.owner import OwnerIds
from lxss.service.registry import Distribution, Registry
from lxss.service.settings import Settings
from lxss.service.vm_manager import VmManager
from lxss.vm.backends import Backends

log = logging.getLogger(__name__)

TERMINATE_TIMEOUT: Final = 10.0
DEFAULT_INSTANCE_IDLE_MS: Final = 15000
NO_BACKEND: Final = "this lxss has no QEMU backend yet; use version 1"


class Runtime:
    def __init__(self, ids: OwnerIds, registry: Registry, locks: DistributionLocks,
                 settings: Settings, backends: Backends) -> None:  # fmt: skip
        self.ids = ids
        self.uid = ids.owner.uid
        self.registry = registry
        self.locks = locks
        self.settings = settings
        self.unavailable = backends.unavailable  # version -> why it cannot run here
        # One VM manager per version: a version 1 and a version 2 VM run side by side.
        self.managers = {
            version: VmManager(ids, locks, settings, backend)
            for version, backend in sorted(backends.available.items())
        }
        self._background: set[asyncio.Task[None]] = set()
        # First-run setups under way, by distribution GUID: other launches wait for them.
        self.first_runs: dict[str, asyncio.Event] = {}

    def __repr__(self) -> str:
        return f"<Runtime uid={self.uid} {list(self.managers.values())!r}>"

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run *coroutine* in the background, keeping the task alive until it ends."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # Queries ---------------------------------------------------------------------

    def manager(self, version: int) -> VmManager:
        """The VM manager of *version*; VersionNotSupported if no backend runs it here."""
        manager = self.managers.get(version)
        if manager is None:
            raise errors.VersionNotSupported(
                version=version,
                reason=self.unavailable.get(
                    version, "this lxss has no QEMU backend yet; use version 1"
                ),
            )
        return manager

    def _running(self, guid: str) -> tuple[VmManager, Instance] | None:
        for manager in self.managers.values():
            instance = manager.instances.get(guid)
            if instance is not None:
                return manager, instance
        return None

    def is_running(self, guid: str) -> bool:
        return self._running(guid) is not None

    def vm_running(self) -> bool:
        return any(manager.vm_running() for manager in self.managers.values())

    def backends(self) -> tuple[str, ...]:
        return tuple(str(version) for version in self.managers)

    def network_status(self) -> dict[str, Any]:
        """Each running VM's network, for `lxss --status`: that of the user's default
        version's VM (the one --status has always shown) when it runs, else any's."""
        default = self.registry.user(self.uid).default_version
        ordered = sorted(self.managers.items(), key=lambda item: item[0] != default)
        for _, manager in ordered:
            status = manager.network_status()
            if status:
                return status
        return {}

    async def debug_shell(self, stdio: tuple[int, int, int], term: str | None) -> int:
        """A shell in the VM of the user's default version (started if need be)."""
        version = self.registry.user(self.uid).default_version
        if version not in self.managers and self.managers:
            version = min(self.managers)
        return await self.manager(version).debug_shell(stdio, term)

    # Instances -------------------------------------------------------------------

    @staticmethod
    def _claim(instance: Instance) -> Instance:
        instance.launching += 1
        instance.idle.cancel()
        return instance

    async def ensure_instance(self, distribution: Distribution) -> Instance:
        """The running instance of *distribution*, started if needed, counted as launching
        (the caller must decrement `launching` when its launch is over)."""
        vms = self.manager(distribution.version)
        running = vms.instances.get(distribution.guid)
        if running is not None and not running.stopping:
            return self._claim(running)  # the hot path: no lock, no wait behind other starts
        async with vms.lock:
            # Checked again under the lock: an export or unregister may have begun meanwhile.
            self.locks.ensure_unlocked(distribution)
            instance = vms.instances.get(distribution.guid)
            if instance is not None and instance.stopping:
                # A terminate is under way: let that instance end, then start afresh.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(instance.ended.wait(), TERMINATE_TIMEOUT)
                if vms.is_current(instance):
                    await vms.vm_gone(force=True)
                instance = None
            if instance is not None:
                return self._claim(instance)
            vm = await vms.ensure_vm()
            vms.cancel_idle()
            try:
                locations.check_files(
                    self.registry,
                    distribution,
                    lambda reason: errors.StartFailed(distribution=distribution.name,
                                                      reason=reason),
                )  # fmt: skip
                instance = await start_instance(
                    vm, distribution, self.settings.host_resolv_conf, vms.vm_warnings
                )
            except BaseException:
                vms.arm_idle()
                raise
            if instance.os_release != (distribution.os_id, distribution.os_version_id):
                self.registry.set_os_release(distribution.guid, *instance.os_release)
            vms.instances[distribution.guid] = instance
            return self._claim(instance)

    def arm_idle(self, instance: Instance) -> None:
        """Start *instance*'s idle timeout unless something keeps it busy."""
        instance.idle.cancel()
        if instance.busy or instance.stopping:
            return
        vms = self.manager(instance.distribution.version)
        config = vms.config
        timeout = config.instance_idle_timeout_ms if config else DEFAULT_INSTANCE_IDLE_MS

        def fire() -> None:
            if not instance.busy and vms.is_current(instance):
                # Marked now, in this callback: a command arriving before the stop task
                # runs must not claim an instance that is about to be stopped under it;
                # it waits for the end and starts the distribution afresh instead.
                instance.stopping = True
                self.spawn(self._stop(instance, force=False))

        instance.idle.arm(timeout, fire)

    def arm_idle_if_current(self, instance: Instance) -> None:
        if self.manager(instance.distribution.version).is_current(instance):
            self.arm_idle(instance)

    def track_relay(self, instance: Instance, lifetime: socket.socket) -> None:
        """The relay holds the other end of *lifetime*; its closing means the relay ended."""
        instance.track_relay(lifetime, lambda: self.arm_idle_if_current(instance))

    # Operations ------------------------------------------------------------------

    async def create_process(
        self, distribution: Distribution, request: LaunchRequest, fds: LaunchFds
    ) -> list[str]:
        """Run *request* in *distribution* on *fds* (taken: closed here whatever happens);
        the start's warnings."""
        lifetime: socket.socket | None
        lifetime, lifetime_remote = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.locks.ensure_unlocked(distribution)
            flags = check_fds(request, fds)
            check_encodable(request, flags)  # before anything starts for nothing
            await self._wait_first_run(distribution.guid)
            instance = await self.ensure_instance(distribution)
            try:
                if (
                    request.interactive_shell
                    and self.registry.first_run_pending(distribution.guid)
                    and distribution.guid not in self.first_runs
                    and await firstrun.start(self, instance, request, flags, fds)
                ):
                    warnings = bounded_warnings(instance.take_warnings())
                else:
                    warnings = await self._launch_process(
                        instance, request, flags, fds, lifetime_remote
                    )
                    self.track_relay(instance, lifetime)
                    lifetime = None
            finally:
                instance.launching -= 1
                self.arm_idle_if_current(instance)
        finally:
            fds.close()
            lifetime_remote.close()
            if lifetime is not None:
                lifetime.close()
        return warnings

    async def _wait_first_run(self, guid: str) -> None:
        """A launch waits while the distribution's first-run setup runs (as in WSL)."""
        running = self.first_runs.get(guid)
        if running is not None:
            await asyncio.wait_for(running.wait(), firstrun.FIRST_RUN_TIMEOUT)

    async def launch_shell(
        self, instance: Instance, request: LaunchRequest, flags: int, fds: LaunchFds
    ) -> None:
        """Launch *request*'s process on *fds* (the caller keeps them) and watch its relay."""
        lifetime, lifetime_remote = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await self._launch_process(instance, request, flags, fds, lifetime_remote)
        except BaseException:
            lifetime.close()
            raise
        finally:
            lifetime_remote.close()
        self.track_relay(instance, lifetime)

    async def _launch_process(
        self,
        instance: Instance,
        request: LaunchRequest,
        flags: int,
        fds: LaunchFds,
        lifetime: socket.socket,
    ) -> list[str]:
        """Ask the console's session leader for a relay; the start warnings, on success."""
        name = instance.distribution.name
        message = process_message(request, flags, instance.default_uid, name)
        ordered = message.order_fds(
            m.CreateProcessFds(
                control=fds.control if fds.control is not None else -1,
                lifetime=lifetime.fileno(),
                console=fds.console,
                stdin=fds.stdin,
                stdout=fds.stdout,
                stderr=fds.stderr,
            )
        )
        await instance.launch(message, ordered, request.console_id, request.username)
        return bounded_warnings(instance.take_warnings())

    async def terminate(self, guid: str, force: bool) -> None:
        """Stop one distribution: ask its init, then make sure (by stopping the VM).

        A start under way (it holds the lock) is waited for, then stopped: a caller that
        locked the distribution first (export, unregister) is then sure it is down.
        """
        running = self._running(guid)
        if running is None:
            return
        async with running[0].lock:
            instance = running[0].instances.get(guid)
        if instance is not None:
            await self._stop(instance, force)

    async def _stop(self, instance: Instance, force: bool) -> None:
        if await self._ask_to_stop(instance, force):
            return
        vms = self.manager(instance.distribution.version)
        async with vms.lock:
            # A start waiting on this end may have stopped the VM itself meanwhile and
            # started a new one, which is not ours to stop.
            if not instance.ended.is_set():
                await vms.vm_gone(force=True)

    async def _ask_to_stop(self, instance: Instance, force: bool) -> bool:
        """Ask *instance*'s init to end it; False if it had not ended in time (the caller
        then stops the VM, which ends it)."""
        instance.stopping = True
        instance.idle.cancel()
        with contextlib.suppress(*GUEST_ERRORS):
            await instance.link.transaction(
                m.InitTerminateInstance(force=force), m.ResultBool, timeout=5.0
            )
        try:
            await asyncio.wait_for(instance.ended.wait(), TERMINATE_TIMEOUT)
        except TimeoutError:
            log.error("uid %d: %s did not stop; stopping the VM", self.uid,
                      instance.distribution.name)  # fmt: skip
            return False
        return True

    async def shutdown(self, force: bool) -> None:
        """Stop every distribution (unforced: each is asked first), then every VM."""
        for vms in self.managers.values():
            async with vms.lock:
                if not force:
                    for instance in list(vms.instances.values()):
                        if not await self._ask_to_stop(instance, force=False):
                            await vms.vm_gone(force=True)
                await vms.vm_gone(force=force)
                vms.cancel_idle()
