"""The namespace backend: a version 1 utility VM made of namespaces and a cgroup.

`start` turns a VmSpec into a running VM: a cgroup enforcing its memory, pids
and CPU limits; the boot process (lxss.vm.nsboot) placed in it, mapped into the
owner's user namespace and forked into mini_init; then the first exchange with
mini_init (GuestCapabilities, EarlyConfig, InitialConfig). The VM's console
(mini_init's and its children's stderr) goes to the service's log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess

from lxss.aio import wait_exited, wait_reaped
from lxss.bootstrap import bootstrap_argv
from lxss.config.resolvconf import HOST_RESOLV_CONF
from lxss.linux.cgroup import Cgroup, Layout, Limits, remove_root, stale_groups
from lxss.linux.confine import off_loop, start_in
from lxss.linux.subids import Mapping
from lxss.linux.userns import spawn_mapped
from lxss.protocol import messages as m
from lxss.vm import nat
from lxss.vm.backend import Link, VmBackend, VmStartError
from lxss.vm.backends import BackendContext
from lxss.vm.console import Console
from lxss.vm.link import GuestLink
from lxss.vm.nsnet import VmNetwork
from lxss.vm.spec import VmSpec
from lxss.vm.trees import Trees

log = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0


class NamespaceRoot:
    """A distribution's stored tree, handed to mini_init as a detached mount (and, on its
    request, id-mapped for its default user: lxss.vm.trees)."""

    def __init__(self, trees: Trees, base_path: str, mapping: Mapping) -> None:
        self.root_path = os.path.join(base_path, "rootfs")
        self._trees = trees
        self._mapping = mapping
        self._stored = trees.open_stored(self.root_path, mapping)
        try:
            self.fds = [trees.plain(self._stored)]
        except BaseException:
            os.close(self._stored)
            raise

    async def serve_start(self, link: Link, timeout: float) -> m.MiniInitCreateInstanceResult:
        return await self._trees.start_result(link, self._stored, self._mapping, timeout)

    def close(self) -> None:
        for fd in (self._stored, *self.fds):
            if fd >= 0:
                os.close(fd)
        self._stored, self.fds = -1, []


class NamespaceVm:
    """A running namespace VM. The backend's caller owns it and must `stop` it."""

    version = 1

    def __init__(
        self,
        spec: VmSpec,
        stored_mapping: Mapping,
        process: subprocess.Popen[bytes],
        control: GuestLink,
        notify: GuestLink,
        group: Cgroup,
        scratch: str,
        console_fd: int,
    ) -> None:
        self.spec = spec
        self.stored_mapping = stored_mapping  # the ids the distributions' trees are stored with
        self.trees = Trees(stored_mapping.uid.owner_id, stored_mapping.gid.owner_id)
        self.process = process
        self.control = control
        self.notify = notify
        self.group = group
        self.scratch = scratch
        self._stopped = False
        self.console = Console(console_fd, f"vm uid {spec.owner_uid}")
        self.network: VmNetwork | None = None  # Nat mode's host side

    def __repr__(self) -> str:
        return f"<NamespaceVm uid={self.spec.owner_uid} pid={self.process.pid} {self.state}>"

    @property
    def state(self) -> str:
        return "running" if self.process.poll() is None else "stopped"

    def running(self) -> bool:
        return self.process.poll() is None

    def open_channel(self, name: str) -> tuple[GuestLink, int]:
        """A socket pair: ours as a link, the guest's end as a descriptor (SCM_RIGHTS
        carries it across: mini_init shares our kernel)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        return GuestLink(ours, name), theirs.detach()

    def adopt(self, fd: int, name: str) -> GuestLink:
        return GuestLink(socket.socket(fileno=fd), name)

    def open_root(self, base_path: str) -> NamespaceRoot:
        return NamespaceRoot(self.trees, base_path, self.stored_mapping)

    async def wait(self, timeout: float) -> bool:
        """True once the VM's boot process has exited (and been reaped)."""
        return await wait_reaped(self.process, timeout)

    async def debug_shell(self, stdio: tuple[int, int, int], term: str | None) -> int:
        """Run a shell in the VM, outside every distribution, on *stdio* (lent: the caller
        keeps its copies); its exit status once it ends. In the VM's cgroup, so the VM's
        limits hold and stopping the VM ends it."""
        go_r, go_w = os.pipe2(os.O_CLOEXEC)
        argv = bootstrap_argv("lxss.vm.debugshell", str(self.process.pid), str(go_r))
        environment = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **({"TERM": term} if term else {})}
        try:
            shell = subprocess.Popen(
                argv, stdin=stdio[0], stdout=stdio[1], stderr=stdio[2], pass_fds=(go_r,),
                env=environment, cwd="/", start_new_session=True,
            )  # fmt: skip
        finally:
            os.close(go_r)
        try:
            try:
                self.group.add(shell.pid)
                os.write(go_w, b"1")
            finally:
                os.close(go_w)  # without "1", the helper gives up
            await wait_exited(shell.pid, None)
        finally:
            if shell.poll() is None:  # cancelled (the caller went away): end it
                shell.kill()
                await wait_exited(shell.pid, STOP_TIMEOUT)
            shell.wait(STOP_TIMEOUT)  # it has exited: this only reaps
        return shell.returncode

    async def stop(self, force: bool) -> None:
        """End the VM and everything in it; afterwards nothing of it remains on the host.
        Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self.trees.close()  # its user namespaces are made again at the next VM's starts
        self.control.close()  # mini_init returns when its channel closes: pid 1 ends, all end
        self.notify.close()
        if force or not await self.wait(STOP_TIMEOUT):
            await off_loop(self.group.kill)
            await self.wait(STOP_TIMEOUT)
        self.console.close()
        await off_loop(self.group.destroy)
        if self.network is not None:
            await self.network.stop()
        with contextlib.suppress(OSError):
            os.rmdir(self.scratch)

    @property
    def dns_servers(self) -> tuple[str, ...] | None:
        """The resolvers a distribution must use instead of the host's (None: the host's)."""
        return self.network.dns_servers if self.network is not None else None

    def network_status(self) -> dict[str, object]:
        return self.network.status() if self.network is not None else {}


def _fresh_scratch(scratch: str) -> None:
    """An empty scratch directory for a VM, root's and mode 0700: mini_init mounts a tmpfs
    of its own on it (in the VM's mount namespace), so the owner never writes here on
    the host. What an older service left (a directory of the owner's, with whatever the
    owner put in it) is removed first, in a thread, never on the event loop."""
    os.makedirs(os.path.dirname(scratch), 0o755, exist_ok=True)
    try:
        os.rmdir(scratch)
    except FileNotFoundError:
        pass
    except OSError:
        shutil.rmtree(scratch)
    os.mkdir(scratch, 0o700)


def _check_reachable(directory: str, vm_uid: int) -> None:
    """The VM's root (uid *vm_uid* on the host) must be able to reach its scratch directory
    by path: say so clearly when a parent is closed to it (root's mapped distributions run
    as an unprivileged id, for which a 0700 parent of root's is a wall)."""
    path = os.path.abspath(directory)
    while True:
        st = os.stat(path)
        if st.st_uid != vm_uid and not st.st_mode & 0o001:
            raise VmStartError(
                f"the utility VM runs as uid {vm_uid} on the host and cannot reach {path} "
                f"(mode {st.st_mode & 0o777:o}): make it traversable by others"
                + (" or set [security] rootDistributionsMapped = false" if vm_uid else "")
            )
        if path == "/":
            return
        path = os.path.dirname(path)


class NamespaceBackend:
    version = 1
    networking_modes = frozenset(
        {m.NetworkingMode.MIRRORED, m.NetworkingMode.NAT, m.NetworkingMode.NONE}
    )

    def __init__(
        self,
        layout: Layout,
        cgroup_root: str,
        runtime_dir: str,
        host_resolv_conf: str = HOST_RESOLV_CONF,
    ) -> None:
        self.layout = layout
        self.cgroup_root = cgroup_root
        self.runtime_dir = runtime_dir
        self.host_resolv_conf = host_resolv_conf

    @property
    def network_state_dir(self) -> str:
        """Where each NAT VM's host-side changes are recorded (see lxss.vm.nat.recover)."""
        return os.path.join(self.runtime_dir, "net")

    def recover(self) -> None:
        """Remove what a previous service (killed, crashed) left: VM cgroups and scratch
        directories."""
        for group in stale_groups(self.layout, self.cgroup_root):
            log.warning("removing stale cgroup %s", group.relative)
            group.destroy()
        nat.recover(self.network_state_dir)  # veths, nft tables, sysctls
        scratch_root = os.path.join(self.runtime_dir, "vm")
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(scratch_root):
                with contextlib.suppress(OSError):
                    os.rmdir(entry.path)

    def close(self) -> None:
        """What the service removes when it stops, after every VM has: its top cgroup."""
        remove_root(self.layout, self.cgroup_root)

    def scratch_dir(self, uid: int) -> str:
        return os.path.join(self.runtime_dir, "vm", str(uid))

    async def start(self, spec: VmSpec, mapping: Mapping) -> NamespaceVm:
        uid = spec.owner_uid
        stored_mapping, mapping = mapping, mapping.for_vm()  # the VM's root: the owner's face
        group = Cgroup(self.layout, f"{self.cgroup_root}/user-{uid}")
        await off_loop(group.destroy)  # a VM of this user that a crashed service left behind
        group.create(Limits(spec.memory_bytes, spec.pids_limit, spec.processors))
        scratch = self.scratch_dir(uid)
        await off_loop(lambda: _fresh_scratch(scratch))
        _check_reachable(os.path.dirname(scratch), mapping.uid.owner_id)
        control, control_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        notify, notify_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        console_r, console_w = os.pipe2(os.O_CLOEXEC)
        argv = bootstrap_argv(
            "lxss.vm.nsboot",
            spec.to_json(),
            scratch,
            str(control_child.fileno()),
            str(notify_child.fileno()),
        )
        try:
            pending = spawn_mapped(
                argv,
                pass_fds=(control_child.fileno(), notify_child.fileno()),
                stdout=console_w,
                stderr=console_w,
            )
        except BaseException:
            for closable in (control, notify, control_child, notify_child):
                closable.close()
            os.close(console_r)
            await off_loop(group.destroy)
            raise
        finally:
            os.close(console_w)
        control_child.close()
        notify_child.close()
        try:
            await start_in(pending, group, mapping, spec.boot_timeout_s)
        except BaseException:
            control.close()
            notify.close()
            os.close(console_r)
            await off_loop(group.destroy)
            raise
        vm = NamespaceVm(
            spec,
            stored_mapping,
            pending.proc,
            GuestLink(control, "mini_init"),
            GuestLink(notify, "notify"),
            group,
            scratch,
            console_r,
        )
        try:
            await self._first_contact(vm)
        except BaseException:
            await vm.stop(force=True)
            raise
        return vm

    async def _first_contact(self, vm: NamespaceVm) -> None:
        spec = vm.spec
        try:
            await vm.control.receive((m.MiniInitGuestCapabilities,), timeout=spec.boot_timeout_s)
            # mini_init is up: the boot process has made the VM's network namespace.
            interface = None
            if spec.networking_mode is m.NetworkingMode.NAT:
                vm.network = VmNetwork(
                    self.network_state_dir, self.host_resolv_conf, spec.owner_uid
                )
                interface = await vm.network.attach(vm.process.pid)
            early = m.MiniInitEarlyConfig(
                hostname=spec.hostname,
                memory_bytes=spec.memory_bytes,
                processors=spec.processors,
                flags=0,
                networking_mode=spec.networking_mode,
            )
            result, _ = await vm.control.transaction(early, m.ResultInt32)
        except (OSError, EOFError, ValueError) as e:  # ChannelClosed, ProtocolError among them
            raise VmStartError(f"the utility VM did not start: {e}") from e
        try:
            if result.value != 0:
                raise VmStartError(f"gns: loopback: {os.strerror(result.value)}")
            if interface is not None and vm.network is not None:
                # As WSL's service: distributions start only once gns has answered.
                configuration = m.GnsInterfaceConfiguration(configuration=interface)
                answer, _ = await vm.control.transaction(configuration, m.GnsResult)
                if answer.result != 0:
                    raise VmStartError(f"gns: {answer.error or os.strerror(answer.result)}")
                await vm.network.start_services(vm.process.pid, spec.localhost_forwarding)
        except (OSError, EOFError, ValueError) as e:
            raise VmStartError(f"the utility VM's network: {e}") from e
        initial = m.MiniInitInitialConfig(
            networking_mode=spec.networking_mode, entropy=os.urandom(64)
        )
        await vm.control.send(initial)


def backend(context: BackendContext) -> VmBackend:
    """Version 1's backend (lxss.vm.backends): namespaces need nothing more than the
    kernel lxssd runs on."""
    return NamespaceBackend(
        context.cgroup_layout, context.cgroup_root, context.runtime_dir, context.host_resolv_conf
    )
