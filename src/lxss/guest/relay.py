"""The relay: one per launched program (WSL's relay; technical documentation: relay.md).

Forked by the session leader, it forks the program and stays its parent:

- streams that are pipes or files were passed to the program itself, so they
  need nothing from the relay;
- streams that are terminals share a pty allocated here, in the
  distribution's own devpts; the relay copies between its master and the
  client's console socket;
- the control channel brings window-size changes (TIOCSWINSZ, which also
  signals the foreground process group) and signals to forward, and takes the
  exit status back: the program's code, or 128+N for death by signal N.

The relay is a child subreaper: a daemon the program leaves behind becomes the
relay's child, and the relay (with the lifetime socket the service watches)
lives until the last of them exits — the distribution stays up meanwhile, as
in WSL. If the client goes away, a program on pipes runs on; a program on a
pty gets SIGHUP, as when a terminal closes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import os
import signal
import socket
import termios
import warnings  # noqa: F401  # os.get_exec_path (os.execvpe) imports it lazily: after pivot_root
from collections.abc import Callable

from lxss import readiness
from lxss.guest.interop import InteropServer, host_path_shims, socket_path
from lxss.guest.process import Plan
from lxss.linux import syscalls as sc
from lxss.linux.children import ChildWatch, exit_code
from lxss.linux.proctitle import set_title
from lxss.protocol import messages as m
from lxss.protocol.channel import Channel, ChannelClosed
from lxss.protocol.framing import ProtocolError

CHUNK = 65536
DRAIN_IDLE = 0.1  # after the program exits, output still in flight through the pty
# While no process holds the pty's slave, its master reads EIO and polls readable at once:
# it is looked at again this often (a process may reopen the terminal, /dev/tty say).
HUNG_UP_RECHECK = 0.5
ACK_TIMEOUT = 5.0
_STANDARD = (
    (m.InitCreateProcess.STDIN_CONSOLE, "stdin"),
    (m.InitCreateProcess.STDOUT_CONSOLE, "stdout"),
    (m.InitCreateProcess.STDERR_CONSOLE, "stderr"),
)


def set_window_size(fd: int, rows: int, columns: int) -> None:
    size = rows.to_bytes(2, "little") + columns.to_bytes(2, "little") + bytes(4)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, size)


def _exec_program(plan: Plan, streams: list[int | None], controlling_tty: int | None) -> None:
    """In the forked child: become the program. Never returns."""
    try:
        os.setsid()
        if controlling_tty is not None:
            fcntl.ioctl(controlling_tty, termios.TIOCSCTTY, 0)
        # Move the streams out of the way first (above 2): a passed fd may sit at 0, 1 or 2.
        high = [None if fd is None else fcntl.fcntl(fd, fcntl.F_DUPFD, 3) for fd in streams]
        for target, fd in enumerate(high):
            if fd is None:
                with contextlib.suppress(OSError):  # not open here either
                    os.close(target)  # the caller's stream was closed: so is the program's
            else:
                os.dup2(fd, target)
        os.closerange(3, 1 << 20)
        for sig in range(1, signal.NSIG):
            with contextlib.suppress(OSError, ValueError, RuntimeError):
                signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.setgroups(plan.groups)
        os.setresgid(plan.user.gid, plan.user.gid, plan.user.gid)
        os.setresuid(plan.user.uid, plan.user.uid, plan.user.uid)
        os.umask(plan.umask)
        for warning in plan.warnings:
            _say(f"lxss: warning: {warning}\n")
        try:
            os.chdir(plan.cwd)
        except OSError as e:
            home = plan.user.home
            _say(f"lxss: warning: cannot enter {plan.cwd}: {e.strerror}; starting in {home}\n")
            with contextlib.suppress(OSError):
                os.chdir(plan.user.home)
        try:
            os.execvpe(plan.executable, plan.argv, plan.environment)
        except OSError as e:
            _say(f"lxss: {plan.executable}: {e.strerror}\n")
            os._exit(127 if e.errno in (errno.ENOENT, errno.ENOTDIR) else 126)
    except BaseException as e:
        _say(f"lxss: cannot start {plan.executable}: {e}\n")
    os._exit(126)


def _say(text: str) -> None:
    """In the forked child: a line on the program's stderr, if it has one (it may be closed,
    as the caller's was)."""
    with contextlib.suppress(OSError):
        os.write(2, text.encode(errors="surrogateescape"))


