"""mini_init: pid 1 of the utility VM (WSL's mini_init; technical documentation: mini_init.md).

Serves the service's channel one message at a time:

- EarlyConfig: the VM's hostname and networking mode; the VM's own sysfs when it
  has a network of its own; starts gns and answers with its result (a transaction);
- InitialConfig: the networking mode again (it must agree), and entropy for a
  kernel of the VM's own (a namespace VM shares the host's pool: nothing to do);
- GnsInterfaceConfiguration: gns configures the interface the service attached (a NAT
  VM's eth0) and answers with GnsResult (a transaction);
- LaunchInit (+ the new distribution's channel and its tree, a detached mount):
  forks the distribution's boot process, which reads who the default user is,
  gets the tree id-mapped for that user from the service (MapIdentity), enters a
  user namespace of the distribution's own in which that user is the owner (see
  lxss.linux.idmap), then new mount, pid, UTS and IPC namespaces, and forks the
  distribution's init: it mounts the tree and the rest, pivots into it and runs.
  The boot process stays as init's parent; its end is the distribution's.

mini_init is given its channels and its scratch directory (a boot parameter, as a
kernel command line gives /init its settings) and nothing else: every other setting
arrives over the channel, so the same module runs in a QEMU guest.

When a distribution's init exits, mini_init reports ChildExit on the notify
channel. When the service closes the channel, mini_init returns and, being
pid 1 of the VM's pid namespace, takes every process of the VM with it.

Everything a distribution's init, session leaders and relays run is imported
here, at the top: they run in the same interpreter after pivot_root, where the
host's Python library is out of reach.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import sys
import traceback

from lxss import readiness
from lxss.guest import gns, init, mounts
from lxss.guest.identity import default_ids
from lxss.linux import syscalls as sc
from lxss.linux.children import ChildWatch, exit_code
from lxss.linux.entropy import add_entropy
from lxss.linux.idmap import enter_nested_user_namespace, swap_lines
from lxss.linux.proctitle import set_title
from lxss.protocol import messages as m
from lxss.protocol.channel import Channel, ChannelClosed
from lxss.protocol.framing import ProtocolError

HOST_MOUNT = "/mnt/host"
# lxss's native tools for distributions, built by setup.sh (lxss/guest/native/lxss-guest.c).
TOOLS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "native", "bin")


def _tools_dir() -> str | None:
    return TOOLS_DIR if os.path.isfile(os.path.join(TOOLS_DIR, "lxss-guest")) else None


class MiniInit:
    def __init__(
        self, control: Channel, notify: Channel, scratch: str, own_kernel: bool = False
    ) -> None:
        self.own_kernel = own_kernel  # version 2: pid 1 of a kernel of our own (boot parameter)
        self.control = control
        self.notify = notify
        # Until EarlyConfig says otherwise: the host's network, as version 1 has it.
        self.networking_mode = m.NetworkingMode.MIRRORED
        self.scratch = scratch
        self.shared = os.path.join(self.scratch, "shared")
        self.sysfs = os.path.join(self.scratch, "sys")
        self.distributions: dict[int, str] = {}
        self.mount_points: dict[int, str] = {}
        self.children = ChildWatch()

    # Boot ----------------------------------------------------------------------

    def boot(self) -> None:
        # Our own /proc, for our pid namespace (the copy we inherited shows the host's).
        sc.mount("proc", "/proc", "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
        sc.mount("tmpfs", self.scratch, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=700,size=1m")
        os.mkdir(self.shared, 0o755)
        sc.mount("wsl", self.shared, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=755")
        # Shared: what one distribution mounts under /mnt/wsl, all of them see.
        sc.mount(None, self.shared, None, sc.MS_SHARED)
        os.mkdir(os.path.join(self.scratch, "roots"), 0o700)
        self.control.send(m.MiniInitGuestCapabilities(kernel_version=os.uname().release, pid=1))

    # Messages ------------------------------------------------------------------

    @property
    def own_network(self) -> bool:
        """The VM has a network namespace of its own (every mode but Mirrored)."""
        return not self.networking_mode.shares_host_network

    def early_config(self, header: m.MessageHeader, message: m.MiniInitEarlyConfig) -> None:
        try:
            self.networking_mode = m.NetworkingMode(message.networking_mode)
        except ValueError:
            self.control.reply(header, m.ResultInt32(value=errno.EINVAL))
            return
        if message.hostname:
            sc.sethostname(message.hostname)
        if self.own_network and not os.path.isdir(self.sysfs):
            # A sysfs of the VM's own network namespace, mounted here (only the namespace's
            # owner may): distributions, in user namespaces of their own, bind it.
            os.mkdir(self.sysfs, 0o755)
            sc.mount("sysfs", self.sysfs, "sysfs", mounts.NOSUID_NODEV_NOEXEC | sc.MS_RDONLY)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = gns.main(self.networking_mode)
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        self.control.reply(header, m.ResultInt32(value=os.waitstatus_to_exitcode(status)))

    def initial_config(self, message: m.MiniInitInitialConfig) -> None:
        """The networking mode, sent again once the guest is up, must be EarlyConfig's (a
        service and a VM that disagree are said to the VM's console). Its entropy seeds the
        pool of a kernel of our own; a namespace VM shares the host's."""
        if message.networking_mode != self.networking_mode:
            print(
                f"mini_init: InitialConfig's networking mode {message.networking_mode} is not "
                f"EarlyConfig's ({int(self.networking_mode)}); keeping EarlyConfig's",
                file=sys.stderr,
            )
        if self.own_kernel:
            add_entropy(message.entropy)

    def configure_interface(
        self, header: m.MessageHeader, message: m.GnsInterfaceConfiguration
    ) -> None:
        """gns applies the configuration in a child (pid 1 holds no netlink socket and
        survives whatever the kernel says); its answer comes back through a pipe."""
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(read_end)
                number, text = gns.configure(message.configuration or "")
                os.write(write_end, f"{number}\n{text}".encode()[:4096])
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        with open(read_end, "rb") as pipe:
            answer = pipe.read(4096).decode(errors="replace")
        _, status = os.waitpid(pid, 0)
        number_text, _, text = answer.partition("\n")
        if os.waitstatus_to_exitcode(status) != 0 or not number_text.isdigit():
            number, text = errno.EIO, "gns ended without an answer"
        else:
            number = int(number_text)
        self.control.reply(header, m.GnsResult(result=number, error=text))

    def launch_init(self, message: m.MiniInitLaunchInit, fds: list[int]) -> None:
        """Start a distribution, taking ownership of *fds* (its channel, then its tree).

        If it cannot be started (fork's EAGAIN at the VM's pids limit, say), the
        distribution's channel gets the CreateInstanceResult the service waits for, and
        mini_init serves on: the VM and its other distributions are not this start's to
        take down.
        """
        mount_point = os.path.join(self.scratch, "roots", message.guid or "unnamed")
        try:
            for path in (mount_point, mount_point + ".host"):
                with contextlib.suppress(FileExistsError):
                    os.mkdir(path, 0o755)
            pid = os.fork()
            if pid == 0:
                self._boot_distribution(message, fds[0], fds[1], mount_point)  # never returns
        except OSError as e:
            _report_launch_failure(fds[0], e)
            _remove_mount_point(mount_point)
            return
        finally:
            for fd in fds:
                os.close(fd)
        self.distributions[pid] = message.distribution_name or "?"
        self.mount_points[pid] = mount_point

    def _boot_distribution(
        self, message: m.MiniInitLaunchInit, channel_fd: int, tree_fd: int, mount_point: str
    ) -> None:
        """In the child: the distribution's user and other namespaces, then its init as our
        child (pid 1 of the new pid namespace). Never returns."""
        code = 1
        channel = None
        try:
            sc.set_pdeathsig(signal.SIGKILL)
            self.children.close()
            self.control.close()
            self.notify.close()
            channel = Channel(socket.socket(fileno=channel_fd), "init")
            vm_pid = os.getpid()  # we are in the VM's pid namespace: init's parent is us
            try:
                # The host's view for /mnt/host, made while we may still unmount in it.
                sc.unshare(sc.CLONE_NEWNS)
                staging = mount_point + ".host"
                mounts.apply_plan(
                    mounts.host_view_plan(staging, (self.scratch,)), os.path.dirname(staging)
                )
                tree_fd = _own_tree(channel, message, tree_fd)
                sc.unshare(sc.CLONE_NEWNS | sc.CLONE_NEWUTS | sc.CLONE_NEWIPC | sc.CLONE_NEWPID)
                if message.hostname:
                    sc.sethostname(message.hostname)
                # Before the fork: init's pivot_root moves our root too (one mount
                # namespace), and its /proc has no /proc/self of ours.
                set_title("lxss-distribution")
                pid = os.fork()
            except (OSError, ValueError, TimeoutError) as e:
                _send_failure(channel, e, m.FailureStep.MOUNT, vm_pid)
                return
            if pid == 0:
                code = self._become_init(message, channel, tree_fd, mount_point, vm_pid)
                return
            channel.close()
            os.close(tree_fd)
            code = _wait_for(pid)
        except BaseException:
            traceback.print_exc()
        finally:
            if channel is not None:
                channel.close()
            os._exit(code)

    def _become_init(
        self,
        message: m.MiniInitLaunchInit,
        channel: Channel,
        tree_fd: int,
        mount_point: str,
        vm_pid: int,
    ) -> int:
        """In init (pid 1 of the distribution's pid namespace): mounts, pivot_root, init."""
        sc.set_pdeathsig(signal.SIGKILL)
        try:
            sc.move_mount(tree_fd, mount_point)
            os.close(tree_fd)
            layout = mounts.RootLayout(
                root=mount_point,
                shared_dir=self.shared,
                own_network=self.own_network,
                host_mount=HOST_MOUNT,
                vm_mounts=(self.scratch,),
                sys_source=self.sysfs if self.own_network else "/sys",
                host_source=mount_point + ".host",
                tools_dir=_tools_dir(),
            )
            mounts.apply_plan(mounts.distribution_plan(layout), layout.root)
            mounts.pivot_into(layout.root)
        except OSError as e:
            _send_failure(channel, e, m.FailureStep.MOUNT, vm_pid)
            return 1
        return init.main(channel, message, vm_pid, HOST_MOUNT)

    # Children --------------------------------------------------------------------

    def reap(self) -> None:
        for pid, status in self.children.reap():
            _remove_mount_point(self.mount_points.pop(pid, None))
            name = self.distributions.pop(pid, None)
            if name is not None:
                try:
                    self.notify.send(m.MiniInitChildExit(child_pid=pid, status=status))
                except (OSError, ChannelClosed):
                    pass  # the service is gone; it will close our channel too

    # Loop ----------------------------------------------------------------------------

    def serve(self) -> int:
        while True:
            # The channel never reads past a message, so the socket alone says whether
            # another one is waiting.
            try:
                ready, _ = readiness.ready((self.control.fileno(), self.children.fileno()))
            except InterruptedError:
                continue
            if self.children.fileno() in ready:
                self.reap()
            if self.control.fileno() not in ready:
                continue
            try:
                header, message, fds = self.control.receive_with_header(timeout=30.0)
            except ChannelClosed:
                return 0
            if isinstance(message, m.MiniInitEarlyConfig):
                self.early_config(header, message)
            elif isinstance(message, m.MiniInitInitialConfig):
                self.initial_config(message)
            elif isinstance(message, m.GnsInterfaceConfiguration):
                self.configure_interface(header, message)
            elif isinstance(message, m.MiniInitLaunchInit):
                self.launch_init(message, fds)
            else:
                for fd in fds:
                    os.close(fd)
                # As WSL's mini_init does: an unknown message means service and VM disagree.
                print(f"mini_init: unexpected {type(message).__name__}", file=sys.stderr)
                return 1


