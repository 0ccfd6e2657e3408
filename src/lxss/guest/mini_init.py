"""mini_init: pid 1 of the utility VM (WSL's mini_init; technical documentation: mini_init.md).

Serves the service's channel one message at a time:

- EarlyConfig: the VM's hostname; the shared /mnt/wsl tmpfs; starts gns and
  answers with its result (a transaction);
- InitialConfig: networking settings;
- LaunchInit (+ the new distribution's channel): forks a child in new
  mount, pid, UTS and IPC namespaces that mounts the distribution's root,
  pivots into it and becomes its init.

When a distribution's init exits, mini_init reports ChildExit on the notify
channel. When the service closes the channel, mini_init returns and, being
pid 1 of the VM's pid namespace, takes every process of the VM with it.

Everything a distribution's init, session leaders and relays run is imported
here, at the top: they run in the same interpreter after pivot_root, where the
host's Python library is out of reach.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys
import traceback

from lxss import readiness
from lxss.guest import gns, init, mounts
from lxss.linux import syscalls as sc
from lxss.linux.children import ChildWatch
from lxss.linux.proctitle import set_title
from lxss.protocol import messages as m
from lxss.protocol.channel import Channel, ChannelClosed
from lxss.protocol.framing import ProtocolError
from lxss.vm.spec import VmSpec

HOST_MOUNT = "/mnt/host"


class MiniInit:
    def __init__(self, spec: VmSpec, control: Channel, notify: Channel) -> None:
        self.spec = spec
        self.control = control
        self.notify = notify
        self.scratch = str(spec.extra["scratch"])
        self.shared = os.path.join(self.scratch, "shared")
        self.distributions: dict[int, str] = {}
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
        self.control.send(m.MiniInitGuestCapabilities(kernel_version=os.uname().release, pid=1))

    # Messages ------------------------------------------------------------------

    def early_config(self, header: m.MessageHeader, message: m.MiniInitEarlyConfig) -> None:
        if message.hostname:
            sc.sethostname(message.hostname)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = gns.main(self.spec.networking_mode)
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        self.control.reply(header, m.ResultInt32(value=os.waitstatus_to_exitcode(status)))

    def launch_init(self, message: m.MiniInitLaunchInit, fds: list[int]) -> None:
        """Start a distribution's init, taking ownership of *fds* (its channel first).

        If it cannot be started (fork's EAGAIN at the VM's pids limit, say), the
        distribution's channel gets the CreateInstanceResult the service waits for, and
        mini_init serves on: the VM and its other distributions are not this start's to
        take down.
        """
        try:
            pid = self._fork_init(message, fds[0])
        except OSError as e:
            _report_launch_failure(fds[0], e)
            return
        finally:
            for fd in fds:
                os.close(fd)
        self.distributions[pid] = message.distribution_name or "?"

    def _fork_init(self, message: m.MiniInitLaunchInit, channel_fd: int) -> int:
        """Fork the distribution's init, pid 1 of a new pid namespace; return its pid.

        unshare(CLONE_NEWPID) only affects our next child, so we fork and then setns back
        to our own namespace, whether the fork worked or not: the children after it (the
        next distribution's init, gns) must not land in a namespace of their own.
        """
        own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        try:
            sc.unshare(sc.CLONE_NEWPID)
            try:
                pid = os.fork()
                if pid == 0:
                    self._become_distribution(message, channel_fd)  # never returns
            finally:
                sc.setns(own_pid_ns, sc.CLONE_NEWPID)
        finally:
            os.close(own_pid_ns)
        return pid

    def _become_distribution(self, message: m.MiniInitLaunchInit, channel_fd: int) -> None:
        """In the child: namespaces, mounts, pivot_root, then init. Never returns."""
        code = 1
        channel = None
        try:
            sc.set_pdeathsig(signal.SIGKILL)
            self.children.close()
            self.control.close()
            self.notify.close()
            channel = Channel(socket.socket(fileno=channel_fd), "init")
            vm_pid = _pid_in_parent_namespace()
            step = m.FailureStep.MOUNT
            try:
                sc.unshare(sc.CLONE_NEWNS | sc.CLONE_NEWUTS | sc.CLONE_NEWIPC)
                if message.hostname:
                    sc.sethostname(message.hostname)
                layout = mounts.RootLayout(
                    root=message.root_path or "",
                    shared_dir=self.shared,
                    own_network=self.spec.networking_mode == "None",
                    host_mount=HOST_MOUNT,
                    vm_mounts=(self.scratch,),
                )
                mounts.apply_plan(mounts.distribution_plan(layout), layout.root)
                mounts.pivot_into(layout.root)
                step = m.FailureStep.LAUNCH_INIT
            except OSError as e:
                channel.send(
                    m.MiniInitCreateInstanceResult(
                        result=e.errno or errno.EIO,
                        failure_step=step,
                        pid=vm_pid,
                        warnings=(str(e),),
                    )
                )
                return
            code = init.main(channel, message, vm_pid, HOST_MOUNT)
        except BaseException:
            traceback.print_exc()
        finally:
            if channel is not None:
                channel.close()
            os._exit(code)

    # Children --------------------------------------------------------------------

    def reap(self) -> None:
        for pid, status in self.children.reap():
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
                pass  # networking settings: applied by gns once it configures interfaces
            elif isinstance(message, m.MiniInitLaunchInit):
                self.launch_init(message, fds)
            else:
                for fd in fds:
                    os.close(fd)
                # As WSL's mini_init does: an unknown message means service and VM disagree.
                print(f"mini_init: unexpected {type(message).__name__}", file=sys.stderr)
                return 1


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


def _pid_in_parent_namespace() -> int:
    """Our pid as mini_init sees it (the /proc mounted now is the VM's)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return int(line.split()[1])
    return 0


def main(spec: VmSpec, control_fd: int, notify_fd: int) -> int:
    set_title("lxss-mini_init")
    control = Channel(socket.socket(fileno=control_fd), "mini_init", timeout=30.0)
    notify = Channel(socket.socket(fileno=notify_fd), "notify", timeout=30.0)
    vm = MiniInit(spec, control, notify)
    try:
        vm.boot()
        return vm.serve()
    except (ProtocolError, TimeoutError) as e:
        print(f"mini_init: {e}", file=sys.stderr)
        return 1
    finally:
        control.close()
        notify.close()
