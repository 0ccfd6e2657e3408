"""The running side of a UserSession: its utility VM, running instances and their lifetime
(WSL's WslCoreVm, WslCoreInstance and LifetimeManager, for one user).

- `create_process` starts the VM and the distribution on demand, then asks the
  console's session leader for a relay. Each relay holds a "lifetime" socket
  whose other end the service watches: a distribution is busy while any relay
  lives, and its idle timer (instanceIdleTimeout) runs only when none does.
- A distribution that ends (TerminateInstance, `reboot -f` inside, a crash)
  is reported by mini_init's ChildExit; when no distribution runs, the VM's
  idle timer (vmIdleTimeout) runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import os
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

from lxss.api import errors
from lxss.api.server import Call
from lxss.config.lxssconf import LxssConfig, load_lxss_config
from lxss.linux.files import read_regular_file
from lxss.linux.subids import Mapping
from lxss.protocol import messages as m
from lxss.protocol.channel import ChannelClosed
from lxss.protocol.framing import ProtocolError
from lxss.service import firstrun, hostinfo
from lxss.service.registry import Distribution
from lxss.service.settings import Settings
from lxss.service.trees import Trees
from lxss.vm import cgroup, nat, netmodes
from lxss.vm.backend import Vm, VmBackend
from lxss.vm.link import GuestLink
from lxss.vm.namespace import NamespaceBackend, VmStartError
from lxss.vm.spec import VmSpec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from lxss.service.session import UserSession

log = logging.getLogger(__name__)

USER_NOT_FOUND = 67  # the session leader's result for an unknown user (WSL's EX_NOUSER)
TERMINATE_TIMEOUT = 10.0
MAX_LEADERS = 64
CONFIG_LIMIT = 1 << 20
_GUEST_ERRORS = (ChannelClosed, ProtocolError, TimeoutError, OSError)


class Instance:
    """One running distribution."""

    def __init__(self, distribution: Distribution, vm: Vm, link: GuestLink, vm_pid: int) -> None:
        self.distribution = distribution
        self.vm = vm  # pids are per VM: a ChildExit from another VM is not about us
        self.link = link
        self.vm_pid = vm_pid
        self.default_uid = distribution.default_uid
        self.leaders: dict[int, GuestLink] = {}
        self.leader_lock = asyncio.Lock()
        self.relays: set[socket.socket] = set()
        self.idle: asyncio.TimerHandle | None = None
        self.warnings: list[str] = []
        self.ended = asyncio.Event()
        self.launching = 0  # CreateProcess calls under way: the instance is not idle
        self.stopping = False  # terminate was asked: new launches wait for the end

    @property
    def busy(self) -> bool:
        return bool(self.relays) or self.launching > 0

    def __repr__(self) -> str:
        return f"<Instance {self.distribution.name} pid={self.vm_pid} relays={len(self.relays)}>"

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        if self.idle is not None:
            self.idle.cancel()
        for relay in self.relays:
            loop.remove_reader(relay.fileno())
            relay.close()
        self.relays.clear()
        for leader in self.leaders.values():
            leader.close()
        self.leaders.clear()
        self.link.close()
        self.ended.set()


class Runtime:
    def __init__(self, session: UserSession, settings: Settings, backend: VmBackend) -> None:
        self.session = session
        self.settings = settings
        self.backend = backend
        self.vm: Vm | None = None
        self.vm_warnings: list[str] = []  # said at every distribution start in this VM
        self.vm_mapping: Mapping | None = None  # the ids the running VM was started with
        self.trees = Trees(session.owner.uid, session.owner.gid)
        self.config: LxssConfig | None = None
        self.instances: dict[str, Instance] = {}
        self._lock = asyncio.Lock()
        # First-run setups under way, by distribution GUID: other launches wait for them.
        self.first_runs: dict[str, asyncio.Event] = {}
        self._vm_idle: asyncio.TimerHandle | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.debug_shells = 0  # --debug-shell sessions: they keep the VM up as instances do

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run *coroutine* in the background, keeping the task alive until it ends."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # Queries ---------------------------------------------------------------------

    def is_running(self, guid: str) -> bool:
        return guid in self.instances

    def vm_running(self) -> bool:
        return self.vm is not None and self.vm.running()

    def backends(self) -> tuple[str, ...]:
        return ("1",)

    def network_status(self) -> dict[str, Any]:
        """The VM's networking mode and, in Nat mode, its network and forwarded ports."""
        if self.vm is None or not self.vm.running():
            return {}
        status: dict[str, Any] = getattr(self.vm, "network_status", dict)()
        return {"mode": self.vm.spec.networking_mode, **status}

    # Configuration ----------------------------------------------------------------

    def load_config(self) -> LxssConfig:
        """/etc/lxss.conf and the owner's ~/.lxssconfig, read at VM start (as WSL reads
        .wslconfig). The machine's memory, processors and pidsLimit (set, or their
        defaults) are ceilings a user's file cannot raise: one user must not be able to
        take the machine from the others."""
        machine_file = self.settings.machine_config
        machine_text = read_regular_file(machine_file, CONFIG_LIMIT)
        user_file = os.path.join(self.session.owner.home, ".lxssconfig")
        # Read by root only if the user owns it and it is a plain file: a user must not make
        # the service read a file they could not read themselves.
        user_text = read_regular_file(
            user_file, CONFIG_LIMIT, owner_uid=self.session.uid, nofollow=True
        )
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
            log.warning("uid %d: %s", self.session.uid, warning)
        return config

    # The VM ----------------------------------------------------------------------

    async def ensure_vm(self) -> Vm:
        if self.vm is not None and self.vm.running():
            return self.vm
        if self.vm is not None:
            await self._vm_gone(force=True)
        self.config = config = self.load_config()
        modes = getattr(self.backend, "networking_modes", ("Mirrored",))
        mode, network_warning = netmodes.effective_mode(config.networking_mode.value, modes)
        self.vm_warnings = [network_warning] if network_warning else []
        spec = VmSpec(
            owner_uid=self.session.uid,
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
            mapping = self.session.run_mapping(config.root_distributions_mapped)
            self.vm = await self.backend.start(spec, mapping)
            self.vm_mapping = mapping
        except (VmStartError, OSError, TimeoutError) as e:
            raise errors.StartFailed(distribution="(utility VM)", reason=str(e)) from None
        log.info("uid %d: utility VM started in %.0f ms", self.session.uid,
                 (time.monotonic() - started) * 1000)  # fmt: skip
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
                        self._instance_gone(instance)
        except _GUEST_ERRORS:
            if self.vm is vm:
                await self._vm_gone(force=True)

    async def _vm_gone(self, force: bool = False) -> None:
        """Stop the VM (if any) and forget its instances. Unforced, mini_init is asked to
        end (its channel closes) and the VM's processes end in order, leaving no zombie."""
        vm, self.vm = self.vm, None
        for instance in list(self.instances.values()):
            self._instance_gone(instance)
        self.trees.close()  # its user namespaces are made again at the next VM's starts
        if vm is not None:
            log.info("uid %d: utility VM stopped", self.session.uid)
            await vm.stop(force=force)

    def _arm_vm_idle(self) -> None:
        if self._vm_idle is not None:
            self._vm_idle.cancel()
            self._vm_idle = None
        if self.instances or self.debug_shells or self.vm is None or self.session.locked:
            return
        timeout = self.config.vm_idle_timeout_ms if self.config else 60000
        if timeout < 0:
            return
        loop = asyncio.get_running_loop()
        self._vm_idle = loop.call_later(timeout / 1000, lambda: self.spawn(self._vm_idle_fired()))

    async def _vm_idle_fired(self) -> None:
        self._vm_idle = None
        if not self.instances and self.vm is not None:
            async with self._lock:
                if not self.instances and not self.debug_shells:
                    await self._vm_gone()

    async def debug_shell(self, stdio: tuple[int, int, int], term: str | None) -> int:
        """A shell in the utility VM (started if need be), outside every distribution."""
        async with self._lock:
            vm = await self.ensure_vm()
            self.debug_shells += 1
        try:
            return await vm.debug_shell(stdio, term)
        finally:
            self.debug_shells -= 1
            self._arm_vm_idle()

    # Instances -------------------------------------------------------------------

    @staticmethod
    def _claim(instance: Instance) -> Instance:
        instance.launching += 1
        if instance.idle is not None:
            instance.idle.cancel()
            instance.idle = None
        return instance

    async def ensure_instance(self, distribution: Distribution) -> Instance:
        """The running instance of *distribution*, started if needed, counted as launching
        (the caller must decrement `launching` when its launch is over)."""
        running = self.instances.get(distribution.guid)
        if running is not None and not running.stopping:
            return self._claim(running)  # the hot path: no lock, no wait behind other starts
        async with self._lock:
            # Checked again under the lock: an export or unregister may have begun meanwhile.
            self.session.ensure_unlocked(distribution)
            instance = self.instances.get(distribution.guid)
            if instance is not None and instance.stopping:
                # A terminate is under way: let that instance end, then start afresh.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(instance.ended.wait(), TERMINATE_TIMEOUT)
                if self.instances.get(distribution.guid) is instance:
                    await self._vm_gone(force=True)
                instance = None
            if instance is not None:
                return self._claim(instance)
            vm = await self.ensure_vm()
            if self._vm_idle is not None:
                self._vm_idle.cancel()
                self._vm_idle = None
            try:
                instance = await self._launch(vm, distribution)
            except BaseException:
                self._arm_vm_idle()
                raise
            self.instances[distribution.guid] = instance
            return self._claim(instance)

    async def _launch(self, vm: Vm, distribution: Distribution) -> Instance:
        name = distribution.name
        self.session.check_files(
            distribution, lambda reason: errors.StartFailed(distribution=name, reason=reason)
        )
        root_path = os.path.join(distribution.base_path, "rootfs")
        mapping = self.vm_mapping or self.session.mapping()
        try:
            stored = self.trees.open_stored(root_path, mapping)
        except OSError as e:
            raise errors.StartFailed(distribution=name, reason=f"its tree: {e.strerror}") from None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        link = GuestLink(ours, f"init:{name}")
        try:
            launch = m.MiniInitLaunchInit(
                distribution_name=name,
                guid=distribution.guid,
                root_path=root_path,
                hostname=vm.spec.hostname,
                flags=0,
                default_uid=distribution.default_uid,
            )
            try:
                plain = self.trees.plain(stored)
                try:
                    await vm.control.send(launch, [theirs.fileno(), plain])
                finally:
                    os.close(plain)
            finally:
                theirs.close()
            timeout = vm.spec.distribution_start_timeout_s
            result = await self.trees.start_result(link, stored, mapping, timeout)
            if result.result != 0:
                step = _failure_step(result.failure_step)
                detail = "; ".join(result.warnings) or os.strerror(result.result)
                raise errors.StartFailed(distribution=name, reason=f"{detail} (step: {step})")
            instance = Instance(distribution, vm, link, result.pid)
            instance.warnings = [*self.vm_warnings, *result.warnings]
            resolvers = hostinfo.host_resolvers(
                self.settings.host_resolv_conf,
                vm.spec.networking_mode == "Mirrored",
                getattr(vm, "dns_servers", None),
            )
            initialize = m.InitInitialize(
                hostname=vm.spec.hostname,
                domainname="",
                distribution_name=name,
                default_uid=distribution.default_uid,
                feature_flags=0,
                timezone=hostinfo.host_timezone(),
                dns_servers=resolvers.nameservers,
                dns_search=resolvers.search,
            )
            reply, _ = await link.transaction(initialize, m.InitInitializeResponse)
        except errors.VarlinkError:
            link.close()
            raise
        except _GUEST_ERRORS as e:
            link.close()
            raise errors.StartFailed(distribution=name, reason=str(e)) from None
        finally:
            os.close(stored)
        instance.default_uid = reply.default_uid
        instance.warnings += list(reply.warnings)
        if (reply.flavor or "", reply.version or "") != (
            distribution.os_id,
            distribution.os_version_id,
        ):
            self.session.registry.set_os_release(
                distribution.guid, reply.flavor or "", reply.version or ""
            )
        log.info("uid %d: %s started (init pid %d in the VM)", self.session.uid, name, result.pid)
        self._arm_idle(instance)
        return instance

    def _instance_gone(self, instance: Instance) -> None:
        if self.instances.get(instance.distribution.guid) is instance:
            del self.instances[instance.distribution.guid]
            log.info("uid %d: %s stopped", self.session.uid, instance.distribution.name)
        instance.close()
        self._arm_vm_idle()

    def _arm_idle(self, instance: Instance) -> None:
        if instance.idle is not None:
            instance.idle.cancel()
            instance.idle = None
        if instance.busy or instance.stopping:
            return
        timeout = self.config.instance_idle_timeout_ms if self.config else 15000
        if timeout < 0:
            return
        loop = asyncio.get_running_loop()

        def fire() -> None:
            instance.idle = None
            if not instance.busy and self.instances.get(instance.distribution.guid) is instance:
                # Marked now, in this callback: a command arriving before the stop task
                # runs must not claim an instance that is about to be stopped under it;
                # it waits for the end and starts the distribution afresh instead.
                instance.stopping = True
                self.spawn(self._stop(instance, force=False))

        instance.idle = loop.call_later(timeout / 1000, fire)

    def track_relay(self, instance: Instance, lifetime: socket.socket) -> None:
        """The relay holds the other end of *lifetime*; its closing means the relay ended."""
        loop = asyncio.get_running_loop()
        lifetime.setblocking(False)
        instance.relays.add(lifetime)
        if instance.idle is not None:
            instance.idle.cancel()
            instance.idle = None

        def ended() -> None:
            with contextlib.suppress(BlockingIOError):
                if lifetime.recv(1):
                    return  # a relay never writes; ignore anything it might
            loop.remove_reader(lifetime.fileno())
            instance.relays.discard(lifetime)
            lifetime.close()
            if self.instances.get(instance.distribution.guid) is instance:
                self._arm_idle(instance)

        loop.add_reader(lifetime.fileno(), ended)

    async def _leader(self, instance: Instance, console_id: int) -> GuestLink:
        """The session leader of *console_id* in *instance*, created on first use (one at a
        time: two launches from one console must not make two)."""
        async with instance.leader_lock:
            return await self._leader_locked(instance, console_id)

    async def _leader_locked(self, instance: Instance, console_id: int) -> GuestLink:
        leader = instance.leaders.get(console_id)
        if leader is not None and not leader.peer_gone():
            return leader
        if leader is not None:
            # Its session leader was killed (from inside, say): the console gets a new one.
            instance.leaders.pop(console_id).close()
        idle = [key for key, link in instance.leaders.items() if not link.busy]
        if len(instance.leaders) >= MAX_LEADERS and idle:
            instance.leaders.pop(idle[0]).close()  # the leader exits; its relays run on
        reply, fds = await instance.link.transaction(
            m.InitCreateSession(console_id=console_id), m.InitCreateSessionResponse
        )
        if reply.result != 0 or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise errors.StartFailed(
                distribution=instance.distribution.name,
                reason=f"no session leader: {os.strerror(reply.result or errno.EIO)}",
            )
        leader = GuestLink(socket.socket(fileno=fds[0]), f"session:{instance.distribution.name}")
        instance.leaders[console_id] = leader
        return leader

    # Operations ------------------------------------------------------------------

    async def create_process(self, call: Call) -> dict[str, Any]:
        p = call.parameters
        session = self.session
        distribution = session.resolve(p.get("distribution"))
        session.ensure_unlocked(distribution)
        names = ("control", "console", "stdin", "stdout", "stderr")
        fds = call.take_fds(*names)
        lifetime: socket.socket | None
        lifetime, lifetime_remote = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if fds["control"] is None:
                raise errors.InvalidParameter(parameter="control")
            flags = _stream_flags(fds, p.get("closed") or [])
            if flags & m.InitCreateProcess.CONSOLE_FLAGS and fds["console"] is None:
                raise errors.InvalidArgument(
                    parameter="console", reason="needed for every stream not passed as an fd"
                )
            if not flags & m.InitCreateProcess.CONSOLE_FLAGS and fds["console"] is not None:
                os.close(fds["console"])
                fds["console"] = None
            self._check_encodable(call, flags)  # before anything starts for nothing
            await self._wait_first_run(distribution.guid)
            instance = await self.ensure_instance(distribution)
            try:
                if (
                    firstrun.wanted(call)
                    and session.registry.first_run_pending(distribution.guid)
                    and distribution.guid not in self.first_runs
                    and await firstrun.start(self, instance, call, flags, fds)
                ):
                    warnings, instance.warnings = instance.warnings, []
                    warnings = bounded_warnings(warnings)
                else:
                    warnings = await self._launch_process(
                        instance, call, flags, fds, lifetime_remote
                    )
                    self.track_relay(instance, lifetime)
                    lifetime = None
            finally:
                instance.launching -= 1
                self.arm_idle_if_current(instance)
        finally:
            for fd in fds.values():
                if fd is not None:
                    os.close(fd)
            lifetime_remote.close()
            if lifetime is not None:
                lifetime.close()
        return {"guid": distribution.guid, "name": distribution.name, "warnings": warnings}

    async def _wait_first_run(self, guid: str) -> None:
        """A launch waits while the distribution's first-run setup runs (as in WSL)."""
        running = self.first_runs.get(guid)
        if running is not None:
            await asyncio.wait_for(running.wait(), firstrun.FIRST_RUN_TIMEOUT)

    def arm_idle_if_current(self, instance: Instance) -> None:
        if self.instances.get(instance.distribution.guid) is instance:
            self._arm_idle(instance)

    async def launch_shell(
        self, instance: Instance, call: Call, flags: int, fds: dict[str, int | None]
    ) -> None:
        """Launch *call*'s process on *fds* (the caller keeps them) and watch its relay."""
        lifetime, lifetime_remote = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await self._launch_process(instance, call, flags, fds, lifetime_remote)
        except BaseException:
            lifetime.close()
            raise
        finally:
            lifetime_remote.close()
        self.track_relay(instance, lifetime)

    @staticmethod
    def _process_message(
        call: Call, flags: int, default_uid: int, name: str
    ) -> m.InitCreateProcess:
        p = call.parameters
        return m.InitCreateProcess(
            rows=max(1, min(p["rows"], 0xFFFF)),
            columns=max(1, min(p["columns"], 0xFFFF)),
            flags=flags,
            shell_options=m.InitCreateProcess.SHELL_LOGIN if p["shellType"] == "login" else 0,
            default_uid=default_uid,
            filename=p.get("filename"),
            cwd=p.get("cwd"),
            username=p.get("username"),
            command_line=tuple(p["commandLine"]),
            environment=tuple(p["environment"]),
            distribution_name=name,
            host_cwd=p.get("hostCwd"),
        )

    def _check_encodable(self, call: Call, flags: int) -> None:
        """Strings the guest framing cannot carry (NUL; a surrogate that is not a byte's
        escape, see the interface file) are the caller's error."""
        try:
            m.encode(self._process_message(call, flags, 0, ""))
        except ValueError as e:
            raise errors.InvalidArgument(parameter="commandLine", reason=str(e)) from None

    async def _launch_process(
        self,
        instance: Instance,
        call: Call,
        flags: int,
        fds: dict[str, int | None],
        lifetime: socket.socket,
    ) -> list[str]:
        """Ask the console's session leader for a relay; the start warnings, on success."""
        p = call.parameters
        distribution = instance.distribution
        message = self._process_message(call, flags, instance.default_uid, distribution.name)
        ordered = message.order_fds(
            m.CreateProcessFds(
                control=fds["control"] or -1,
                lifetime=lifetime.fileno(),
                console=fds["console"],
                stdin=fds["stdin"],
                stdout=fds["stdout"],
                stderr=fds["stderr"],
            )
        )
        await self.launch_message(instance, message, ordered, p["consoleId"], p.get("username"))
        warnings, instance.warnings = instance.warnings, []
        return bounded_warnings(warnings)

    async def launch_message(self, instance: Instance, message: m.InitCreateProcess,
                             ordered: list[int], console_id: int,
                             username: str | None = None) -> None:  # fmt: skip
        """Send one InitCreateProcess to the console's session leader; an error if no relay
        started."""
        distribution = instance.distribution
        try:
            leader = await self._leader(instance, console_id)
            reply, _ = await leader.transaction(message, m.InitCreateProcessResponse, ordered)
        except _GUEST_ERRORS as e:
            reason = str(e)
            if instance.stopping or instance.ended.is_set():
                reason = "it was stopped (lxss --terminate or --shutdown) as the command started"
            raise errors.StartFailed(distribution=distribution.name, reason=reason) from None
        if reply.result == USER_NOT_FOUND:
            raise errors.UserNotFound(user=username or "")
        if reply.result == errno.EINVAL:
            raise errors.InvalidArgument(parameter="commandLine", reason=reply.message or "")
        if reply.result != 0:
            raise errors.LaunchFailed(reason=reply.message or os.strerror(reply.result))

    async def terminate(self, guid: str, force: bool, holding_lock: bool = False) -> None:
        """Stop one distribution: ask its init, then make sure (by stopping the VM, under
        the lock, which a caller such as `shutdown` may already hold).

        A start under way (it holds the lock) is waited for, then stopped: a caller that
        locked the distribution first (export, unregister) is then sure it is down.
        """
        if holding_lock:
            instance = self.instances.get(guid)
        else:
            async with self._lock:
                instance = self.instances.get(guid)
        if instance is not None:
            await self._stop(instance, force, holding_lock)

    async def _stop(self, instance: Instance, force: bool, holding_lock: bool = False) -> None:
        instance.stopping = True
        if instance.idle is not None:
            instance.idle.cancel()
            instance.idle = None
        with contextlib.suppress(*_GUEST_ERRORS):
            await instance.link.transaction(
                m.InitTerminateInstance(force=force), m.ResultBool, timeout=5.0
            )
        try:
            await asyncio.wait_for(instance.ended.wait(), TERMINATE_TIMEOUT)
        except TimeoutError:
            log.error("uid %d: %s did not stop; stopping the VM", self.session.uid,
                      instance.distribution.name)  # fmt: skip
            if holding_lock:
                await self._vm_gone(force=True)
                return
            async with self._lock:
                # A start waiting on this end may have stopped the VM itself meanwhile and
                # started a new one, which is not ours to stop.
                if not instance.ended.is_set():
                    await self._vm_gone(force=True)

    async def shutdown(self, force: bool) -> None:
        async with self._lock:
            if not force:
                for guid in list(self.instances):
                    await self.terminate(guid, force=False, holding_lock=True)
            await self._vm_gone(force=force)
            if self._vm_idle is not None:
                self._vm_idle.cancel()
                self._vm_idle = None


_STREAMS = (
    ("stdin", m.InitCreateProcess.STDIN_CONSOLE, m.InitCreateProcess.STDIN_CLOSED),
    ("stdout", m.InitCreateProcess.STDOUT_CONSOLE, m.InitCreateProcess.STDOUT_CLOSED),
    ("stderr", m.InitCreateProcess.STDERR_CONSOLE, m.InitCreateProcess.STDERR_CLOSED),
)


def _stream_flags(fds: dict[str, int | None], closed: list[str]) -> int:
    """InitCreateProcess's stream flags: each stream the caller closed is closed, each other
    one without an fd is served by the console."""
    unknown = set(closed) - {name for name, _, _ in _STREAMS}
    if unknown:
        raise errors.InvalidArgument(parameter="closed", reason=f"not a stream: {min(unknown)}")
    flags = 0
    for name, console, closed_flag in _STREAMS:
        if name in closed:
            if fds[name] is not None:
                raise errors.InvalidArgument(parameter="closed", reason=f"{name} has an fd")
            flags |= closed_flag
        elif fds[name] is None:
            flags |= console
    return flags


MAX_WARNINGS = 50  # a start's warnings passed on to the user; the rest are counted
MAX_WARNING_LENGTH = 1000


def bounded_warnings(warnings: list[str]) -> list[str]:
    """A distribution start's warnings as the user gets them: they come from files the
    distribution's root writes (/etc/wsl.conf), so their number and length are bounded."""
    kept = [w if len(w) <= MAX_WARNING_LENGTH else w[:MAX_WARNING_LENGTH] + "..."
            for w in warnings[:MAX_WARNINGS]]  # fmt: skip
    if len(warnings) > MAX_WARNINGS:
        kept.append(f"... and {len(warnings) - MAX_WARNINGS} more warnings like these")
    return kept


def _failure_step(number: int) -> str:
    """A start failure's step, for the user ("mount", "launch init"); any number will do."""
    try:
        return m.FailureStep(number).name.lower().replace("_", " ")
    except ValueError:
        return f"step {number}"


def runtime_factory(settings: Settings) -> Callable[[UserSession], Runtime]:
    layout = cgroup.Layout.detect()
    backend = NamespaceBackend(
        layout, settings.cgroup_name, settings.runtime_dir, settings.host_resolv_conf
    )

    def make(session: UserSession) -> Runtime:
        return Runtime(session, settings, backend)

    return make


def clean_exit(settings: Settings) -> None:
    """What the service removes when it stops, after every VM has: its top cgroup."""
    cgroup.remove_root(cgroup.Layout.detect(), settings.cgroup_name)


def clean_stale(settings: Settings) -> None:
    """Remove what a previous service (killed, crashed) left: VM cgroups and scratch dirs."""
    layout = cgroup.Layout.detect()
    for group in cgroup.stale_groups(layout, settings.cgroup_name):
        log.warning("removing stale cgroup %s", group.relative)
        group.destroy()
    nat.recover(os.path.join(settings.runtime_dir, "net"))  # veths, nft tables, sysctls
    scratch_root = os.path.join(settings.runtime_dir, "vm")
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(scratch_root):
            with contextlib.suppress(OSError):
                os.rmdir(entry.path)