def _own_tree(channel: Channel, message: m.MiniInitLaunchInit, tree_fd: int) -> int:
    """Enter the distribution's own user namespace, where its default user is the owner,
    and return the tree to mount: id-mapped for that user by the service (the plain
    *tree_fd* is closed then), or *tree_fd* itself when the mapping is the stored one."""
    uid, gid = default_ids(tree_fd, message.default_uid)
    uid_lines, gid_lines = swap_lines(uid), swap_lines(gid)  # ValueError: not a mapped id
    reply, fds = channel.transaction(
        m.MiniInitMapIdentity(uid=uid, gid=gid), m.MiniInitMapIdentityResponse, timeout=30.0
    )
    if reply.result != 0:
        raise OSError(reply.result, reply.reason or os.strerror(reply.result))
    if fds:
        os.close(tree_fd)
        tree_fd = fds[0]
    enter_nested_user_namespace(uid_lines, gid_lines)
    return tree_fd


def _send_failure(channel: Channel, error: Exception, step: int, vm_pid: int) -> None:
    number = error.errno if isinstance(error, OSError) and error.errno else errno.EINVAL
    channel.send(
        m.MiniInitCreateInstanceResult(
            result=number, failure_step=step, pid=vm_pid, warnings=(str(error),)
        )
    )