class Relay:
    def __init__(self, plan: Plan, message: m.InitCreateProcess, fds: m.CreateProcessFds) -> None:
        self.plan = plan
        self.message = message
        self.fds = fds
        self.control: Channel | None = Channel(socket.socket(fileno=fds.control), "control")
        self.console = socket.socket(fileno=fds.console) if fds.console is not None else None
        self.master: int | None = None
        self.child = 0
        self.status: int | None = None
        self.to_master = b""
        self.to_console = b""
        self.console_input = fds.console is not None  # False once the client sent EOF
        self.master_hung_up = False  # every holder of the slave closed it (reads give EIO)
        self.children = ChildWatch()
        self.interop: InteropServer | None = None

    def start(self) -> None:
        flags = self.message.flags
        if self.plan.interop:
            path = socket_path(os.getpid())
            self.interop = InteropServer(path, self.plan.user.uid, self.plan.user.gid)
            environment = {**self.plan.environment, "LXSS_INTEROP": path}
            shims = host_path_shims(self.plan.host_path, self.plan.host_mount)
            if shims is not None:  # last: a host command never shadows the distribution's
                environment["PATH"] = f"{environment.get('PATH', '')}:{shims}".lstrip(":")
            self.plan = dataclasses.replace(self.plan, environment=environment)
            # lxss-host may take the channel over from the client midway (as wslhost does).
            assert self.control is not None
            self.control.state.ignore_sequence_numbers()
        slave = None
        if flags & m.InitCreateProcess.CONSOLE_FLAGS:
            self.master, slave = os.openpty()
            set_window_size(self.master, self.message.rows or 24, self.message.columns or 80)
            tty_group = self.plan.user.gid
            os.fchown(slave, self.plan.user.uid, tty_group)
        streams: list[int | None] = []
        for flag, name in _STANDARD:
            fd = slave if flags & flag else getattr(self.fds, name)
            assert fd is not None or flags & (flag << 3)  # STD*_CONSOLE << 3 is STD*_CLOSED
            streams.append(fd)
        self.child = os.fork()  # OSError (EAGAIN at the pids limit) goes to the caller
        if self.child == 0:
            _exec_program(self.plan, streams, slave)
        # The program holds its streams now; ours would keep pipes open past its end.
        for fd in (slave, self.fds.stdin, self.fds.stdout, self.fds.stderr):
            if fd is not None:
                os.close(fd)
        if self.master is not None:
            os.set_blocking(self.master, False)
        if self.console is not None:
            self.console.setblocking(False)

    # Events ----------------------------------------------------------------------

    def reap(self) -> None:
        for pid, status in self.children.reap():
            if pid == self.child:
                self.status = status

    def on_control(self) -> None:
        assert self.control is not None
        try:
            expected = (m.InitWindowSizeChanged, m.InitSignal, m.InitExitStatus, m.InitClientGone)
            message, fds = self.control.receive(expected)
        except (ChannelClosed, ProtocolError, TimeoutError, OSError):
            self.client_gone()
            return
        for fd in fds:
            os.close(fd)
        if isinstance(message, m.InitWindowSizeChanged) and self.master is not None:
            with contextlib.suppress(OSError):
                set_window_size(self.master, message.rows, message.columns)
        elif isinstance(message, m.InitSignal) and 0 < message.signal < signal.NSIG:
            self.forward_signal(message.signal)
        elif isinstance(message, m.InitClientGone):
            self.close_console()  # the terminal hangs up, as when the client closes

    def on_interop(self) -> None:
        """A program connected to the interop socket: its connection goes to the host."""
        assert self.interop is not None
        connection = self.interop.accept()
        if connection is None:
            return
        with connection:
            if self.control is None:
                return  # no one serves interop any more: the caller sees the end
            message = m.InitInteropConnection(
                host_mount=self.plan.host_mount,
                distribution_name=self.message.distribution_name,
            )
            try:
                self.control.send(message, [connection.fileno()], timeout=ACK_TIMEOUT)
            except (ChannelClosed, TimeoutError, OSError):
                self.client_gone()

    def forward_signal(self, signum: int) -> None:
        group = self.child
        if self.master is not None:
            with contextlib.suppress(OSError):
                group = os.tcgetpgrp(self.master)  # the pty's foreground job
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signum)

    def client_gone(self) -> None:
        """The client closed its control channel: hang up the pty (SIGHUP), if any."""
        if self.control is not None:
            self.control.close()
            self.control = None
        self.close_console()

    def close_console(self) -> None:
        if self.master is not None:
            os.close(self.master)
            self.master = None
        if self.console is not None:
            self.console.close()
            self.console = None

    def pump(self, readable: set[int], writable: set[int]) -> None:
        """Move bytes between the pty master and the console socket, without blocking."""
        if self.master is None or self.console is None:
            return
        if self.master in readable and not self.to_console:
            try:
                self.to_console = os.read(self.master, CHUNK)
            except BlockingIOError:
                pass
            except OSError:
                # EIO: every holder of the slave has closed it. The master stays open (the
                # program may reopen its terminal, and drain() reads what is left once it
                # exits) but is not polled until HUNG_UP_RECHECK: it would poll readable
                # at once, forever, and spin this loop.
                self.to_console = b""
                self.master_hung_up = True
        if self.console.fileno() in readable and self.console_input and not self.to_master:
            try:
                data = self.console.recv(CHUNK)
                if not data:
                    self.console_input = False
                    self.console_input_closed()
                self.to_master = data
            except BlockingIOError:
                pass
            except OSError:
                self.client_gone()
                return
        self.flush(writable)

    def flush(self, writable: set[int]) -> None:
        if self.master is None or self.console is None:
            return
        if self.to_console and (not writable or self.console.fileno() in writable):
            try:
                sent = self.console.send(self.to_console)
                self.to_console = self.to_console[sent:]
            except BlockingIOError:
                pass
            except OSError:
                self.client_gone()
                return
        if self.to_master and (not writable or self.master in writable):
            try:
                written = os.write(self.master, self.to_master)
                self.to_master = self.to_master[written:]
            except BlockingIOError:
                pass
            except OSError:
                self.to_master = b""

    def console_input_closed(self) -> None:
        """The client will send no more input: pass an end-of-file to the terminal."""
        if self.master is not None:
            with contextlib.suppress(OSError):
                os.write(self.master, bytes([termios.tcgetattr(self.master)[6][termios.VEOF][0]]))

    # Loop ------------------------------------------------------------------------

    def run(self) -> int:
        while self.status is None:
            watch = [self.children.fileno()]
            if self.control is not None:
                watch.append(self.control.fileno())
            if self.interop is not None:
                watch.append(self.interop.fileno())
            write_watch = []
            timeout = None
            if self.master is not None and self.console is not None:
                if self.to_console:
                    write_watch.append(self.console.fileno())
                elif self.master_hung_up:
                    timeout = HUNG_UP_RECHECK
                else:
                    watch.append(self.master)
                if self.to_master:
                    write_watch.append(self.master)
                elif self.console_input:
                    watch.append(self.console.fileno())
            try:
                readable, writable = readiness.ready(watch, write_watch, timeout)
            except InterruptedError:
                continue
            if not (readable or writable) and self.master_hung_up:
                self.master_hung_up = False  # look again: has anyone reopened the terminal?
                continue
            if self.children.fileno() in readable:
                self.reap()
            if self.control is not None and self.control.fileno() in readable:
                self.on_control()
            if self.interop is not None and self.interop.fileno() in readable:
                self.on_interop()
            self.pump(set(readable), set(writable))
        return self.finish()

    def drain(self) -> None:
        """Pass on what the program wrote before it exited, then end the console."""
        while self.master is not None and self.console is not None:
            if not readiness.readable(self.master, DRAIN_IDLE):
                break
            try:
                data = os.read(self.master, CHUNK)
            except BlockingIOError:
                continue
            except OSError:
                break
            if not data:
                break
            self.console.setblocking(True)
            try:
                self.console.sendall(self.to_console + data)
            except OSError:
                break
            self.to_console = b""
        if self.console is not None:
            with contextlib.suppress(OSError):
                self.console.setblocking(True)
                if self.to_console:
                    self.console.sendall(self.to_console)
                if not self.message.shell_options & m.InitCreateProcess.KEEP_CONSOLE:
                    self.console.shutdown(socket.SHUT_WR)

    def finish(self) -> int:
        assert self.status is not None
        code = exit_code(self.status)
        self.drain()
        if self.control is not None:
            try:
                self.control.send(m.InitExitStatus(exit_code=code))
                # WSL's relay waits for the echo: the client has the status before we go.
                self.control.receive(m.InitExitStatus, timeout=ACK_TIMEOUT)
            except (ChannelClosed, ProtocolError, TimeoutError, OSError):
                pass
            if self.interop is None:
                self.control.close()
                self.control = None
        self.close_console()
        # As subreaper, wait for what the program left running (daemons) to end, serving
        # their interop meanwhile: the channel stays open until the last of them is gone.
        if self.interop is not None:
            self.serve_until_no_children()
            self.interop.close()
            if self.control is not None:
                self.control.close()
                self.control = None
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
        os.close(self.fds.lifetime)
        return 0

    def serve_until_no_children(self) -> None:
        while _has_children():
            watch = [self.children.fileno()]
            if self.control is not None:
                watch.append(self.control.fileno())
            if self.interop is not None:
                watch.append(self.interop.fileno())
            try:
                readable, _ = readiness.ready(watch, ())
            except InterruptedError:
                continue
            if self.children.fileno() in readable:
                self.children.reap()
            if self.control is not None and self.control.fileno() in readable:
                self.on_control()
            if self.interop is not None and self.interop.fileno() in readable:
                self.on_interop()


def _has_children() -> bool:
    """Whether any child (or adopted orphan) is still there, exited or not (not reaped)."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def become_relay() -> None:
    """What a relay is before it knows its program (a spare does this ahead of its request)."""
    set_title("lxss-relay")
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    sc.set_child_subreaper()


def main(
    plan: Plan,
    message: m.InitCreateProcess,
    fds: m.CreateProcessFds,
    answer: Callable[[OSError | None], None],
) -> int:
    """Fork the program and relay for it. *answer* is called once the program is forked
    (None), or with the reason it could not be."""
    relay = Relay(plan, message, fds)
    try:
        relay.start()
    except OSError as e:
        answer(e)
        return 1
    answer(None)
    return relay.run()