def _wait_for(pid: int) -> int:
    """Wait for init; its exit code (128+N for death by signal N) is ours."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            return exit_code(status)
        except ChildProcessError:
            return 1
        except InterruptedError:
            continue


def _remove_mount_point(path: str | None) -> None:
    if path is not None:
        for directory in (path, path + ".host"):
            with contextlib.suppress(OSError):
                os.rmdir(directory)


def _report_launch_failure(channel_fd: int, error: OSError) -> None:
    """Tell the service, on the distribution's channel, that its init could not be started.

    *channel_fd* stays the caller's (a duplicate is used and closed here). A service that
    has gone meanwhile is no reason to stop serving the others.
    """
    try:
        channel = Channel(socket.socket(fileno=os.dup(channel_fd)), "init")
    except OSError as e:
        print(f"mini_init: cannot report a failed launch: {e}", file=sys.stderr)
        return
    with channel:
        try:
            channel.send(
                m.MiniInitCreateInstanceResult(
                    result=error.errno or errno.EIO,
                    failure_step=m.FailureStep.LAUNCH_INIT,
                    pid=0,
                    warnings=(f"cannot start the distribution's init: {error.strerror or error}",),
                )
            )
        except (OSError, ChannelClosed, TimeoutError) as e:
            print(f"mini_init: cannot report a failed launch: {e}", file=sys.stderr)


def main(control_fd: int, notify_fd: int, scratch: str, own_kernel: bool = False) -> int:
    """Serve the utility VM's channel (*control_fd*; ChildExit goes to *notify_fd*), with
    *scratch* as the VM's own directory; returns when the service closes the channel.
    *own_kernel*: pid 1 of a kernel of our own (version 2), whose entropy pool we seed."""
    set_title("lxss-mini_init")
    control = Channel(socket.socket(fileno=control_fd), "mini_init", timeout=30.0)
    notify = Channel(socket.socket(fileno=notify_fd), "notify", timeout=30.0)
    vm = MiniInit(control, notify, scratch, own_kernel)
    try:
        vm.boot()
        return vm.serve()
    except (ProtocolError, TimeoutError) as e:
        print(f"mini_init: {e}", file=sys.stderr)
        return 1
    finally:
        control.close()
        notify.close()
